//! The `wasmproc` command line.

use std::process::ExitCode;

fn main() -> ExitCode {
    wasmproc::connection::keep_large_buffers_in_heap();
    wasmproc::cli::main()
}
