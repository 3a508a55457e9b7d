//! The one wasmtime [`Config`] both sides use.
//!
//! The host precompiles with it and every runner loads with it: a
//! precompiled artifact only loads into an engine whose settings match the
//! ones it was compiled with, so there is exactly one function that builds it.

use wasmtime::Config;

/// Build the engine configuration for compiling and running guests.
pub fn config() -> Config {
    let mut config = Config::new();
    #[cfg(feature = "compiler")]
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    config
        // No fuel and no epoch checks: guest code is exactly what `wasmtime
        // run` runs. A computing guest never yields; the runner's ticker
        // thread covers its I/O meanwhile (`runner::ticker`), CPU limits are
        // the kernel's (RLIMIT_CPU), and a guest that must stop is killed.
        .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(64));
    config
}

/// The runner's configuration: [`config`] with compiling turned off.
/// Runners only load what the host compiled, and an engine that cannot
/// compile cannot be talked into it. The `wasmproc-runner` binary is built
/// without the `compiler` feature, so Cranelift is not even linked into it;
/// a build of this crate with the feature (the host's) turns it off here.
pub fn runtime_config() -> Config {
    #[cfg_attr(not(feature = "compiler"), expect(unused_mut))]
    let mut config = config();
    #[cfg(feature = "compiler")]
    config.enable_compiler(false);
    config
}

/// The process-wide engine, built from [`config`] on first use.
///
/// # Errors
///
/// When wasmtime rejects the configuration for this CPU.
#[cfg(feature = "compiler")]
pub fn engine() -> anyhow::Result<&'static wasmtime::Engine> {
    static ENGINE: std::sync::OnceLock<wasmtime::Engine> = std::sync::OnceLock::new();
    if let Some(engine) = ENGINE.get() {
        return Ok(engine);
    }
    let engine = wasmtime::Engine::new(&config())?;
    Ok(ENGINE.get_or_init(|| engine))
}
