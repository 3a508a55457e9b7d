//! The handle on a running guest ([`Child`]), why the host kills one
//! ([`KillReason`]), and reading what a guest writes.
//!
//! The handle's other half, the task that watches the runner and publishes
//! its status, is the host's session ([`crate::host`]): the two share the
//! guest's relay entry, a kill channel and a status channel ([`Watch`]).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};
use wasmproc_protocol::{Address, CallError, GuestId, InboxItem, ReplyError, RequestId};

use crate::os::process::{ChildStderr, ChildStdin, ChildStdout, Handles};
use crate::relay::{Entry, Relay, SendError};
use crate::status::{ExitStatus, Limit};

/// Why the host kills a runner; decides the status when the runner could
/// not report one itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KillReason {
    /// `Child::kill`.
    Host,
    /// The runner broke the protocol (the reader says how).
    Violation,
    /// The guest's `timeout` ran out.
    Timeout(Duration),
    /// The guest broke a limit.
    Limit(Limit),
}

/// Where kill requests for one runner go.
pub(crate) type Killer = mpsc::Sender<KillReason>;

/// What a [`Child`] shares with the session that watches its runner.
#[derive(Debug)]
pub(crate) struct Watch {
    pub(crate) entry: Arc<Entry>,
    pub(crate) pid: u32,
    pub(crate) kill: Killer,
    /// `None` until the guest has ended.
    pub(crate) status: watch::Receiver<Option<ExitStatus>>,
}

/// A running guest.
#[derive(Debug)]
pub struct Child {
    /// The guest's stdin, if it was [`Stdio::Piped`](crate::Stdio::Piped).
    pub stdin: Option<ChildStdin>,
    /// The guest's stdout, if it was [`Stdio::Piped`](crate::Stdio::Piped).
    pub stdout: Option<ChildStdout>,
    /// The guest's stderr, if it was [`Stdio::Piped`](crate::Stdio::Piped).
    pub stderr: Option<ChildStderr>,
    entry: Arc<Entry>,
    pid: u32,
    kill: Killer,
    status: watch::Receiver<Option<ExitStatus>>,
    relay: Relay,
}

/// Read a guest's output stream to its end, or up to `max` bytes. Past
/// `max` the guest is stopped through `kill` and the rest is drained unkept,
/// so the guest never blocks on a full pipe before it dies.
pub(crate) async fn read_output<R: AsyncRead + Unpin>(
    stream: Option<R>,
    max: u64,
    kill: Option<&Killer>,
) -> Vec<u8> {
    let Some(mut stream) = stream else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut over = false;
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if over {
            continue;
        }
        let room = max.saturating_sub(kept.len() as u64) as usize;
        kept.extend_from_slice(&chunk[..n.min(room)]);
        if n > room {
            over = true;
            if let Some(kill) = kill {
                let _ = kill.try_send(KillReason::Limit(Limit::Output { bytes: max }));
            }
        }
    }
    kept
}

impl Child {
    /// The handle on a session the host started, with the host's ends of
    /// its piped stdio.
    pub(crate) fn new(watch: Watch, handles: Handles, relay: Relay) -> Child {
        let Watch {
            entry,
            pid,
            kill,
            status,
        } = watch;
        Child {
            stdin: handles.stdin,
            stdout: handles.stdout,
            stderr: handles.stderr,
            entry,
            pid,
            kill,
            status,
            relay,
        }
    }

    /// The guest as the relay knows it.
    pub(crate) fn entry(&self) -> &Arc<Entry> {
        &self.entry
    }

    /// Wait until the guest is ready for work: it has waited for its inbox
    /// for the first time.
    pub async fn ready(&self) {
        self.entry.wait_ready().await;
    }

    /// The id the host gave the guest.
    pub fn id(&self) -> GuestId {
        self.entry.id
    }

