//! The wire contract between the wasmproc host and its runners.
//!
//! The host and every runner process talk over a pair of pipes in
//! length-prefixed [postcard] frames. This crate holds the two frame enums
//! ([`HostToRunner`], [`RunnerToHost`]) and the pure codec that turns bytes
//! into frames ([`framing`]). It has no I/O and no wasmtime in it, so it can
//! be fuzzed and unit-tested on its own.
//!
//! # Layout
//!
//! - [`protocol`]: the frame types, the launch spec, addresses and inbox items.
//! - [`framing`]: the length-prefixed codec, with a hard frame size limit
//!   checked before anything is allocated.

pub mod framing;
pub mod protocol;

pub use framing::{FrameCodec, FrameError, MAX_FRAME_LEN};
pub use protocol::*;
