//! The host's OS layer: every `libc` call the host makes for its runners is
//! in this folder (the runner's own hardening is in [`crate::sandbox::os`]).
//!
//! - [`process`]: a runner's process: SIGCHLD, `waitid`, the reaper;
//!   [`Stdio`] and the host's ends of piped stdio.
//! - [`launcher`]: `posix_spawn`, from a thread with a descriptor table of
//!   its own, so a spawn costs the same with 10 guests or 10,000.
//! - [`pipe`]: close-on-exec pipes and their buffer size, and the
//!   socketpair a guest gets instead where pipes would not fit.
//! - [`report`]: a runner's shared memory, and in it the page where its
//!   sandbox says what it refused.
//! - [`ring`]: the payload rings in that memory, for large payloads.
//! - [`alloc`]: the allocator settings for large messages.
//! - [`limits`]: how many guests the open-files limit leaves room for.
//! - [`pty`]: a terminal of its own for a guest on a terminal.
//! - [`syscalls`]: every system call's name, to say which one a sandbox
//!   refused.
//! - [`procfs`]: a runner's memory and CPU time, from `/proc`.
//! - [`user`]: the effective user id, and a session of its own for a
//!   daemon.

pub(crate) mod alloc;
pub(crate) mod launcher;
pub(crate) mod limits;
pub(crate) mod pipe;
pub(crate) mod process;
pub(crate) mod procfs;
pub(crate) mod pty;
pub(crate) mod report;
pub(crate) mod ring;
pub(crate) mod syscalls;
pub mod user;

pub use alloc::keep_large_buffers_in_heap;
pub(crate) use alloc::{one_heap_for_all_threads, release_free_heap};
pub use process::{ChildStderr, ChildStdin, ChildStdout, Stdio};
