//! Write [wasmproc] guests in Rust.
//!
//! A guest is an ordinary WASI command (`fn main`) built for
//! `wasm32-wasip2`. This crate adds messaging: [`send`] to the parent or
//! another guest, and [`recv`] from the inbox, with typed helpers
//! ([`send_value`], [`recv_value`]) that encode values with postcard; and
//! calls: [`call`] waits for the callee's reply (at most a timeout, and no
//! longer than the callee lives), a request arrives as a [`Message`] to
//! answer with [`Message::reply`].
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
//! Calls, typed:
//!
//! ```no_run
//! use std::time::Duration;
//! use wasmproc_guest::{self as ipc, Address};
//!
//! fn main() {
//!     // Ask the guest called `kv` for a key; fail after a second, or at
//!     // once if `kv` ends meanwhile.
//!     let value: Option<String> =
//!         ipc::call_value("kv", &("get", "colour"), Duration::from_secs(1)).unwrap();
//!     # let _ = (value, Address::Parent);
//! }
//! ```
//!
//! And the other side, answering each request once:
//!
//! ```no_run
//! use wasmproc_guest as ipc;
//!
//! fn main() {
//!     for item in ipc::inbox() {
//!         if let ipc::InboxItem::Message(msg) = item {
//!             if let Ok(request) = msg.into_request::<u64>() {
//!                 let doubled = request.value * 2;
//!                 let _ = request.reply_value(&doubled);
//!             }
//!         }
//!     }
//! }
//! ```
//!
//! Between Rust guests, values travel as postcard (`*_value`). Guests in
//! other languages (the Python and JavaScript SDKs) speak JSON, as do the
//! `*_json` helpers here ([`send_json`], [`call_json`], [`Message::json`],
//! [`Message::reply_json`], [`CallSet::start_json`], [`decode_json`]): the
//! one encoding every wasmproc SDK reads and writes.
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
                import wasmproc:guest/ipc@0.3.0;
            }
        ",
        path: "../../wit",
        world: "wasmproc:sdk/sdk",
        with: {
            "wasi:io/poll@0.2.12": wasip2::io::poll,
            "wasmproc:guest/ipc@0.3.0": generate,
        },
    });
}

use bindings::wasmproc::guest0_3_0::ipc as raw;

pub use raw::{
    Address, CallError, Down, GuestId, InboxItem, Message, PendingCall, ReplyError, RequestId,
    SendError, Undeliverable, UndeliverableReason,
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

    /// Decode the payload as JSON (what the Python and JavaScript SDKs send).
    ///
    /// # Errors
    ///
    /// When the payload is not JSON for a `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }
}

impl Message {
    /// Answer this message's request (see [`reply`]).
    ///
    /// # Errors
    ///
    /// As [`reply`]; [`ReplyError::UnknownRequest`] for a message that is
    /// not a call.
    pub fn reply(&self, payload: &[u8]) -> Result<(), ReplyError> {
        match self.request {
            Some(request) => reply(request, payload),
            None => Err(ReplyError::UnknownRequest),
        }
    }

    /// Answer this message's request with a value encoded with postcard.
    ///
    /// # Errors
    ///
    /// As [`Message::reply`].
    pub fn reply_value<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), ReplyError> {
        self.reply(&encode(value))
    }

    /// Answer this message's request with a value encoded as JSON.
    ///
    /// # Errors
    ///
    /// As [`Message::reply`].
    pub fn reply_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), ReplyError> {
        self.reply(&encode_json(value))
    }

    /// This message as a call whose payload is a postcard-encoded `T`.
    ///
    /// # Errors
    ///
    /// [`RequestError::NotARequest`] (with the message) for a plain
    /// message, [`RequestError::Decode`] when the payload is not a `T`.
    pub fn into_request<T: DeserializeOwned>(self) -> Result<Request<T>, RequestError> {
        let Some(id) = self.request else {
            return Err(RequestError::NotARequest(self));
        };
        match postcard::from_bytes(&self.payload) {
            Ok(value) => Ok(Request {
                from: self.reply_to(),
                value,
                id,
            }),
            Err(error) => Err(RequestError::Decode { id, error }),
        }
    }
}

