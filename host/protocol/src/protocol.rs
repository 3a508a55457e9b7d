//! Frame types: one enum for each direction.
//!
//! A runner starts by sending [`RunnerToHost::Hello`] with its
//! [`PROTOCOL_VERSION`]; the host checks it and answers with
//! [`HostToRunner::Launch`], which carries the version again for the runner to
//! check. After that the host delivers inbox items and the runner sends
//! messages, until the runner reports [`RunnerToHost::Exit`] and exits.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Bumped whenever a frame type changes shape.
pub const PROTOCOL_VERSION: u32 = 9;

/// A guest's id: given by the host, never the OS pid (which the OS reuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GuestId(pub u64);

impl GuestId {
    /// The parent: the program or app supervisor that started a guest.
    pub const PARENT: GuestId = GuestId(0);
}

impl fmt::Display for GuestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::PARENT {
            f.write_str("parent")
        } else {
            write!(f, "#{}", self.0)
        }
    }
}

/// A request's id: given by the host when it delivers a call, and good
/// only for answering that call, once, from the guest it was delivered to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request {}", self.0)
    }
}

/// Why a call ended without a reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum CallError {
    /// No reply came before the call's deadline.
    #[error("no reply before the deadline")]
    Timeout,
    /// No guest has this id, name or group.
    #[error("unknown recipient")]
    UnknownRecipient,
    /// The callee ended before it replied (or before it took the request).
    #[error("the callee exited: {0}")]
    CalleeExited(String),
    /// The caller may not talk to the callee, or called a broadcast address
    /// (a call has one callee).
    #[error("not allowed")]
    NotAllowed,
    /// The callee's mailbox is full (or the caller's, for the reply).
    #[error("mailbox full")]
    MailboxFull,
    /// The request is over the callee's message size limit, or the reply
    /// over the caller's.
    #[error("too large")]
    TooLarge,
    /// The host has gone away.
    #[error("the host is gone")]
    HostGone,
    /// The timeout was zero: every call has a deadline.
    #[error("a call needs a timeout above zero")]
    InvalidTimeout,
    /// The caller already has as many calls in flight as it may.
    #[error("too many calls in flight")]
    TooManyCalls,
}

/// Why a reply was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum ReplyError {
    /// The call has ended without this reply: the caller timed out, gave up
    /// or exited. Nothing reaches the caller.
    #[error("the call has expired")]
    Expired,
    /// The request has been answered already.
    #[error("the request was answered already")]
    AlreadyReplied,
    /// No such request was delivered here.
    #[error("no such request was delivered here")]
    UnknownRequest,
}

/// Calls one guest (or the parent) may have in flight at once.
pub const MAX_CALLS_IN_FLIGHT: usize = 4096;

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Address {
    /// The program or app that started the sender.
    Parent,
    /// One guest by id.
    Id(GuestId),
    /// One guest by its unique name.
    Name(String),
    /// One member of a group, round-robin.
    Group(String),
    /// Every live member of a group.
    Broadcast(String),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Parent => f.write_str("parent"),
            Address::Id(id) => write!(f, "{id}"),
            Address::Name(name) => write!(f, "`{name}`"),
            Address::Group(group) => write!(f, "group `{group}`"),
            Address::Broadcast(group) => write!(f, "every member of group `{group}`"),
        }
    }
}

/// Why the relay could not deliver a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UndeliverableReason {
    /// No guest has this id, name or group.
    UnknownRecipient,
    /// The recipient existed but has exited.
    RecipientExited,
    /// The sender may not talk to the recipient.
    NotAllowed,
    /// The recipient's mailbox is full.
    MailboxFull,
    /// The payload is over the recipient's message size limit.
    TooLarge,
    /// Sent to a guest of another host, which neither confirmed that its
    /// guest took it nor refused it (that host was lost, the connection
    /// dropped, or no answer came in time): it may or may not have been
    /// taken.
    UnknownOutcome,
}

