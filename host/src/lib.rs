//! Node's `child_process` for WebAssembly, with two walls around every child.
//!
//! Each guest is a WASI program running in its own OS process (a *runner*).
//! The host talks to each runner in postcard frames over a pair of pipes and
//! relays every message between guests: guests never talk to each other
//! directly, as Node's children only talk through their parent.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use wasmproc::{Command, InboxItem};
//!
//! let echo = Command::new("echo.wasm").name("echo").fork().await?;
//! echo.send(b"ping".to_vec())?;
//! if let Some(InboxItem::Message { payload, .. }) = echo.recv().await {
//!     assert_eq!(payload, b"ping");
//! }
//! echo.kill();
//! println!("{}", echo.wait().await); // killed by the host (SIGKILL)
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! The public surface is [`Command`], [`Child`], [`Output`], [`Stdio`],
//! [`exec`] and [`Pipeline`], [`ExitStatus`], [`Host`], [`app`],
//! [`cluster`] (joining an app's cluster), [`sandbox::explain`],
//! [`scaffold`] (`wasmproc new`) and [`on_compile`]; every other module is
//! the crate's own.
//!
//! - `command`: [`Command`], the builder; `build()` makes the spec the
//!   host consumes.
//! - `child`: [`Child`], the handle; why the host kills a runner; reading
//!   a guest's output.
//! - `host`: [`Host`]: fork, `fork_all`, reserve and start; `host/pool`
//!   (runners started ahead), `host/spawner` (the runner binary, the
//!   spawner thread), `host/session` (one runner's writer, reader and
//!   waiter), `host/delivered` (what was delivered and not yet taken),
//!   `host/spec` (the built command).
//! - `relay`: routing by id, name and group, undeliverable notices,
//!   monitors; `relay/calls` (calls in flight: ids, deadlines, the watched
//!   callee, late replies), `relay/policy` (the allow-list and its refusal
//!   reports), `relay/remote` (guests of other hosts, as proxies),
//!   `relay/mailbox` (the bounded per-guest queue).
//! - `connection`: frames over control pipes: the reader, the batch and
//!   the writer, the one place a frame's head and payload are laid out.
//! - `os`: every `libc` call of the host: `os/process` (a runner's pid,
//!   `SIGCHLD`, the reaper, [`Stdio`]), `os/report` (the sandbox report
//!   page), `os/launcher` (`posix_spawn` from a thread with a
//!   descriptor table of its own), `os/pipe`, `os/alloc`, `os/limits` (how
//!   many guests the open-files limit allows), `os/pty` (pseudo-terminals),
//!   `os/syscalls` (every system call's name), `os/procfs` (a runner's
//!   RSS and CPU time), `os/user` (the uid, a daemon's session).
//! - `runner`: what runs in each guest's process: handshake, hardening,
//!   `runner/guest` (load, run, limit, report), `ipc`, `link`, `drive`,
//!   `ticker` (the thread that covers a computing guest's I/O, parked while
//!   it waits), `probe`.
//! - [`sandbox`]: the two walls: `sandbox/wasi` (the first: capabilities as
//!   a WASI context), `sandbox/os` (the second: the runner's process, from
//!   one table of system calls), `sandbox/bpf` (the seccomp program that
//!   table generates).
//! - `engine`: the one wasmtime configuration for compiling and running.
//! - `cache`: compile once, map many: precompiled artifacts by content hash.
//! - `exec`: command lines and pipelines, never through a shell.
//! - `terminal`: the pty proxy: a guest on the user's terminal gets one
//!   of its own (`Command::status`).
//! - `status`: how a guest ended ([`ExitStatus`]).
//! - [`app`]: apps of cooperating guests from a manifest: supervision,
//!   restarts, shutdown; `app/supervise` (one instance's supervisor and
//!   the control verbs), `app/live` (a running app as the verbs see it),
//!   `app/nodes` (the app as a node of a cluster),
//!   [`app::control`] (the control socket), [`app::metrics`] (Prometheus).
//! - [`cluster`]: the cluster bridge: hosts that form one app over NATS;
//!   `cluster/wire` (subjects and envelopes), `cluster/link` (a remote
//!   guest's proxy: envelopes out, acks in), `cluster/inbox` (envelopes
//!   from other hosts), `cluster/owed` (acks waiting for a letter going
//!   back to carry them), `cluster/settle` (take reports: what the other
//!   hosts' guests took, and what is unsettled), `cluster/moving` (a
//!   guest moving to another node: hold, switch, release),
//!   `cluster/peers` (the heartbeat rule), `cluster/tasks` (beats, exits,
//!   forwarded verbs, the bridge's clock).
//! - [`manifest`] (crate `wasmproc-manifest`): `app.toml`, checked.
//! - crate `wasmproc-protocol`: the frame types, the pure codec and the
//!   host↔runner contract (descriptors, exit codes, name rules), shared
//!   with the runner.
//!
//! The `wasmproc` binary's command line (`src/cli.rs`) is not part of the
//! library.
//!
//! # Theory of operation: a message from guest A to guest B
//!
//! 1. A calls `ipc::send(name("b"), bytes)`. A's runner encodes a
//!    `Send { to, payload }` frame into its outgoing buffer and returns at
//!    once; the buffer is written to A's control pipe when A blocks or yields,
//!    so a burst of sends leaves in one `write`.
//! 2. In the host, A's reader task decodes the frame and asks the relay
//!    to route it: B is found by name, the size is checked against B's limit,
//!    and the message (tagged with A's id and name — a runner cannot forge
//!    them) is queued in B's bounded mailbox. If that fails, A gets an
//!    `undeliverable` item with the reason instead.
//! 3. B's writer task takes everything in B's mailbox, records it as
//!    delivered, and writes it to B's control pipe as `Deliver` frames,
//!    again many per `write`.
//! 4. B's runner reads the frames into B's inbox; B's `recv` returns the
//!    message, and B's runner tells the host how many items B has taken
//!    (carried on B's next `Send`, or a `Taken` frame when B waits). If
//!    B's runner ends, whatever it had
//!    not taken goes back to its senders as `recipient exited`: every
//!    message is taken or returned.

