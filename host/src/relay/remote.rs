//! What the cluster bridge needs of the relay: this host's own guests as
//! it announces them, word when they change, and the guests of other hosts
//! as local entries (proxies) whose mailboxes the bridge drains.
//!
//! A proxy is an ordinary [`Entry`] with [`Entry::remote`] set: names,
//! groups, the allow-list, monitors and the call table treat it like any
//! guest, so a send to a guest on another host takes the same road as a
//! local one, up to the proxy's mailbox.
//!
//! A message from a guest of another host carries that host's number for
//! it ([`Seq`]) on its way through this host; when its recipient takes it,
//! or it comes back, the relay keeps the number ([`Settled`]) for the
//! bridge, which tells the sending host in batches.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc};
use wasmproc_protocol::{CallError, GuestId, RequestId, UndeliverableReason};

use super::{Entry, Relay};

/// One of this host's guests, as the bridge announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Announced {
    pub id: GuestId,
    /// Its name, while the name leads to it (not a swap's standby).
    pub name: Option<String>,
    pub group: Option<String>,
    pub max_message_size: u64,
}

/// A change to this host's own guests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LocalEvent {
    /// A guest was registered, or a name moved to a new instance.
    Changed,
    /// A guest ended, and why; `moved`: its name had moved on to a new
    /// instance (a swap), which goes on answering to it.
    Exited {
        id: GuestId,
        name: Option<String>,
        reason: String,
        moved: bool,
    },
}

/// How many changes wait for the bridge; past that they are dropped, and
/// the next heartbeat (which carries the whole directory) makes up for
/// them, with `exited` for a reason.
pub(crate) const LOCAL_EVENTS: usize = 4096;

#[derive(Debug, Default)]
pub(super) struct LocalEvents {
    sink: Mutex<Option<mpsc::Sender<LocalEvent>>>,
}

/// The sending host's number for a message from a guest of another host,
/// and that host's node: kept with the message from the moment it arrives,
/// so that its take is reported home even when the sender's proxy here has
/// gone meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Number {
    pub seq: NonZeroU64,
    pub node: Arc<str>,
}

/// A message's [`Number`]; `None` for this host's own messages.
pub(crate) type Seq = Option<Number>;

/// What became of a message from another host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Its recipient's guest took it.
    Taken,
    /// It came back, and why: the sending host tells its sender.
    Returned(UndeliverableReason),
}

/// Settlements at most waiting for the bridge. The bridge takes them every
/// few milliseconds while connected and drops them while not (the other
/// hosts then count what we hold as of unknown outcome), so this is only
/// reached when the bridge falls far behind: past it a settlement is
/// dropped and counted, and its sending host reports that message as of
/// unknown outcome if this host is lost, never as taken.
pub const SETTLEMENTS: usize = 1 << 18;

/// Settlements of messages from other hosts, waiting for the bridge: (the
/// sending host's node, its number for the message, what became of it).
#[derive(Debug, Default)]
pub(super) struct Settlements {
    waiting: Mutex<Vec<(Arc<str>, NonZeroU64, Settled)>>,
    /// Set while a bridge takes them: without one nothing is kept.
    watched: AtomicBool,
    ready: Notify,
    dropped: AtomicU64,
}

