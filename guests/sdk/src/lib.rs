//! Write [wasmproc] guests in Rust.
//!
//! A guest is an ordinary WASI command (`fn main`) built for
//! `wasm32-wasip2`. This crate adds messaging: [`send`] to the parent or
//! another guest, and [`recv`] from the inbox, with typed helpers
//! ([`send_value`], [`recv_value`]) that encode values with postcard.
//!
//! ```no_run
//! use wasmproc_guest::{self as ipc, Address};
//!
//! fn main() {
//!     // Answer every message with the same bytes, until asked to shut down.
//!     for item in ipc::inbox() {
//!         match item {
//!             ipc::InboxItem::Message(msg) => {
//!                 let _ = ipc::send(msg.reply_to(), &msg.payload);
//!             }
//!             ipc::InboxItem::Shutdown => break,
//!             _ => {}
//!         }
//!     }
//!     # let _ = Address::Parent;
//! }
//! ```
//!
//! [wasmproc]: https://github.com/wasmproc/wasmproc

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

mod bindings {
    wit_bindgen::generate!({
        inline: "
            package wasmproc:sdk;
            world sdk {
                import wasmproc:guest/ipc@0.1.0;
            }
        ",
        path: "../../wit",
        world: "wasmproc:sdk/sdk",
        with: {
            "wasi:io/poll@0.2.12": wasip2::io::poll,
            "wasmproc:guest/ipc@0.1.0": generate,
        },
    });
}

use bindings::wasmproc::guest::ipc as raw;

pub use raw::{
    Address, Down, GuestId, InboxItem, Message, SendError, Undeliverable, UndeliverableReason,
};
pub use wasip2::io::poll::Pollable;

/// The parent's id: messages from the program that started this guest carry it.
pub const PARENT_ID: GuestId = 0;

impl From<&str> for Address {
    /// A name. Use [`Address::Group`] or [`Address::Broadcast`] for groups.
    fn from(name: &str) -> Self {
        Address::Name(name.to_owned())
    }
}

impl From<String> for Address {
    fn from(name: String) -> Self {
        Address::Name(name)
    }
}

impl From<GuestId> for Address {
    /// An id; id 0 is the parent.
    fn from(id: GuestId) -> Self {
        if id == PARENT_ID {
            Address::Parent
        } else {
            Address::Id(id)
        }
    }
}

impl Address {
    /// Read an address the way a command line gives it: a number is an id,
    /// `parent` is the parent, `group:NAME` a group, `all:NAME` a broadcast,
    /// anything else a name.
    pub fn parse(text: &str) -> Address {
        if text == "parent" {
            Address::Parent
        } else if let Ok(id) = text.parse::<GuestId>() {
            Address::from(id)
        } else if let Some(group) = text.strip_prefix("group:") {
            Address::Group(group.to_owned())
        } else if let Some(group) = text.strip_prefix("all:") {
            Address::Broadcast(group.to_owned())
        } else {
            Address::Name(text.to_owned())
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Parent => f.write_str("parent"),
            Address::Id(id) => write!(f, "#{id}"),
            Address::Name(name) => f.write_str(name),
            Address::Group(group) => write!(f, "group:{group}"),
            Address::Broadcast(group) => write!(f, "all:{group}"),
        }
    }
}

impl Message {
    /// The address that reaches this message's sender.
    pub fn reply_to(&self) -> Address {
        Address::from(self.from_id)
    }

    /// Decode the payload as a postcard-encoded `T`.
    ///
    /// # Errors
    ///
    /// When the payload is not a valid encoding of `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, postcard::Error> {
        postcard::from_bytes(&self.payload)
    }
}

impl fmt::Display for UndeliverableReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UndeliverableReason::UnknownRecipient => "unknown recipient",
            UndeliverableReason::RecipientExited => "recipient exited",
            UndeliverableReason::NotAllowed => "not allowed",
            UndeliverableReason::MailboxFull => "mailbox full",
            UndeliverableReason::TooLarge => "too large",
        })
    }
}

/// Queue `payload` for `to` and return at once.
///
/// # Errors
///
/// Only for what this guest can know at once: the payload is too large, or
/// the host is gone. A message the host cannot deliver comes back later as
/// [`InboxItem::Undeliverable`].
pub fn send(to: impl Into<Address>, payload: &[u8]) -> Result<(), SendError> {
    // Refuse here what the host would refuse, without copying it out.
    let limit = max_message_size();
    if payload.len() as u64 > limit {
        return Err(SendError::TooLarge(limit));
    }
    raw::send(&to.into(), payload)
}

/// The largest payload [`send`] accepts from this guest, in bytes.
pub fn max_message_size() -> u64 {
    static LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(raw::max_message_size)
}

/// Encode `value` with postcard and [`send`] it.
///
/// # Errors
///
/// As [`send`].
pub fn send_value<T: Serialize + ?Sized>(
    to: impl Into<Address>,
    value: &T,
) -> Result<(), SendError> {
    // Encoding our own serde types into a Vec cannot fail.
    let bytes = postcard::to_allocvec(value).unwrap_or_default();
    send(to, &bytes)
}

/// Wait for the next inbox item.
pub fn recv() -> InboxItem {
    raw::recv()
}

/// The next inbox item, if one is waiting.
pub fn try_recv() -> Option<InboxItem> {
    raw::try_recv()
}

/// Wait at most `timeout` for the next inbox item.
pub fn recv_timeout(timeout: Duration) -> Option<InboxItem> {
    raw::recv_timeout(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX))
}

/// Why [`recv_value`] returned no value.
#[derive(Debug)]
pub enum RecvError {
    /// The next inbox item was not a message.
    NotAMessage(InboxItem),
    /// The message's payload did not decode as the expected type.
    Decode {
        from: Address,
        error: postcard::Error,
    },
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::NotAMessage(item) => write!(f, "expected a message, got {item:?}"),
            RecvError::Decode { from, error } => {
                write!(f, "message from {from} did not decode: {error}")
            }
        }
    }
}

impl std::error::Error for RecvError {}

/// Wait for the next inbox item and decode it as a `T`, with its sender.
///
/// # Errors
///
/// [`RecvError::NotAMessage`] when the next item is not a message (a
/// shutdown request, an undeliverable notice, ...), [`RecvError::Decode`]
/// when the payload is not a `T`.
pub fn recv_value<T: DeserializeOwned>() -> Result<(Address, T), RecvError> {
    match recv() {
        InboxItem::Message(msg) => {
            let from = msg.reply_to();
            match msg.decode() {
                Ok(value) => Ok((from, value)),
                Err(error) => Err(RecvError::Decode { from, error }),
            }
        }
        other => Err(RecvError::NotAMessage(other)),
    }
}

/// The inbox as a blocking iterator: every item, forever.
pub fn inbox() -> Inbox {
    Inbox { _private: () }
}

/// A blocking iterator over inbox items; see [`inbox`].
#[derive(Debug)]
pub struct Inbox {
    _private: (),
}

impl Iterator for Inbox {
    type Item = InboxItem;

    fn next(&mut self) -> Option<InboxItem> {
        Some(recv())
    }
}

/// A pollable that is ready while the inbox holds an item; wait on it with
/// `wasip2::io::poll::poll` together with timers and streams.
pub fn subscribe() -> Pollable {
    raw::subscribe()
}

/// Ask for a [`InboxItem::Down`] when the guest called `name` ends.
pub fn monitor(name: &str) {
    raw::monitor(name)
}

/// This guest's id.
pub fn self_id() -> GuestId {
    raw::self_id()
}

/// This guest's name, if it has one.
pub fn self_name() -> Option<String> {
    raw::self_name()
}
