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
//! - [`protocol`] (crate `wasmproc-protocol`): the frame types and the pure
//!   length-prefixed codec, shared with the runner.
//! - [`connection`]: the only code that reads and writes pipes; batches frames.
//! - [`engine`]: the one wasmtime configuration for compiling and running.
//! - [`cache`]: compile once, map many: precompiled artifacts by content hash.
//! - [`runner`]: what runs in each guest's process: load, wire WASI and
//!   `ipc`, run, report.
//! - [`sandbox`]: a guest's capabilities as a WASI context.
//! - [`mailbox`]: the bounded per-guest queue.
//! - [`relay`]: routing by id, name and group; undeliverable notices; monitors.
//! - [`supervisor`]: starting runners and watching them; [`Host`].
//! - [`process`]: a runner's OS process: `posix_spawn`, pidfd, `waitid`.
//! - [`command`]: [`Command`] and [`Child`], the public face.
//! - [`exec`]: command lines and pipelines, never through a shell.
//! - [`status`]: how a guest ended ([`ExitStatus`]).
//! - [`app`]: apps of cooperating guests from a manifest: supervision,
//!   restarts, shutdown.
//! - [`manifest`] (crate `wasmproc-manifest`): `app.toml`, checked.
//! - [`cli`]: the `wasmproc` command line.
//!
//! # Theory of operation: a message from guest A to guest B
//!
//! 1. A calls `ipc::send(name("b"), bytes)`. A's runner encodes a
//!    `Send { to, payload }` frame into its outgoing buffer and returns at
//!    once; the buffer is written to A's control pipe when A blocks or yields,
//!    so a burst of sends leaves in one `write`.
//! 2. In the host, A's reader task decodes the frame and asks the [`relay`]
//!    to route it: B is found by name, the size is checked against B's limit,
//!    and the message (tagged with A's id and name — a runner cannot forge
//!    them) is queued in B's bounded mailbox. If that fails, A gets an
//!    `undeliverable` item with the reason instead.
//! 3. B's writer task takes everything in B's mailbox and writes it to B's
//!    control pipe as `Deliver` frames, again many per `write`.
//! 4. B's runner reads the frames into B's inbox; B's `recv` returns the
//!    message.

pub mod app;
pub mod cache;
pub mod cli;
pub mod command;
pub mod connection;
pub mod engine;
pub mod exec;
pub mod mailbox;
pub mod process;
pub mod relay;
pub mod runner;
pub mod sandbox;
pub mod status;
pub mod supervisor;

pub use wasmproc_manifest as manifest;
pub use wasmproc_protocol as protocol;

pub use command::{Child, Command, Output, Stdio};
pub use exec::{ExecError, ExecOutput, Pipeline, exec};
pub use process::{ChildStderr, ChildStdin, ChildStdout};
pub use protocol::{Address, GuestId, InboxItem, UndeliverableReason};
pub use relay::SendError;
pub use status::{ExitStatus, Limit};
pub use supervisor::{ForkAllError, Host, SpawnError};
