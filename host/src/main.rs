//! The `wasmproc` command line.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    wasmproc::keep_large_buffers_in_heap();
    cli::main()
}
