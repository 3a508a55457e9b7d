//! The one wasmtime [`Config`] both sides use.
//!
//! The host precompiles with it and every runner loads with it: a
//! precompiled artifact only loads into an engine whose settings match the
//! ones it was compiled with, so there is exactly one function that builds it.

use std::sync::OnceLock;

use wasmtime::{Config, Engine, OptLevel};

/// How much fuel a guest burns between two yields to the runner's own I/O
/// tasks (delivering its inbox, flushing its sends). About a millisecond of
/// guest code; a yield costs well under a microsecond.
pub const FUEL_YIELD_INTERVAL: u64 = 2_000_000;

/// Build the engine configuration for compiling and running guests.
pub fn config() -> Config {
    let mut config = Config::new();
    config
        .cranelift_opt_level(OptLevel::Speed)
        .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(64))
        // Fuel is how a guest that never calls the host still yields to the
        // runner's I/O tasks (see FUEL_YIELD_INTERVAL). CPU limits are not
        // counted in fuel: the kernel enforces them (RLIMIT_CPU). Fuel
        // changes the generated code, so it is part of the artifact's
        // compatibility hash.
        .consume_fuel(true);
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