impl fmt::Display for UndeliverableReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UndeliverableReason::UnknownRecipient => "unknown recipient",
            UndeliverableReason::RecipientExited => "recipient exited",
            UndeliverableReason::NotAllowed => "not allowed",
            UndeliverableReason::MailboxFull => "mailbox full",
            UndeliverableReason::TooLarge => "too large",
            UndeliverableReason::UnknownOutcome => "unknown outcome",
        })
    }
}

/// One item in a guest's inbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InboxItem {
    /// A message from the parent or another guest.
    Message {
        from: GuestId,
        from_name: Option<String>,
        /// Set when the message is a call: answer it with this id.
        request: Option<RequestId>,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// A message this guest sent could not be delivered.
    Undeliverable {
        to: Address,
        reason: UndeliverableReason,
        payload_len: u64,
    },
    /// A monitored guest has ended.
    Down {
        id: GuestId,
        name: Option<String>,
        reason: String,
    },
    /// The host asks the guest to finish and exit.
    Shutdown,
}

impl InboxItem {
    /// The message bytes the item carries (0 for a notice): what inbox and
    /// mailbox byte bounds count.
    pub fn payload_len(&self) -> usize {
        match self {
            InboxItem::Message { payload, .. } => payload.len(),
            _ => 0,
        }
    }
}

/// The kind of precompiled artifact a runner loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModuleKind {
    /// A core wasm module (WASI preview 1, `_start`).
    Module,
    /// A component (WASI preview 2, `wasi:cli/run`).
    Component,
}

/// A host folder the guest sees at `guest_path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preopen {
    pub host_path: String,
    pub guest_path: String,
    pub read_only: bool,
}

/// Per-guest limits enforced inside the runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The largest payload `send` accepts, in bytes.
    pub max_message_size: u64,
    /// How many items the runner holds for the guest before it stops reading
    /// from the host (the host then holds a bounded mailbox of its own).
    pub inbox_items: u32,
    /// Payload bytes the runner holds for the guest, likewise (one message
    /// of any allowed size is always taken into an empty inbox).
    pub inbox_bytes: u64,
    /// The most linear memory the guest may grow to, in bytes.
    pub max_memory: u64,
    /// CPU time the runner may use, in milliseconds (`None`: no limit).
    pub max_cpu_ms: Option<u64>,
    /// The longest a call of the guest may wait for its reply, in
    /// milliseconds: a longer timeout is cut to it.
    pub max_call_ms: u64,
}

/// The longest a call may wait unless a guest's limits say otherwise.
pub const DEFAULT_MAX_CALL_MS: u64 = 60_000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 16 * 1024 * 1024,
            inbox_items: 65_536,
            inbox_bytes: 64 * 1024 * 1024,
            max_memory: 512 * 1024 * 1024,
            max_cpu_ms: None,
            max_call_ms: DEFAULT_MAX_CALL_MS,
        }
    }
}

/// Everything a runner needs to start its guest. Sent over the control pipe,
/// never on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// Must equal the runner's [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    pub id: GuestId,
    pub name: Option<String>,
    /// The precompiled artifact, written by the host's cache.
    pub artifact: String,
    pub kind: ModuleKind,
    /// `argv`, including `argv[0]`.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub preopens: Vec<Preopen>,
    pub limits: Limits,
    /// Test mode: once hardened with these walls, try forbidden operations
    /// natively, print each result on stdout and exit, without running the
    /// guest. `None`: run the guest, with every wall.
    pub probe: Option<Walls>,
}

/// Which parts of the second wall a probing runner raises, so that a test
/// can show each holds on its own. A guest always gets all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Walls {
    pub landlock: bool,
    pub seccomp: bool,
}

impl Walls {
    /// Every wall: what a guest gets.
    pub const ALL: Walls = Walls {
        landlock: true,
        seccomp: true,
    };
}

/// How a guest ended, as the runner saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitReport {
    /// The guest returned from `main` or called `exit`.
    Exited { code: i32 },
    /// The guest trapped.
    Trapped {
        message: String,
        /// Wasm frames, innermost first, with function names where known.
        backtrace: Vec<String>,
    },
    /// The guest tried to grow its memory past its limit; the limiter's own
    /// record of the refused size.
    MemoryLimit { limit: u64, requested: u64 },
    /// The runner could not start the guest (bad artifact, missing imports, ...).
    Failed { message: String },
}

