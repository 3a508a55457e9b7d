//! The runner: one guest per process, started by the wasmproc host.

fn main() {
    wasmproc::runner_main()
}
