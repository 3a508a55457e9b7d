//! The wire contract between the wasmproc host and its runners.
//!
//! The host and every runner process talk over a pair of pipes in
//! length-prefixed [postcard] frames. This crate holds the two frame enums
//! ([`HostToRunner`], [`RunnerToHost`]) and the pure codec that turns bytes
//! into frames ([`framing`]), and the rest of the contract ([`contract`]).
//! It has no async I/O and no wasmtime in it, so it can be fuzzed and
//! unit-tested on its own, and a test double of a runner needs nothing else.
//!
//! # Layout
//!
//! - [`protocol`]: the frame types, the launch spec, addresses and inbox items.
//! - [`framing`]: the length-prefixed codec, with a hard frame size limit
//!   checked before anything is allocated, and blocking frame helpers over
//!   `std::io`.
//! - [`contract`]: descriptors, exit codes and name rules.

pub mod contract;
pub mod framing;
pub mod protocol;

pub use contract::valid_name;
pub use framing::{
    FrameCodec, FrameError, MAX_FRAME_LEN, read_frame_blocking, write_frame_blocking,
};
pub use protocol::*;