/// A call made to this guest, its payload decoded: answered once, by
/// [`Request::reply_value`] (which takes it, so a second answer does not
/// compile).
#[derive(Debug)]
pub struct Request<T> {
    /// Who called.
    pub from: Address,
    /// What it asked.
    pub value: T,
    id: RequestId,
}

impl<T> Request<T> {
    /// The host's id of this request.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// Answer with a value encoded with postcard.
    ///
    /// # Errors
    ///
    /// As [`reply`]: most often [`ReplyError::Expired`], when the caller
    /// stopped waiting.
    pub fn reply_value<R: Serialize + ?Sized>(self, value: &R) -> Result<(), ReplyError> {
        reply(self.id, &encode(value))
    }

    /// Answer with bytes.
    ///
    /// # Errors
    ///
    /// As [`reply`].
    pub fn reply(self, payload: &[u8]) -> Result<(), ReplyError> {
        reply(self.id, payload)
    }
}

/// Why [`Message::into_request`] gave no request.
#[derive(Debug)]
pub enum RequestError {
    /// The message is not a call.
    NotARequest(Message),
    /// The call's payload did not decode (the request `id`, to answer it
    /// with an error of the guest's own).
    Decode {
        id: RequestId,
        error: postcard::Error,
    },
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::NotARequest(msg) => {
                write!(f, "the message from {} is not a call", msg.reply_to())
            }
            RequestError::Decode { id, error } => {
                write!(f, "request {id} did not decode: {error}")
            }
        }
    }
}

impl std::error::Error for RequestError {}

// wit-bindgen gives `CallError` and `ReplyError` `Display` (their debug
// form) and `Error`; `describe` says it for people.

impl CallError {
    /// Why the call failed, in one line.
    pub fn describe(&self) -> String {
        match self {
            CallError::Timeout => "no reply before the deadline".to_owned(),
            CallError::UnknownRecipient => "unknown recipient".to_owned(),
            CallError::CalleeExited(reason) => format!("the callee exited: {reason}"),
            CallError::NotAllowed => "not allowed".to_owned(),
            CallError::MailboxFull => "mailbox full".to_owned(),
            CallError::TooLarge => "too large".to_owned(),
            CallError::HostGone => "the host is gone".to_owned(),
            CallError::InvalidTimeout => "a call needs a timeout above zero".to_owned(),
            CallError::TooManyCalls => "too many calls in flight".to_owned(),
        }
    }
}

impl ReplyError {
    /// Why the reply was not sent, in one line.
    pub fn describe(&self) -> &'static str {
        match self {
            ReplyError::Expired => "the call has expired",
            ReplyError::AlreadyReplied => "the request was answered already",
            ReplyError::UnknownRequest => "no such request was delivered here",
        }
    }
}

/// A timeout in whole milliseconds, rounded up (zero stays zero: the host
/// refuses it).
fn millis(timeout: Duration) -> u64 {
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// Decode bytes (a reply, a payload) as a postcard-encoded `T`.
///
/// # Errors
///
/// When the bytes are not a valid encoding of `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// Postcard bytes of a value (our own serde types into a Vec cannot fail).
fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).unwrap_or_default()
}

/// Decode bytes (a reply, a payload) as JSON, the encoding shared with
/// guests in other languages.
///
/// # Errors
///
/// When the bytes are not JSON for a `T`.
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// JSON bytes of a value (serde types whose maps have string keys, as
/// JSON needs; anything else encodes as `null`).
fn encode_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec())
}

