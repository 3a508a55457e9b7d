//! The router: every message between guests, and between a guest and its
//! parent, goes through here.
//!
//! A guest's reader task (in its [`crate::host`] session) calls
//! [`Relay::route`] for each `Send` frame. The relay finds the recipient by id, name or group, checks
//! the size against the recipient's limit and queues the message in the
//! recipient's bounded [`Mailbox`]; the recipient's writer task moves it to
//! its runner. Per sender→receiver pair the order is kept: one reader task
//! handles a sender's frames in order, and each mailbox is FIFO. What cannot
//! be delivered comes back to the sender as an `undeliverable` notice.
//! Calls ([`calls`]) take the same road, with the host keeping each call's
//! correlation, deadline and callee until it is answered.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use wasmproc_protocol::{Address, GuestId, InboxItem, UndeliverableReason};

mod calls;
mod mailbox;
mod policy;
mod remote;

use bytes::Bytes;
use wasmproc_protocol::contract::{MAX_NAME_LEN, bounded_name};
use wasmproc_protocol::valid_name;

use crate::connection::WriteStats;
pub(crate) use mailbox::{
    HOST_BYTES, HostBudget, Item, MAILBOX_BYTES, MAILBOX_ITEMS, Mailbox, PushError,
};
pub use policy::Refusal;
use policy::Refusals;
pub(crate) use remote::{LOCAL_EVENTS, LocalEvent, Number, Seq, Settled};

/// One guest as the relay knows it.
#[derive(Debug)]
pub struct Entry {
    pub id: GuestId,
    pub name: Option<String>,
    pub group: Option<String>,
    /// What the host holds for the guest, on its way to the runner.
    pub mailbox: Mailbox,
    /// What the guest sent to its parent, for `Child::recv`.
    pub parent_inbox: Mailbox,
    pub max_message_size: u64,
    /// The names and groups the guest may send to; `None`: anyone. The
    /// parent is always allowed.
    pub talks_to: Option<Vec<String>>,
    /// The CPU limit its runner has, to name it when the kernel enforces it.
    pub max_cpu: Option<std::time::Duration>,
    /// The instance its name moved to in a swap: where messages sent to
    /// this one go from then on.
    successor: std::sync::Mutex<Option<Arc<Entry>>>,
    /// Set once the guest first waits for its inbox: it is ready for work.
    ready: tokio::sync::watch::Sender<bool>,
    /// What became of the messages delivered to its runner.
    pub counters: Counters,
    /// The node it runs on, for a guest of another host (a proxy the
    /// cluster bridge drains); `None` for this host's own guests.
    pub remote: Option<String>,
}

/// One guest's message counts: each is one atomic, touched once per frame
/// or per write batch, never a lock.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages written to the runner and not yet taken by the guest.
    pub outstanding: AtomicU64,
    /// Messages that went back to their senders when the guest ended.
    pub returned: AtomicU64,
    /// Messages (and requests) written to its runner, and their bytes.
    pub msgs_in: AtomicU64,
    pub bytes_in: AtomicU64,
    /// Messages, calls and replies it sent, and their bytes.
    pub msgs_out: AtomicU64,
    pub bytes_out: AtomicU64,
    /// `undeliverable` notices it was given about its own sends.
    pub undeliverable: AtomicU64,
    /// Its linear memory in bytes, as its runner last said.
    pub memory: AtomicU64,
    /// Its sends to other hosts whose fate is unknown (NATS is
    /// at-most-once): no ack came in time, or that host or our connection
    /// was lost before it said whether its guest took them. A guest of WIT
    /// 0.3 is told each (`undeliverable: unknown outcome`); one of 0.2 has
    /// no item for it, so for it the count is where it shows (`ps`, `top`,
    /// metrics).
    pub unknown_outcome: AtomicU64,
}

/// Whether the counters count (a benchmark turns them off to weigh them).
pub static COUNTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

