//! The one wasmtime [`Config`] both sides use.
//!
//! The host precompiles with it and every runner loads with it: a
//! precompiled artifact only loads into an engine whose settings match the
//! ones it was compiled with, so there is exactly one function that builds it.

use std::sync::OnceLock;

use wasmtime::{Config, Engine, OptLevel};

/// Build the engine configuration for compiling and running guests.
pub fn config() -> Config {
    let mut config = Config::new();
    config
        .cranelift_opt_level(OptLevel::Speed)
        // No fuel and no epoch checks: guest code is exactly what `wasmtime
        // run` runs. A computing guest never yields; the runner's ticker
        // thread covers its I/O meanwhile (`runner::ticker`), CPU limits are
        // the kernel's (RLIMIT_CPU), and a guest that must stop is killed.
        .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(64));
    config
}

/// The runner's configuration: [`config`] with compiling turned off.
/// Runners only load what the host compiled; not setting up Cranelift's
/// compiler saves part of every runner's start, and an engine that refuses
/// to compile cannot be talked into it. (Cranelift is still linked into
/// the runner binary, which shares this crate with the host.)
pub fn runtime_config() -> Config {
    let mut config = config();
    config.enable_compiler(false);
    config
}

/// The process-wide engine, built from [`config`] on first use.
///
/// # Errors
///
/// When wasmtime rejects the configuration for this CPU.
pub fn engine() -> anyhow::Result<&'static Engine> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    if let Some(engine) = ENGINE.get() {
        return Ok(engine);
    }
    let engine = Engine::new(&config())?;
    Ok(ENGINE.get_or_init(|| engine))
}