/// One step of a runner's OS hardening.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardeningStep {
    pub name: String,
    /// Whether the step is in force.
    pub applied: bool,
    /// What was done, or why it could not be.
    pub detail: String,
}

/// Frames the host sends to a runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostToRunner {
    /// What to run, answering `Hello`: the first frame but for `Preload`.
    Launch(LaunchSpec),
    /// An item for the guest's inbox.
    Deliver(InboxItem),
    /// The reply to the guest's call `call` (its own number for the call).
    Replied {
        call: u64,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// The guest's call `call` ended without a reply.
    CallFailed { call: u64, error: CallError },
    /// A request delivered to the guest has ended unanswered (its caller
    /// timed out, gave up or exited): a reply now gets `expired`.
    Expired { request: RequestId },
    /// Before `Launch`, to a runner waiting in the host's pool: the artifact
    /// its guest will likely be (the one the pool last launched). The runner
    /// maps it and resolves its imports while it waits; a `Launch` of
    /// another artifact loads that one as usual.
    Preload { artifact: String, kind: ModuleKind },
}

/// Frames a runner sends to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunnerToHost {
    /// The first frame: which protocol the runner speaks.
    Hello { protocol_version: u32 },
    /// How the runner hardened itself, step by step (right after `Hello`).
    Hardened { steps: Vec<HardeningStep> },
    /// The guest sends a message.
    Send {
        to: Address,
        /// The inbox items the guest had taken, in all, when it sent this:
        /// the host hears it before it routes what the guest sent after
        /// taking them.
        taken: u64,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// The guest calls `to`: one request, one reply or error. `call` is the
    /// guest's own number for it (new for every call), to match the answer.
    Call {
        to: Address,
        call: u64,
        /// Milliseconds until the call fails with `timeout` (above zero; the
        /// host caps it at the guest's maximum).
        timeout_ms: u64,
        /// As in `Send`.
        taken: u64,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// The guest answers a request delivered to it.
    Reply {
        request: RequestId,
        /// As in `Send`.
        taken: u64,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// The guest gives up its call `call` before its answer came: a reply
    /// to it is now late.
    Abandon { call: u64 },
    /// The guest asks for a `Down` item when the guest called `name` ends.
    Monitor { name: String },
    /// The guest waits for its inbox for the first time: it is ready for
    /// work (a swap's standby takes over only then).
    Ready,
    /// The guest's linear memory has grown to `bytes` (told with its next
    /// frame).
    Memory { bytes: u64 },
    /// How many delivered inbox items the guest has taken so far, in all
    /// (cumulative, like `Send::taken`), when there is no send to carry it:
    /// when the guest waits for its inbox, and before its exit report. What
    /// the host delivered beyond it when the runner ends goes back to its
    /// senders.
    Taken { count: u64 },
    /// The guest has ended; the last frame.
    Exit(ExitReport),
}

/// The peer speaks another protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("protocol version mismatch: this side speaks {ours}, the peer speaks {theirs}")]
pub struct VersionMismatch {
    pub ours: u32,
    pub theirs: u32,
}

/// Check a peer's protocol version against ours.
///
/// # Errors
///
/// [`VersionMismatch`] when they differ.
pub fn check_version(theirs: u32) -> Result<(), VersionMismatch> {
    if theirs == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        })
    }
}

impl crate::framing::WithPayload for HostToRunner {
    fn payload_mut(&mut self) -> Option<&mut Vec<u8>> {
        match self {
            HostToRunner::Deliver(InboxItem::Message { payload, .. })
            | HostToRunner::Replied { payload, .. } => Some(payload),
            _ => None,
        }
    }
}

impl crate::framing::WithPayload for RunnerToHost {
    fn payload_mut(&mut self) -> Option<&mut Vec<u8>> {
        match self {
            RunnerToHost::Send { payload, .. }
            | RunnerToHost::Call { payload, .. }
            | RunnerToHost::Reply { payload, .. } => Some(payload),
            _ => None,
        }
    }
}