    /// The guest's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.entry.name.as_deref()
    }

    /// The runner's OS process id (for diagnostics: the OS reuses pids, so
    /// address guests by [`id`](Self::id)).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Send bytes to the guest (Node's `child.send`).
    ///
    /// # Errors
    ///
    /// When the guest has exited, its mailbox is full, or the message is
    /// over its size limit.
    pub fn send(&self, payload: impl Into<Vec<u8>>) -> Result<(), SendError> {
        self.relay.send_from_parent(&self.entry, payload.into())
    }

    /// Send a value encoded with postcard.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn send_value<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), SendError> {
        // Encoding serde types into a Vec cannot fail for postcard's data model.
        self.send(postcard::to_allocvec(value).unwrap_or_default())
    }

    /// Call the guest: send `payload` as a request and wait for its reply,
    /// at most `timeout`. The guest is watched meanwhile: if it ends, the
    /// call fails at once with [`CallError::CalleeExited`] and the reason.
    ///
    /// # Errors
    ///
    /// Why no reply came: [`CallError::Timeout`], `CalleeExited`,
    /// `MailboxFull`, `TooLarge`, `InvalidTimeout` for a zero timeout.
    pub async fn call(
        &self,
        payload: impl Into<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let to = Address::Id(self.entry.id);
        let reply = self
            .relay
            .call_from_parent(&to, timeout, payload.into())
            .await?;
        Ok(Vec::from(reply))
    }

    /// Call the guest with a value encoded with postcard, and decode its
    /// reply as an `R`.
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call), or when the reply does not decode.
    pub async fn call_value<T: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        value: &T,
        timeout: Duration,
    ) -> anyhow::Result<R> {
        let request = postcard::to_allocvec(value).unwrap_or_default();
        let reply = self.call(request, timeout).await?;
        Ok(postcard::from_bytes(&reply)?)
    }

    /// Answer a call the guest made to its parent (a message whose
    /// `request` is set).
    ///
    /// # Errors
    ///
    /// [`ReplyError::Expired`] when the call has ended (the guest's timeout
    /// passed, or it exited), `AlreadyReplied`, `UnknownRequest`.
    pub fn reply(&self, request: RequestId, payload: impl Into<Vec<u8>>) -> Result<(), ReplyError> {
        self.relay.reply_from_parent(request, payload.into())
    }

    /// The next item the guest sent to its parent (messages and calls, and
    /// notices about messages the parent sent that could not be
    /// delivered). `None` once the guest has ended and everything it sent
    /// has been read.
    pub async fn recv(&self) -> Option<InboxItem> {
        // The parent's inbox holds inbox items only (its calls are answered
        // directly), so nothing is skipped here.
        loop {
            let item = self.entry.parent_inbox.pop().await?;
            if let Some(item) = item.into_inbox() {
                return Some(item);
            }
        }
    }

    /// The next message's payload decoded as a `T`, skipping nothing: any
    /// other item is an error.
    ///
    /// # Errors
    ///
    /// When the guest ended, the next item is not a message, or it does not decode.
    pub async fn recv_value<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        match self.recv().await {
            Some(InboxItem::Message { payload, .. }) => Ok(postcard::from_bytes(&payload)?),
            Some(other) => {
                anyhow::bail!("expected a message from guest {}, got {other:?}", self.id())
            }
            None => anyhow::bail!(
                "guest {} ended without sending a message: {}",
                self.id(),
                self.wait().await
            ),
        }
    }

    /// The next item, if one is waiting.
    pub fn try_recv(&self) -> Option<InboxItem> {
        self.entry
            .parent_inbox
            .try_pop()
            .and_then(crate::relay::Item::into_inbox)
    }

    /// Read one of the guest's output streams to its end, or up to `max`
    /// bytes, past which the guest is stopped with [`Limit::Output`].
    pub(crate) async fn collect<R: AsyncRead + Unpin>(
        &self,
        stream: Option<R>,
        max: u64,
    ) -> Vec<u8> {
        read_output(stream, max, Some(&self.kill)).await
    }

    /// Ask the guest to finish: a `shutdown` item arrives in its inbox.
    /// Never waits: a guest whose mailbox is full past its notice headroom
    /// does not get it (the drop is counted), and a caller's grace period
    /// then ends in a kill as it would for a guest that ignores it.
    pub async fn shutdown(&self) {
        self.relay.notify(&self.entry.mailbox, InboxItem::Shutdown);
    }

    /// Ask the guest to finish (`shutdown`), and kill it if it is still
    /// running after `grace`; its status.
    pub async fn stop(&self, grace: Duration) -> ExitStatus {
        self.shutdown().await;
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(status) => status,
            Err(_) => {
                self.kill();
                self.wait().await
            }
        }
    }

    /// Kill the guest's runner (SIGKILL). Its status says `killed by the host`.
    pub fn kill(&self) {
        let _ = self.kill.try_send(KillReason::Host);
    }

    /// Wait for the guest to end.
    pub async fn wait(&self) -> ExitStatus {
        let mut status = self.status.clone();
        loop {
            if let Some(status) = status.borrow_and_update().clone() {
                return status;
            }
            if status.changed().await.is_err() {
                return status.borrow().clone().unwrap_or(ExitStatus::Failed {
                    reason: "the host stopped watching the guest".to_owned(),
                });
            }
        }
    }

    /// The status if the guest has ended.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.status.borrow().clone()
    }
}