/// Call `to` and wait for its reply, at most `timeout` (the host caps it
/// at this guest's maximum, 60 s by default). A group's call goes to one
/// member, round-robin. While the call waits the callee is watched: if it
/// ends, the call fails at once with [`CallError::CalleeExited`].
///
/// # Errors
///
/// Why no reply came, one [`CallError`].
pub fn call(
    to: impl Into<Address>,
    payload: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, CallError> {
    raw::call(&to.into(), payload, millis(timeout))
}

/// Why [`call_value`] returned no value.
#[derive(Debug)]
pub enum CallValueError {
    /// The call failed.
    Call(CallError),
    /// The reply did not decode as the expected type.
    Decode(postcard::Error),
    /// The reply was not JSON for the expected type.
    Json(serde_json::Error),
}

impl fmt::Display for CallValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallValueError::Call(error) => write!(f, "the call failed: {}", error.describe()),
            CallValueError::Decode(error) => write!(f, "the reply did not decode: {error}"),
            CallValueError::Json(error) => write!(f, "the reply is not the expected JSON: {error}"),
        }
    }
}

impl std::error::Error for CallValueError {}

impl From<CallError> for CallValueError {
    fn from(error: CallError) -> Self {
        CallValueError::Call(error)
    }
}

/// [`call`] with a request and reply encoded with postcard.
///
/// # Errors
///
/// As [`call`], or [`CallValueError::Decode`] when the reply is not a `Resp`.
pub fn call_value<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
    to: impl Into<Address>,
    request: &Req,
    timeout: Duration,
) -> Result<Resp, CallValueError> {
    let reply = call(to, &encode(request), timeout)?;
    postcard::from_bytes(&reply).map_err(CallValueError::Decode)
}

/// [`call`] with a request and reply encoded as JSON: to call guests
/// written in Python or JavaScript.
///
/// # Errors
///
/// As [`call`], or [`CallValueError::Json`] when the reply is not JSON for a `Resp`.
pub fn call_json<Req: Serialize + ?Sized, Resp: DeserializeOwned>(
    to: impl Into<Address>,
    request: &Req,
    timeout: Duration,
) -> Result<Resp, CallValueError> {
    let reply = call(to, &encode_json(request), timeout)?;
    serde_json::from_slice(&reply).map_err(CallValueError::Json)
}

/// Start a call without waiting for its reply, to keep several in flight:
/// wait on [`PendingCall::subscribe`] (with `wasip2::io::poll::poll`, among
/// other pollables) and take the answer with [`PendingCall::take_reply`].
/// Dropping the handle gives the call up.
///
/// # Errors
///
/// What is known at once: a payload over the limit, a zero timeout, too
/// many calls in flight, the host gone.
pub fn send_request(
    to: impl Into<Address>,
    payload: &[u8],
    timeout: Duration,
) -> Result<PendingCall, CallError> {
    raw::send_request(&to.into(), payload, millis(timeout))
}

/// Calls in flight, each with a tag of the caller's choice (a worker, a
/// slice of work), answered in whatever order the replies come.
///
/// ```no_run
/// use std::time::Duration;
/// use wasmproc_guest::{self as ipc, CallSet};
///
/// let mut calls = CallSet::new();
/// for n in 0..10u64 {
///     calls.start_value(ipc::Address::Group("squares".into()), &n, Duration::from_secs(5), n).unwrap();
/// }
/// while let Some((n, answer)) = calls.next() {
///     let square: u64 = ipc::decode(&answer.unwrap()).unwrap();
///     assert_eq!(square, n * n);
/// }
/// ```
#[derive(Debug)]
pub struct CallSet<T> {
    calls: Vec<(T, PendingCall)>,
}

impl<T> Default for CallSet<T> {
    fn default() -> Self {
        CallSet { calls: Vec::new() }
    }
}

impl<T> CallSet<T> {
    /// An empty set.
    pub fn new() -> CallSet<T> {
        CallSet::default()
    }

