//! The `wasmproc` command line.

use std::process::ExitCode;

fn main() -> ExitCode {
    wasmproc::cli::main()
}