impl Relay {
    /// A message from another host, `number` there, was settled: keep that
    /// for the bridge. Never waits.
    pub(crate) fn settled_remote(&self, number: &Number, settled: Settled) {
        let settlements = &self.inner.settlements;
        if !settlements.watched.load(Ordering::Relaxed) {
            return;
        }
        let mut waiting = settlements
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if waiting.len() >= SETTLEMENTS {
            settlements.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let first = waiting.is_empty();
        waiting.push((number.node.clone(), number.seq, settled));
        drop(waiting);
        if first {
            settlements.ready.notify_one();
        }
    }

    /// Wait until settlements are waiting, then take them all (oldest
    /// first). The first call makes the relay keep them.
    pub(crate) async fn settlements(&self) -> Vec<(Arc<str>, NonZeroU64, Settled)> {
        let settlements = &self.inner.settlements;
        settlements.watched.store(true, Ordering::Relaxed);
        loop {
            let taken = self.take_settlements();
            if !taken.is_empty() {
                return taken;
            }
            settlements.ready.notified().await;
        }
    }

    /// The settlements waiting now, taken (none waiting: empty).
    pub(crate) fn take_settlements(&self) -> Vec<(Arc<str>, NonZeroU64, Settled)> {
        std::mem::take(
            &mut *self
                .inner
                .settlements
                .waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// Put `settled` back ahead of what waits (the bridge could not send
    /// them yet), within the bound: past it the newest are dropped and
    /// counted.
    pub(crate) fn keep_settlements(&self, settled: Vec<(Arc<str>, NonZeroU64, Settled)>) {
        let settlements = &self.inner.settlements;
        let mut waiting = settlements
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut kept = settled;
        kept.append(&mut waiting);
        if kept.len() > SETTLEMENTS {
            let over = kept.len() - SETTLEMENTS;
            kept.truncate(SETTLEMENTS);
            settlements
                .dropped
                .fetch_add(over as u64, Ordering::Relaxed);
        }
        *waiting = kept;
    }

    /// Settlements dropped because too many were waiting, in all.
    pub(crate) fn dropped_settlements(&self) -> u64 {
        self.inner.settlements.dropped.load(Ordering::Relaxed)
    }

    /// Tell changes to this host's own guests to `sink` from now on.
    pub(crate) fn watch_local(&self, sink: mpsc::Sender<LocalEvent>) {
        *self
            .inner
            .local_events
            .sink
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(sink);
    }

    /// `entry` was registered (`exited: None`) or has ended.
    pub(super) fn local_changed(&self, entry: &Entry, exited: Option<&str>) {
        if entry.remote.is_some() {
            return;
        }
        let sink = self.inner.local_events.sink.lock();
        let sink = sink.unwrap_or_else(|e| e.into_inner());
        let Some(sink) = sink.as_ref() else { return };
        let event = match exited {
            None => LocalEvent::Changed,
            Some(reason) => LocalEvent::Exited {
                id: entry.id,
                name: entry.name.clone(),
                reason: reason.to_owned(),
                moved: entry.successor().is_some(),
            },
        };
        // Never waits: see `LOCAL_EVENTS`.
        let _ = sink.try_send(event);
    }

    /// This host's own live guests.
    pub(crate) fn local_directory(&self) -> Vec<Announced> {
        let table = self.read();
        let mut guests: Vec<Announced> = table
            .guests
            .values()
            .filter(|e| e.remote.is_none())
            .filter(|e| {
                // A standby is in no group and has no name yet.
                e.name
                    .as_ref()
                    .map_or(e.group.is_none() || in_group(&table, e), |n| {
                        table.names.get(n) == Some(&e.id)
                    })
            })
            .map(|e| Announced {
                id: e.id,
                name: e.name.clone(),
                group: e.group.clone().filter(|_| in_group(&table, e)),
                max_message_size: e.max_message_size,
            })
            .collect();
        guests.sort_by_key(|g| g.id);
        guests
    }

    /// Every proxy of the guests of `node`.
    pub(crate) fn proxies_of(&self, node: &str) -> Vec<Arc<Entry>> {
        self.read()
            .guests
            .values()
            .filter(|e| e.remote.as_deref() == Some(node))
            .cloned()
            .collect()
    }

    /// End an open call with `answer` as it came from another host: a
    /// reply from its callee's host, or why there is none.
    /// Hosts trust each other (one NATS account): the answer is taken as
    /// the callee's.
    pub(crate) fn answer_remote(&self, request: RequestId, answer: super::calls::Answer) {
        match self.inner.calls.expire(request) {
            Some(ended) => self.answer(ended.caller, answer),
            // The deadline came first: the reply is late.
            None => self.inner.calls.count_late(),
        }
    }

    /// When the open call `request` is due, if it is open.
    pub(crate) fn call_deadline(&self, request: RequestId) -> Option<tokio::time::Instant> {
        self.inner.calls.deadline_of(request)
    }

    /// End an open call that cannot be answered (its request did not
    /// reach the callee's host).
    pub(crate) fn fail_call(&self, request: RequestId, error: CallError) {
        self.end_call(request, error);
    }
}

fn in_group(table: &super::Table, entry: &Entry) -> bool {
    entry.group.as_ref().is_some_and(|g| {
        table
            .groups
            .get(g)
            .is_some_and(|g| g.members.contains(&entry.id))
    })
}