    /// Start a call (see [`send_request`]) tagged `tag`.
    ///
    /// # Errors
    ///
    /// As [`send_request`]: the call did not start.
    pub fn start(
        &mut self,
        to: impl Into<Address>,
        payload: &[u8],
        timeout: Duration,
        tag: T,
    ) -> Result<(), CallError> {
        self.calls.push((tag, send_request(to, payload, timeout)?));
        Ok(())
    }

    /// Start a call with a value encoded with postcard.
    ///
    /// # Errors
    ///
    /// As [`CallSet::start`].
    pub fn start_value<V: Serialize + ?Sized>(
        &mut self,
        to: impl Into<Address>,
        value: &V,
        timeout: Duration,
        tag: T,
    ) -> Result<(), CallError> {
        self.start(to, &encode(value), timeout, tag)
    }

    /// Start a call with a value encoded as JSON.
    ///
    /// # Errors
    ///
    /// As [`CallSet::start`].
    pub fn start_json<V: Serialize + ?Sized>(
        &mut self,
        to: impl Into<Address>,
        value: &V,
        timeout: Duration,
        tag: T,
    ) -> Result<(), CallError> {
        self.start(to, &encode_json(value), timeout, tag)
    }

    /// Calls in flight.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is in flight.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

impl<T> Iterator for CallSet<T> {
    type Item = (T, Result<Vec<u8>, CallError>);

    /// Wait for the next call to end and return its tag and answer; `None`
    /// when no call is in flight.
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.calls.is_empty() {
                return None;
            }
            let ready = {
                let pollables: Vec<Pollable> = self
                    .calls
                    .iter()
                    .map(|(_, call)| call.subscribe())
                    .collect();
                let waiting: Vec<&Pollable> = pollables.iter().collect();
                wasip2::io::poll::poll(&waiting)
            };
            let Some(&first) = ready.first() else {
                continue;
            };
            let index = first as usize;
            if let Some(answer) = self.calls[index].1.take_reply() {
                let (tag, _) = self.calls.swap_remove(index);
                return Some((tag, answer));
            }
        }
    }
}

/// Answer the request `request`, delivered to this guest in a message.
///
/// # Errors
///
/// [`ReplyError::Expired`] when the caller has stopped waiting (nothing
/// reaches it), [`ReplyError::AlreadyReplied`] for a second answer,
/// [`ReplyError::UnknownRequest`] for an id never delivered here.
pub fn reply(request: RequestId, payload: &[u8]) -> Result<(), ReplyError> {
    raw::reply(request, payload)
}

impl fmt::Display for UndeliverableReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UndeliverableReason::UnknownRecipient => "unknown recipient",
            UndeliverableReason::RecipientExited => "recipient exited",
            UndeliverableReason::NotAllowed => "not allowed",
            UndeliverableReason::MailboxFull => "mailbox full",
            UndeliverableReason::TooLarge => "too large",
            // Sent to another host, which neither confirmed the take nor
            // refused it: it may or may not have been taken.
            UndeliverableReason::UnknownOutcome => "unknown outcome",
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
    send(to, &encode(value))
}

/// Encode `value` as JSON and [`send`] it.
///
/// # Errors
///
/// As [`send`].
pub fn send_json<T: Serialize + ?Sized>(
    to: impl Into<Address>,
    value: &T,
) -> Result<(), SendError> {
    send(to, &encode_json(value))
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

/// End this guest now with exit code `code`. Rust's std cannot on
/// wasm32-wasip2: `std::process::exit` and `ExitCode` report every
/// non-zero code as 1. What `print!` buffered is flushed first.
pub fn exit(code: u8) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    wasip2::cli::exit::exit_with_code(code);
    // The host ends the guest inside the call above; this is not reached.
    std::process::exit(i32::from(code))
}

/// This guest's id.
pub fn self_id() -> GuestId {
    raw::self_id()
}

/// This guest's name, if it has one.
pub fn self_name() -> Option<String> {
    raw::self_name()
}
