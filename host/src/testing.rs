//! Hooks for this repository's own tests, benchmarks and examples: not part
//! of the library's API, and hidden from its documentation.

use std::path::PathBuf;

use crate::{Command, Host};

/// `(frames, writes)`: frames `host` has written to runners and the `write`
/// calls that carried them. Fewer writes than frames means batching works.
pub fn write_stats(host: &Host) -> (u64, u64) {
    host.relay().stats().snapshot()
}

/// The pids of `host`'s pooled runners waiting for a launch.
pub fn pooled_runners(host: &Host) -> Vec<u32> {
    host.pooled_pids()
}

/// How many guests `host` has registered (live or reserved).
pub fn live_guests(host: &Host) -> usize {
    host.relay().len()
}

/// Whether a live guest of `host` is called `name`.
pub fn is_registered(host: &Host, name: &str) -> bool {
    host.relay().lookup(name).is_some()
}

/// Items waiting in the host's mailbox of the live guest called `name`.
pub fn mailbox_len(host: &Host, name: &str) -> Option<usize> {
    host.relay().lookup(name).map(|entry| entry.mailbox.len())
}

/// Items the host has delivered to the runner of the live guest called
/// `name` and not yet heard taken.
pub fn outstanding(host: &Host, name: &str) -> Option<u64> {
    host.relay().lookup(name).map(|entry| {
        entry
            .counters
            .outstanding
            .load(std::sync::atomic::Ordering::Relaxed)
    })
}

/// Turn the per-guest message counters (`top`, metrics) on or off, for a
/// benchmark that weighs them.
pub fn set_counting(on: bool) {
    crate::relay::COUNTING.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Calls of `host` waiting for their answer: none once every call has
/// been answered, timed out or failed.
pub fn calls_open(host: &Host) -> usize {
    host.relay().calls_open()
}

/// Test mode: the runner hardens itself, then tries forbidden operations
/// natively and prints each result on stdout instead of running the guest.
/// For checking the second wall from outside.
pub fn probe_sandbox(command: &mut Command) -> &mut Command {
    command.probe_sandbox(wasmproc_protocol::Walls::ALL)
}

/// The probe with only some walls of the second wall raised (capabilities,
/// no-new-privs and rlimits always are), to show what each holds alone.
pub fn probe_sandbox_with(command: &mut Command, landlock: bool, seccomp: bool) -> &mut Command {
    command.probe_sandbox(wasmproc_protocol::Walls { landlock, seccomp })
}

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The guest `name` written in `language` (`python` or `js`) as `make
/// guests` builds it: `guests/target/<language>/<name>.wasm`.
///
/// # Errors
///
/// When it is not built, with the command that builds it.
pub fn guest_in(language: &str, name: &str) -> anyhow::Result<PathBuf> {
    let path = repo_root()
        .join("guests/target")
        .join(language)
        .join(format!("{name}.wasm"));
    anyhow::ensure!(
        path.is_file(),
        "the {language} guest `{name}` is not built ({} is missing): run `make guests`",
        path.display()
    );
    Ok(path)
}

/// The guest `name` as `make guests` builds it (a wasm32-wasip2 component).
///
/// # Errors
///
/// When it is not built, with the command that builds it.
pub fn guest(name: &str) -> anyhow::Result<PathBuf> {
    let path = repo_root()
        .join("guests/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    anyhow::ensure!(
        path.is_file(),
        "guest `{name}` is not built ({} is missing): run `make guests`",
        path.display()
    );
    Ok(path)
}