impl Counters {
    /// Count one frame the guest sent.
    pub fn sent(&self, bytes: usize) {
        if !COUNTING.load(Ordering::Relaxed) {
            return;
        }
        self.msgs_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Count a batch about to be written to the guest's runner.
    pub fn delivering(&self, items: &[Item]) {
        if !COUNTING.load(Ordering::Relaxed) {
            return;
        }
        let (mut msgs, mut bytes, mut bounced) = (0, 0, 0);
        for item in items {
            match item {
                Item::Message { payload, .. } => {
                    msgs += 1;
                    bytes += payload.len() as u64;
                }
                Item::Notice(InboxItem::Undeliverable { .. }) => bounced += 1,
                _ => {}
            }
        }
        self.msgs_in.fetch_add(msgs, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        self.undeliverable.fetch_add(bounced, Ordering::Relaxed);
    }
}

impl Entry {
    /// The instance this one's name moved to, if it has.
    pub fn successor(&self) -> Option<Arc<Entry>> {
        self.successor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The guest has waited for its inbox for the first time.
    pub fn set_ready(&self) {
        self.ready.send_replace(true);
    }

    /// Wait until the guest is ready for work (its first wait on its inbox).
    pub async fn wait_ready(&self) {
        let mut ready = self.ready.subscribe();
        let _ = ready.wait_for(|ready| *ready).await;
    }
}

/// What a new guest is, for [`Relay::register`].
#[derive(Debug, Clone, Default)]
pub struct Registration {
    pub name: Option<String>,
    pub group: Option<String>,
    pub max_message_size: u64,
    pub talks_to: Option<Vec<String>>,
    pub max_cpu: Option<std::time::Duration>,
    /// A standby for a swap: it has the name, but the name still leads to
    /// the running instance until [`Relay::switch`].
    pub standby: bool,
    /// The node of a guest of another host (see [`Entry::remote`]).
    pub remote: Option<String>,
}

/// Queue a message for `target`, following its name to newer instances
/// when it has moved (a swap). Returns who took it, or the last one tried
/// and why it did not.
fn push_to(target: &Arc<Entry>, item: Item) -> (Arc<Entry>, Result<(), (PushError, Item)>) {
    let mut target = target.clone();
    let mut item = item;
    loop {
        match target.mailbox.try_push(item) {
            Err((PushError::Moved, back)) => match target.successor() {
                Some(next) => {
                    target = next;
                    item = back;
                }
                None => return (target, Err((PushError::Closed, back))),
            },
            other => return (target, other),
        }
    }
}

/// How long a sender is held while its recipient's mailbox is full, before
/// the message comes back as `mailbox full`.
pub const MAILBOX_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// What [`Relay::route`] did with a message.
#[derive(Debug, Default)]
pub struct Routed {
    /// Notices for the sender: what could not be delivered, and why.
    pub notices: Vec<InboxItem>,
    /// Messages whose recipient's mailbox was full: hand each to
    /// [`Relay::deliver_pending`], in order.
    pub waiting: Vec<Pending>,
}

/// A message waiting for room in a full mailbox.
#[derive(Debug)]
pub struct Pending {
    /// The recipient; `None` for the sender's parent.
    target: Option<Arc<Entry>>,
    item: Item,
    to: Address,
}

/// Why a guest could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("a guest named `{0}` is already running")]
    NameTaken(String),
    #[error("no guest named `{0}` is running to be replaced")]
    NotRunning(String),
    #[error("`{0}` is not a valid guest name: {rule}", rule = wasmproc_protocol::contract::NAME_RULE)]
    BadName(String),
}

/// Why the parent's send to a guest failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the guest has exited")]
    Exited,
    #[error("no live guest is {0}")]
    Unknown(Address),
    #[error("the guest's mailbox is full ({0} items waiting)")]
    MailboxFull(usize),
    #[error("the message is {len} bytes, over the guest's {limit}-byte limit")]
    TooLarge { len: usize, limit: u64 },
}

#[derive(Debug, Default)]
struct Table {
    guests: HashMap<GuestId, Arc<Entry>>,
    names: HashMap<String, GuestId>,
    groups: HashMap<String, Group>,
    /// Names of guests that have ended, to tell "exited" from "unknown",
    /// with the reason the last of each ended.
    exited_names: HashMap<String, String>,
    /// Watched guest → the guests that monitor it.
    /// (A set: monitoring one guest twice costs nothing more.)
    monitors: HashMap<GuestId, BTreeSet<GuestId>>,
}

#[derive(Debug, Default)]
struct Group {
    members: Vec<GuestId>,
    next: AtomicUsize,
}

/// The relay; clones share one routing table.
#[derive(Debug, Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    table: RwLock<Table>,
    next_id: AtomicU64,
    stats: Arc<WriteStats>,
    /// The allow-list's refusals, reported once per sender and recipient.
    refusals: Refusals,
    /// Notices that found no room in their guest's mailbox.
    dropped_notices: AtomicU64,
    /// Message bytes held in every mailbox of this relay, capped.
    budget: Arc<HostBudget>,
    /// Calls in flight.
    calls: calls::Calls,
    /// Where changes to this host's own guests are told (the cluster
    /// bridge, which announces them).
    local_events: remote::LocalEvents,
    /// What became of the messages from other hosts, for the bridge to
    /// tell them.
    settlements: remote::Settlements,
}

impl Default for Relay {
    fn default() -> Self {
        Relay::new()
    }
}