pub mod app;
mod cache;
mod child;
pub mod cluster;
mod command;
mod connection;
mod engine;
mod exec;
mod host;
mod os;
mod relay;
mod runner;
pub mod sandbox;
pub mod scaffold;
mod status;
mod terminal;
#[doc(hidden)]
pub mod testing;

pub use wasmproc_manifest as manifest;

pub use cache::{CompileError, CompileProgress, on_compile};
pub use child::Child;
pub use command::{Command, Output};
pub use exec::{ExecError, ExecOutput, Pipeline, exec};
pub use host::{ForkAllError, Host, RUNNER_ENV, RUNNER_NAME, SpawnError, SwapError, Swapped};
pub use os::{ChildStderr, ChildStdin, ChildStdout, Stdio, keep_large_buffers_in_heap};
pub use relay::{RegisterError, SendError};
pub use status::{ExitStatus, Limit, exit_code};
pub use wasmproc_protocol::{
    Address, CallError, GuestId, InboxItem, ReplyError, RequestId, UndeliverableReason,
};

/// Compile `module` into the artifact cache (or find it there) and return
/// the artifact's path: `wasmproc compile`, to warm the cache ahead.
///
/// # Errors
///
/// As a fork of the module would fail to compile.
pub async fn precompile(module: &std::path::Path) -> Result<std::path::PathBuf, CompileError> {
    Ok(cache::Cache::global().artifact(module).await?.path)
}

/// The folder of the artifact cache (`$WASMPROC_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/wasmproc`, else `~/.cache/wasmproc`).
pub fn cache_dir() -> std::path::PathBuf {
    cache::Cache::global().dir().to_owned()
}

/// The `wasmproc-runner` binary's entry point: run the guest the host
/// sends on the control pipes. Never returns.
#[doc(hidden)]
pub fn runner_main() -> ! {
    runner::main()
}