/// The live guests an address means now: one for an id, a name or a group
/// (its next member, round-robin), every member for a broadcast.
fn resolve(table: &Table, to: &Address) -> Vec<Arc<Entry>> {
    let by_id = |id: &GuestId| table.guests.get(id).cloned();
    match to {
        Address::Parent => Vec::new(),
        Address::Id(id) => by_id(id).into_iter().collect(),
        Address::Name(name) => table.names.get(name).and_then(by_id).into_iter().collect(),
        Address::Group(group) => table
            .groups
            .get(group)
            .filter(|g| !g.members.is_empty())
            .and_then(|g| {
                by_id(&g.members[g.next.fetch_add(1, Ordering::Relaxed) % g.members.len()])
            })
            .into_iter()
            .collect(),
        Address::Broadcast(group) => table
            .groups
            .get(group)
            .map(|g| g.members.iter().filter_map(by_id).collect())
            .unwrap_or_default(),
    }
}

impl Relay {
    pub fn new() -> Relay {
        Relay {
            inner: Arc::new(Inner {
                table: RwLock::new(Table::default()),
                next_id: AtomicU64::new(1),
                stats: Arc::new(WriteStats::default()),
                refusals: Refusals::default(),
                dropped_notices: AtomicU64::new(0),
                budget: Arc::new(HostBudget::new(HOST_BYTES)),
                calls: calls::Calls::default(),
                local_events: remote::LocalEvents::default(),
                settlements: remote::Settlements::default(),
            }),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.inner.table.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.inner.table.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Counters shared by every guest's writer: frames and `write` calls.
    pub fn stats(&self) -> &Arc<WriteStats> {
        &self.inner.stats
    }

    /// Give a new guest an id and make it reachable, before its runner even
    /// starts: messages sent to it meanwhile wait in its mailbox.
    ///
    /// # Errors
    ///
    /// When the name is taken or malformed.
    pub fn register(&self, registration: Registration) -> Result<Arc<Entry>, RegisterError> {
        let Registration {
            name,
            group,
            max_message_size,
            talks_to,
            max_cpu,
            standby,
            remote,
        } = registration;
        for n in name.iter().chain(group.iter()) {
            if !valid_name(n) {
                return Err(RegisterError::BadName(n.clone()));
            }
        }
        let mut table = self.write();
        if let Some(name) = &name
            && table.names.contains_key(name) != standby
        {
            return Err(match standby {
                true => RegisterError::NotRunning(name.clone()),
                false => RegisterError::NameTaken(name.clone()),
            });
        }
        let id = GuestId(self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        let entry = Arc::new(Entry {
            id,
            name: name.clone(),
            group: group.clone(),
            mailbox: Mailbox::with_budget(MAILBOX_ITEMS, MAILBOX_BYTES, self.inner.budget.clone()),
            parent_inbox: Mailbox::with_budget(
                MAILBOX_ITEMS,
                MAILBOX_BYTES,
                self.inner.budget.clone(),
            ),
            max_message_size,
            talks_to,
            max_cpu,
            successor: std::sync::Mutex::new(None),
            ready: tokio::sync::watch::Sender::new(false),
            counters: Counters::default(),
            remote,
        });
        if standby {
            table.guests.insert(id, entry.clone());
            return Ok(entry);
        }
        if let Some(name) = name {
            table.exited_names.remove(&name);
            table.names.insert(name, id);
        }
        if let Some(group) = group {
            table.groups.entry(group).or_default().members.push(id);
        }
        table.guests.insert(id, entry.clone());
        drop(table);
        self.local_changed(&entry, None);
        Ok(entry)
    }

    /// Route one message from guest `from`: queue it in each recipient's
    /// mailbox. What could not be queued comes back in [`Routed`]: notices
    /// for the sender, and messages waiting for room in a full mailbox.
    pub fn route(&self, from: &Entry, to: Address, payload: Vec<u8>) -> Routed {
        self.route_numbered(from, to, payload, (None, from.name.as_ref()))
    }

    /// [`Relay::route`] for a message from a guest of another host, which
    /// numbered it `seq` (to hear when it is taken or returned), and whose
    /// name is `from_name` (its proxy here may have none: a message passed
    /// on by a host its guest moved from).
    pub(crate) fn route_numbered(
        &self,
        from: &Entry,
        to: Address,
        payload: Vec<u8>,
        (seq, from_name): (Seq, Option<&String>),
    ) -> Routed {
        let mut routed = Routed::default();
        let payload = Bytes::from(payload);
        let message = |payload| Item::Message {
            from: from.id,
            from_name: from_name.cloned(),
            request: None,
            payload,
            seq: seq.clone(),
        };
        let bounce = |to: Address, reason, len: usize| InboxItem::Undeliverable {
            to,
            reason,
            payload_len: len as u64,
        };
        let len = payload.len();
        // A name longer than any guest's names nobody; the notice repeats
        // only its start, so a guest cannot make the host (or its own
        // runner) hold a large name once per send.
        if let Address::Name(name) | Address::Group(name) | Address::Broadcast(name) = &to
            && name.len() > MAX_NAME_LEN
        {
            let short = bounded_name(name);
            let to = match to {
                Address::Group(_) => Address::Group(short),
                Address::Broadcast(_) => Address::Broadcast(short),
                _ => Address::Name(short),
            };
            routed
                .notices
                .push(bounce(to, UndeliverableReason::UnknownRecipient, len));
            return routed;
        }
        if to == Address::Parent {
            match from.parent_inbox.try_push(message(payload)) {
                Ok(()) => {}
                Err((PushError::Full, item)) => routed.waiting.push(Pending {
                    target: None,
                    item,
                    to,
                }),
                Err((PushError::Closed | PushError::Moved, _)) => {
                    routed
                        .notices
                        .push(bounce(to, UndeliverableReason::RecipientExited, len))
                }
            }
            return routed;
        }
        let table = self.read();
        let targets = resolve(&table, &to);
        if !policy::allows(from, &to, &targets) {
            drop(table);
            self.inner.refusals.refuse(from, &to);
            routed
                .notices
                .push(bounce(to, UndeliverableReason::NotAllowed, len));
            return routed;
        }
        if targets.is_empty() {
            let reason = match self.ended(&table, &to) {
                Some(_) => UndeliverableReason::RecipientExited,
                None => UndeliverableReason::UnknownRecipient,
            };
            routed.notices.push(bounce(to, reason, len));
            return routed;
        }
        drop(table);

        let notices = &mut routed.notices;
        for target in &targets {
            if len as u64 > target.max_message_size {
                notices.push(bounce(to.clone(), UndeliverableReason::TooLarge, len));
                continue;
            }
            // A broadcast's members share one payload: no copy per member.
            match push_to(target, message(payload.clone())) {
                (_, Ok(())) => {}
                (target, Err((PushError::Full, item))) => routed.waiting.push(Pending {
                    target: Some(target),
                    item,
                    to: to.clone(),
                }),
                (_, Err((PushError::Closed | PushError::Moved, _))) => {
                    notices.push(bounce(
                        to.clone(),
                        UndeliverableReason::RecipientExited,
                        len,
                    ));
                }
            }
        }
        routed
    }

    /// Why the guest `to` names ended, if it names one that has: what tells
    /// "exited" from "unknown" when nobody live has the address.
    fn ended(&self, table: &Table, to: &Address) -> Option<String> {
        match to {
            Address::Id(id) if id.0 < self.inner.next_id.load(Ordering::Relaxed) => {
                Some("it has exited".to_owned())
            }
            Address::Name(name) => table.exited_names.get(name).cloned(),
            _ => None,
        }
    }

    /// Deliver a message whose recipient's mailbox was full, waiting a
    /// moment for room. Returns the notice for the sender if it could not be
    /// delivered.
    pub async fn deliver_pending(&self, from: &Entry, pending: Pending) -> Option<InboxItem> {
        self.deliver_pending_within(from, pending, MAILBOX_PATIENCE)
            .await
    }

    /// [`Relay::deliver_pending`], waiting at most `patience` for room.
    pub(crate) async fn deliver_pending_within(
        &self,
        from: &Entry,
        pending: Pending,
        patience: std::time::Duration,
    ) -> Option<InboxItem> {
        let Pending {
            mut target,
            mut item,
            to,
        } = pending;
        let len = item.payload_len() as u64;
        let reason = loop {
            let mailbox = match &target {
                Some(target) => &target.mailbox,
                None => &from.parent_inbox,
            };
            match mailbox.push_wait(item, patience).await {
                Ok(()) => return None,
                Err((PushError::Full, _)) => break UndeliverableReason::MailboxFull,
                Err((PushError::Closed, _)) => break UndeliverableReason::RecipientExited,
                // The name moved while the sender waited: on to the new one.
                Err((PushError::Moved, back)) => match target.and_then(|t| t.successor()) {
                    Some(next) => {
                        target = Some(next);
                        item = back;
                    }
                    None => break UndeliverableReason::RecipientExited,
                },
            }
        };
        Some(InboxItem::Undeliverable {
            to,
            reason,
            payload_len: len,
        })
    }

    /// Report refusals (once per sender and recipient) on `sink`.
    pub fn report_refusals(&self, sink: tokio::sync::mpsc::Sender<Refusal>) {
        self.inner.refusals.report_to(sink);
    }

    /// Send from the parent to any address (Node cluster's primary sending
    /// to a worker, or to all of them).
    ///
    /// # Errors
    ///
    /// When no live guest has the address, or its mailbox is full (for a
    /// broadcast: when any member's is).
    pub fn send_from_parent_to(&self, to: &Address, payload: Vec<u8>) -> Result<(), SendError> {
        let targets = resolve(&self.read(), to);
        if targets.is_empty() {
            return Err(SendError::Unknown(to.clone()));
        }
        // One payload, shared by every member of a broadcast.
        let payload = Bytes::from(payload);
        for target in targets {
            self.parent_send(&target, payload.clone())?;
        }
        Ok(())
    }

    /// Queue a message from the parent for guest `to`.
    ///
    /// # Errors
    ///
    /// When the guest has exited, its mailbox is full or the message is too large.
    pub fn send_from_parent(&self, to: &Arc<Entry>, payload: Vec<u8>) -> Result<(), SendError> {
        self.parent_send(to, Bytes::from(payload))
    }

    fn parent_send(&self, to: &Arc<Entry>, payload: Bytes) -> Result<(), SendError> {
        if payload.len() as u64 > to.max_message_size {
            return Err(SendError::TooLarge {
                len: payload.len(),
                limit: to.max_message_size,
            });
        }
        let item = Item::Message {
            from: GuestId::PARENT,
            from_name: Some("parent".to_owned()),
            request: None,
            payload,
            seq: None,
        };
        let (to, pushed) = push_to(to, item);
        pushed.map_err(|(err, _)| match err {
            PushError::Full => SendError::MailboxFull(to.mailbox.len()),
            PushError::Closed | PushError::Moved => SendError::Exited,
        })
    }

    /// `watcher` monitors the guest called `name`. Returns the `Down` notice
    /// to give at once when no such guest is alive, or when the watcher may
    /// not talk to it (then nothing about the target is revealed).
    pub fn monitor(&self, watcher: &Entry, name: &str) -> Option<InboxItem> {
        let down = |reason: &str| {
            Some(InboxItem::Down {
                id: GuestId(0),
                name: Some(bounded_name(name)),
                reason: reason.to_owned(),
            })
        };
        let mut table = self.write();
        let target = table.names.get(name).copied();
        let resolved: Vec<Arc<Entry>> = target
            .and_then(|id| table.guests.get(&id).cloned())
            .into_iter()
            .collect();
        if !policy::allows(watcher, &Address::Name(name.to_owned()), &resolved) {
            return down("not allowed");
        }
        match target {
            Some(target) => {
                table.monitors.entry(target).or_default().insert(watcher.id);
                None
            }
            None if table.exited_names.contains_key(name) => down("already exited"),
            None => down("no such guest"),
        }
    }

    /// The guest `id` has ended for `reason`: make it unreachable, bounce
    /// what was still waiting for it, fail the calls it was to answer, and
    /// tell its monitors.
    pub async fn unregister(&self, id: GuestId, reason: &str) {
        let (entry, watchers) = {
            let mut table = self.write();
            let Some(entry) = table.guests.remove(&id) else {
                return;
            };
            // A name that has moved on to a newer instance stays with it.
            if let Some(name) = &entry.name
                && table.names.get(name) == Some(&id)
            {
                table.names.remove(name);
                table.exited_names.insert(name.clone(), reason.to_owned());
            }
            if let Some(group) = &entry.group
                && let Some(g) = table.groups.get_mut(group)
            {
                g.members.retain(|m| *m != id);
                if g.members.is_empty() {
                    table.groups.remove(group);
                }
            }
            for watchers in table.monitors.values_mut() {
                watchers.remove(&id);
            }
            let watchers = table.monitors.remove(&id).unwrap_or_default();
            (entry, watchers)
        };

        self.inner.refusals.forget(id, entry.name.clone());
        // Messages the guest never received go back to their senders (a
        // request's caller hears below, from its call).
        let never_delivered = entry
            .mailbox
            .close_and_drain()
            .into_iter()
            .filter_map(|item| match item {
                Item::Message {
                    from,
                    request: None,
                    payload,
                    seq,
                    ..
                } => Some((from, payload.len() as u64, seq)),
                _ => None,
            });
        self.return_to_senders(&entry, never_delivered);
        entry.parent_inbox.close();
        self.calls_ended_with(id, reason);

        self.local_changed(&entry, Some(reason));
        let down = InboxItem::Down {
            id,
            name: entry.name.clone(),
            reason: reason.to_owned(),
        };
        for watcher in watchers {
            if let Some(w) = self.entry(watcher) {
                self.notify(&w.mailbox, down.clone());
            }
        }
    }

    /// Swap: give `old`'s name, group membership and monitors to the
    /// standby `new`, atomically. The messages the host holds for `old` move
    /// to `new`'s mailbox in their order (calls among them now await
    /// `new`'s reply), and any message that reaches `old` from now on goes
    /// on to `new` behind them; `old` keeps its notices and the answers to
    /// its own calls, and finishes what it was delivered. Returns how many
    /// messages moved.
    pub fn switch(&self, old: &Arc<Entry>, new: &Arc<Entry>) -> usize {
        self.switch_to(old, new, false)
    }

    /// [`Relay::switch`], the moved messages queued ahead of what `new`
    /// holds, or `behind` it (a guest moving here from another host: what
    /// its old host sends on was sent first).
    pub(crate) fn switch_to(&self, old: &Arc<Entry>, new: &Arc<Entry>, behind: bool) -> usize {
        let mut table = self.write();
        *old.successor.lock().unwrap_or_else(|e| e.into_inner()) = Some(new.clone());
        let moved = old.mailbox.move_messages();
        for item in &moved {
            if let Item::Message {
                request: Some(request),
                ..
            } = item
            {
                self.inner.calls.repoint(*request, old.id, new.id);
            }
        }
        let count = moved.len();
        new.mailbox.take_moved(moved, behind);
        if let Some(name) = &old.name {
            table.names.insert(name.clone(), new.id);
        }
        if let Some(group) = &old.group
            && let Some(g) = table.groups.get_mut(group)
        {
            for member in &mut g.members {
                if *member == old.id {
                    *member = new.id;
                }
            }
        }
        if let Some(watchers) = table.monitors.remove(&old.id) {
            table.monitors.entry(new.id).or_default().extend(watchers);
        }
        drop(table);
        self.local_changed(new, None);
        count
    }

    /// Tell the senders of messages `recipient` will never take (by sender,
    /// length and number, oldest first) that they came back: `recipient
    /// exited`. A message from another host goes back to that host as a
    /// number ([`Settled::Returned`]): it builds the notice itself. Never
    /// waits; a notice that finds no room is dropped and counted.
    pub fn return_to_senders(
        &self,
        recipient: &Entry,
        messages: impl IntoIterator<Item = (GuestId, u64, Seq)>,
    ) {
        for (from, len, seq) in messages {
            if let Some(number) = seq {
                self.settled_remote(
                    &number,
                    Settled::Returned(UndeliverableReason::RecipientExited),
                );
                continue;
            }
            let notice = InboxItem::Undeliverable {
                to: Address::Id(recipient.id),
                reason: UndeliverableReason::RecipientExited,
                payload_len: len,
            };
            if from == GuestId::PARENT {
                self.notify(&recipient.parent_inbox, notice);
            } else if let Some(sender) = self.entry(from) {
                self.notify(&sender.mailbox, notice);
            } else {
                // The sender has ended too: nobody is left to tell.
            }
        }
    }

    /// Queue a notice without waiting: a guest that does not read its own
    /// mailbox must not hold up the host. A notice that finds no room is
    /// dropped and counted ([`Relay::dropped_notices`]).
    pub fn notify(&self, mailbox: &Mailbox, notice: impl Into<Item>) {
        if mailbox.try_push_notice(notice).is_err() {
            self.inner.dropped_notices.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Notices dropped because their guest's mailbox had no room (or had
    /// closed), in all.
    pub fn dropped_notices(&self) -> u64 {
        self.inner.dropped_notices.load(Ordering::Relaxed)
    }

    /// The live guest `id`.
    pub fn entry(&self, id: GuestId) -> Option<Arc<Entry>> {
        self.read().guests.get(&id).cloned()
    }

    /// The live guest called `name`.
    pub fn lookup(&self, name: &str) -> Option<Arc<Entry>> {
        let table = self.read();
        table
            .names
            .get(name)
            .and_then(|id| table.guests.get(id))
            .cloned()
    }

    /// How many guests are live.
    pub fn len(&self) -> usize {
        self.read().guests.len()
    }
}

#[cfg(test)]
mod tests {
    use super::policy::Refused;
    use super::*;

    fn reg(name: Option<&str>, group: Option<&str>) -> Registration {
        Registration {
            name: name.map(str::to_owned),
            group: group.map(str::to_owned),
            max_message_size: 1024,
            talks_to: None,
            max_cpu: None,
            standby: false,
            remote: None,
        }
    }

    #[test]
    fn the_allow_list_refuses_with_not_allowed_and_reports_once_per_pair() {
        let relay = Relay::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        relay.report_refusals(tx);
        let a = relay
            .register(Registration {
                talks_to: Some(vec!["b".into(), "w".into()]),
                ..reg(Some("a"), None)
            })
            .unwrap();
        let b = relay.register(reg(Some("b"), None)).unwrap();
        let c = relay.register(reg(Some("c"), None)).unwrap();
        let w = relay.register(reg(None, Some("w"))).unwrap();
        assert!(
            relay
                .route(&a, Address::Name("b".into()), vec![1])
                .notices
                .is_empty()
        );
        assert!(
            relay
                .route(&a, Address::Id(w.id), vec![1])
                .notices
                .is_empty()
        );
        assert!(
            relay
                .route(&a, Address::Group("w".into()), vec![1])
                .notices
                .is_empty()
        );
        assert!(relay.route(&a, Address::Parent, vec![1]).notices.is_empty());
        let refused = InboxItem::Undeliverable {
            to: Address::Name("c".into()),
            reason: UndeliverableReason::NotAllowed,
            payload_len: 1,
        };
        assert_eq!(
            relay.route(&a, Address::Name("c".into()), vec![1]).notices,
            vec![refused.clone()]
        );
        assert_eq!(
            relay.route(&a, Address::Name("c".into()), vec![1]).notices,
            vec![refused]
        );
        assert_eq!(
            relay.route(&a, Address::Id(c.id), vec![1]).notices[0],
            InboxItem::Undeliverable {
                to: Address::Id(c.id),
                reason: UndeliverableReason::NotAllowed,
                payload_len: 1
            }
        );
        assert!(c.mailbox.is_empty());
        assert_eq!(b.mailbox.len(), 1);
        // Reported once per pair: `c` by name, then `c` by id.
        assert_eq!(
            rx.try_recv().unwrap().to,
            Refused::Address(Address::Name("c".into()))
        );
        assert_eq!(
            rx.try_recv().unwrap().to,
            Refused::Address(Address::Id(c.id))
        );
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn refusals_past_the_first_64_are_summed_up_when_the_sender_ends() {
        let relay = Relay::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1000);
        relay.report_refusals(tx);
        let mut a = reg(Some("a"), None);
        a.talks_to = Some(Vec::new());
        let a = relay.register(a).unwrap();
        for i in 0..30_000 {
            let to = Address::Name(format!("n{i}"));
            assert_eq!(relay.route(&a, to, vec![1]).notices.len(), 1);
        }
        let mut reported = 0;
        while let Ok(refusal) = rx.try_recv() {
            assert!(matches!(refusal.to, Refused::Address(_)));
            reported += 1;
        }
        assert_eq!(reported, policy::REPORTED_PER_SENDER);
        relay.unregister(a.id, "exit code 0").await;
        let summary = rx.try_recv().unwrap();
        assert_eq!(summary.to, Refused::Others { sends: 30_000 - 64 });
        assert_eq!(summary.to.to_string(), "other addresses (29936 more sends)");
    }

    #[test]
    fn a_name_longer_than_any_guests_comes_back_short() {
        let relay = Relay::new();
        let a = relay.register(reg(Some("a"), None)).unwrap();
        let long = "x".repeat(1 << 20);
        let notices = relay.route(&a, Address::Name(long), vec![1]).notices;
        assert_eq!(
            notices,
            vec![InboxItem::Undeliverable {
                to: Address::Name(format!("{}…", "x".repeat(128))),
                reason: UndeliverableReason::UnknownRecipient,
                payload_len: 1
            }]
        );
    }

    fn payload_of(item: Item) -> Vec<u8> {
        match item.into_inbox() {
            Some(InboxItem::Message { payload, .. }) => payload,
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn routes_by_id_and_name_and_keeps_order() {
        let relay = Relay::new();
        let a = relay.register(reg(Some("a"), None)).unwrap();
        let b = relay.register(reg(Some("b"), None)).unwrap();
        assert!(
            relay
                .route(&a, Address::Name("b".into()), vec![1])
                .notices
                .is_empty()
        );
        assert!(
            relay
                .route(&a, Address::Id(b.id), vec![2])
                .notices
                .is_empty()
        );
        assert_eq!(payload_of(b.mailbox.try_pop().unwrap()), vec![1]);
        assert_eq!(payload_of(b.mailbox.try_pop().unwrap()), vec![2]);
    }

    #[test]
    fn names_are_unique_and_checked() {
        let relay = Relay::new();
        relay.register(reg(Some("a"), None)).unwrap();
        assert_eq!(
            relay.register(reg(Some("a"), None)).unwrap_err(),
            RegisterError::NameTaken("a".into())
        );
        assert_eq!(
            relay.register(reg(Some("a b"), None)).unwrap_err(),
            RegisterError::BadName("a b".into())
        );
    }

    #[test]
    fn group_sends_go_round_robin_and_broadcasts_reach_all() {
        let relay = Relay::new();
        let sender = relay.register(reg(None, None)).unwrap();
        let members: Vec<_> = (0..3)
            .map(|_| relay.register(reg(None, Some("w"))).unwrap())
            .collect();
        for _ in 0..30 {
            assert!(
                relay
                    .route(&sender, Address::Group("w".into()), vec![0])
                    .notices
                    .is_empty()
            );
        }
        for m in &members {
            assert_eq!(m.mailbox.len(), 10);
        }
        assert!(
            relay
                .route(&sender, Address::Broadcast("w".into()), vec![0])
                .notices
                .is_empty()
        );
        for m in &members {
            assert_eq!(m.mailbox.len(), 11);
        }
    }

    #[tokio::test]
    async fn unknown_and_exited_recipients_bounce_with_the_reason() {
        let relay = Relay::new();
        let a = relay.register(reg(Some("a"), None)).unwrap();
        let b = relay.register(reg(Some("b"), None)).unwrap();
        let notice = |to, reason| InboxItem::Undeliverable {
            to,
            reason,
            payload_len: 3,
        };
        assert_eq!(
            relay
                .route(&a, Address::Name("nobody".into()), vec![0; 3])
                .notices,
            vec![notice(
                Address::Name("nobody".into()),
                UndeliverableReason::UnknownRecipient
            )]
        );
        relay.unregister(b.id, "exit code 0").await;
        assert_eq!(
            relay
                .route(&a, Address::Name("b".into()), vec![0; 3])
                .notices,
            vec![notice(
                Address::Name("b".into()),
                UndeliverableReason::RecipientExited
            )]
        );
        assert_eq!(
            relay.route(&a, Address::Id(b.id), vec![0; 3]).notices,
            vec![notice(
                Address::Id(b.id),
                UndeliverableReason::RecipientExited
            )]
        );
        assert_eq!(
            relay
                .route(&a, Address::Id(GuestId(999)), vec![0; 3])
                .notices,
            vec![notice(
                Address::Id(GuestId(999)),
                UndeliverableReason::UnknownRecipient
            )]
        );
    }

    #[tokio::test]
    async fn a_guest_may_monitor_only_whom_it_may_talk_to() {
        let relay = Relay::new();
        let target = relay.register(reg(Some("t"), None)).unwrap();
        let mut quiet = reg(Some("q"), None);
        quiet.talks_to = Some(Vec::new());
        let quiet = relay.register(quiet).unwrap();
        let down = |reason: &str| {
            Some(InboxItem::Down {
                id: GuestId(0),
                name: Some("t".into()),
                reason: reason.into(),
            })
        };
        assert_eq!(relay.monitor(&quiet, "t"), down("not allowed"));
        // Nothing tells it whether `t` exists: the same answer either way.
        assert_eq!(
            relay.monitor(&quiet, "nobody"),
            Some(InboxItem::Down {
                id: GuestId(0),
                name: Some("nobody".into()),
                reason: "not allowed".into(),
            })
        );
        relay.unregister(target.id, "exit code 0").await;
        assert_eq!(quiet.mailbox.try_pop(), None);
    }

    #[tokio::test]
    async fn monitoring_one_guest_a_million_times_keeps_one_record() {
        let relay = Relay::new();
        let watcher = relay.register(reg(Some("w"), None)).unwrap();
        let target = relay.register(reg(Some("t"), None)).unwrap();
        for _ in 0..1_000_000 {
            assert_eq!(relay.monitor(&watcher, "t"), None);
        }
        assert_eq!(relay.read().monitors[&target.id].len(), 1);
        relay.unregister(target.id, "exit code 0").await;
        assert!(watcher.mailbox.try_pop().is_some());
        assert_eq!(watcher.mailbox.try_pop(), None, "one `down`, not a million");
    }

    #[tokio::test]
    async fn monitors_get_down_with_the_reason() {
        let relay = Relay::new();
        let watcher = relay.register(reg(Some("w"), None)).unwrap();
        let target = relay.register(reg(Some("t"), None)).unwrap();
        assert_eq!(relay.monitor(&watcher, "t"), None);
        relay.unregister(target.id, "trap: unreachable").await;
        assert_eq!(
            watcher.mailbox.try_pop().and_then(Item::into_inbox),
            Some(InboxItem::Down {
                id: target.id,
                name: Some("t".into()),
                reason: "trap: unreachable".into()
            })
        );
    }
}
