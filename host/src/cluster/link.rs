//! A proxy's link: what the relay queued for a guest of another host goes
//! out as envelopes, and the acks that come back settle each one.
//!
//! One task per proxy takes its mailbox in order, and publishes what it
//! took as letters of envelopes (as many as fit under the server's
//! `max_payload`), each letter with a reply subject of its own, without
//! waiting for the acks: at most [`WINDOW`] envelopes are unsettled per
//! proxy (their permits travel with the pending letter), so a stream is
//! bound by the window, not by the round trip, and a burst costs one NATS
//! message per letter, not per message. A letter also carries the acks
//! this host owes the other ([`super::owed`]). One task for the whole
//! bridge takes the acks (one per envelope) that come on their own, the
//! inbox those that come carried, and each settles them; the bridge's clock
//! settles what has waited [`ACK_TIMEOUT`] as of unknown outcome. An ack
//! that accepts a message does not settle it for its sender: the take
//! report does ([`super::settle`]), and the message is kept as unsettled
//! from the moment it goes out.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use wasmproc_protocol::{Address, CallError, GuestId, RequestId, UndeliverableReason};

use super::settle::{self, Sent};
use super::wire::{self, Ack, Answered, Envelope, Letter, Target};
use super::{Bridge, owed};
use crate::relay::{Entry, Item};

/// Envelopes in flight per proxy, unacknowledged.
pub const WINDOW: usize = 1024;

/// How long an ack may take before the message's fate counts as unknown.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Room kept under the server's `max_payload` for the envelope around a
/// payload (addresses, names, numbers).
pub const ENVELOPE_ROOM: usize = 1024;

/// Envelopes in one letter at most.
const LETTER: usize = 256;

/// Items taken from a proxy's mailbox at once.
const BATCH: usize = 256;
const BATCH_BYTES: usize = 4 << 20;

/// What an envelope in flight was, to settle it.
#[derive(Debug)]
enum Kind {
    /// A message, kept as unsettled under number `seq`.
    Send { seq: u64 },
    /// Call `request`'s request.
    Call { request: RequestId },
    /// An answer or a notice, for a guest of the other host.
    Other,
}

/// A letter in flight: what each of its envelopes was, in order.
#[derive(Debug)]
struct Pending {
    sent: Instant,
    node: String,
    /// The proxy whose link sent it.
    proxy: GuestId,
    kinds: Vec<Kind>,
    /// Its places in its proxy's window, given back when settled.
    _permits: OwnedSemaphorePermit,
}

/// How an envelope ended.
#[derive(Debug, Clone)]
enum Outcome {
    Ack(Ack),
    /// Nobody serves that node's inbox.
    NoResponders,
    /// No ack in time, or our connection dropped first: why.
    Unknown(&'static str),
}

/// The envelopes of one bridge in flight, by sequence number (oldest
/// first, so the overdue ones are at the front).
#[derive(Debug, Default)]
pub(super) struct Acks {
    pending: Mutex<BTreeMap<u64, Pending>>,
    next: AtomicU64,
}

impl Acks {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Settle what has waited too long, as of unknown outcome.
    pub(super) fn sweep(&self, bridge: &Arc<Bridge>, now: Instant) {
        let overdue: Vec<Pending> = {
            let mut pending = self.lock();
            let mut overdue = Vec::new();
            while let Some(entry) = pending.first_entry() {
                if now.duration_since(entry.get().sent) < ACK_TIMEOUT {
                    break;
                }
                overdue.push(entry.remove());
            }
            overdue
        };
        for pending in overdue {
            settle(
                bridge,
                pending,
                Acked::All(Outcome::Unknown("no ack in time")),
            );
        }
    }

    /// Whether a letter of `proxy` numbered below `before` that carries a
    /// message or a call is still unacked.
    fn carrying(&self, proxy: GuestId, before: u64) -> bool {
        self.lock().range(..before).any(|(_, p)| {
            p.proxy == proxy
                && p.kinds
                    .iter()
                    .any(|k| matches!(k, Kind::Send { .. } | Kind::Call { .. }))
        })
    }

    /// Our connection dropped: nothing in flight will be acked.
    pub(super) fn fail_all(&self, bridge: &Arc<Bridge>) {
        let all = std::mem::take(&mut *self.lock());
        for (_, pending) in all {
            settle(
                bridge,
                pending,
                Acked::All(Outcome::Unknown("the connection dropped")),
            );
        }
    }
}

/// One proxy's link: what its envelopes name as their recipient, how far
/// it has got, and whether it may send yet.
#[derive(Debug)]
pub(super) struct Link {
    target: Mutex<Target>,
    /// Items taken from the proxy's mailbox and handled (published, or
    /// needing no trip), in all: against the mailbox's count of items
    /// taken, whether the link holds any it has not sent.
    handled: AtomicU64,
    /// Whether it may send: the proxy of a guest moving to its node holds
    /// what it is given until the move says (see [`super::moving`]).
    open: tokio::sync::watch::Sender<bool>,
}

impl Link {
    pub(super) fn new(target: Target, open: bool) -> Arc<Link> {
        Arc::new(Link {
            target: Mutex::new(target),
            handled: AtomicU64::new(0),
            open: tokio::sync::watch::Sender::new(open),
        })
    }

    fn target(&self) -> Target {
        self.target
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Name the recipient `target` from the next batch on.
    pub(super) fn retarget(&self, target: Target) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }

    /// Let it send.
    pub(super) fn open(&self) {
        self.open.send_replace(true);
    }
}

/// Wait until `proxy`'s link has sent the first `upto` items taken from its
/// mailbox and the other host has acked every message and call among them
/// (they are in its relay then, behind anything sent before). `false` if
/// that takes longer than `limit`.
pub(super) async fn flushed(
    bridge: &Bridge,
    proxy: &Entry,
    link: &Link,
    upto: u64,
    limit: Duration,
) -> bool {
    const POLL: Duration = Duration::from_millis(1);
    let deadline = Instant::now() + limit;
    while link.handled.load(Ordering::Acquire) < upto {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    // Everything published so far has a lower number than this.
    let before = bridge.acks.next.load(Ordering::Relaxed);
    while bridge.acks.carrying(proxy.id, before) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}

/// Take `proxy`'s mailbox to `node`, in order, until the proxy is gone.
pub(super) async fn drain(bridge: Weak<Bridge>, proxy: Arc<Entry>, node: String, link: Arc<Link>) {
    let _ = link.open.subscribe().wait_for(|open| *open).await;
    let window = Arc::new(Semaphore::new(WINDOW));
    // What its senders call it: one for all its messages.
    let to = Arc::new(match &proxy.name {
        Some(name) => Address::Name(name.clone()),
        None => Address::Id(proxy.id),
    });
    let mut items = Vec::with_capacity(BATCH);
    let mut letter: Vec<(Envelope, Kind)> = Vec::with_capacity(LETTER);
    while proxy
        .mailbox
        .pop_batch(&mut items, BATCH, BATCH_BYTES)
        .await
    {
        let Some(bridge) = bridge.upgrade() else {
            return;
        };
        // What a letter may carry: the server's limit, less the room kept
        // for each envelope's own fields.
        let limit = bridge.max_payload.saturating_sub(ENVELOPE_ROOM);
        let mut size = 0;
        let (taken, target) = (items.len() as u64, link.target());
        for item in items.drain(..) {
            let sent_to = (node.as_str(), &to);
            let Some((envelope, kind)) = envelope_for(&bridge, &proxy, &target, sent_to, item)
            else {
                continue;
            };
            let len = envelope_len(&envelope);
            if !letter.is_empty() && (size + len > limit || letter.len() == LETTER) {
                if !send_letter(&bridge, (&node, proxy.id), &window, &mut letter).await {
                    return;
                }
                size = 0;
            }
            size += len;
            letter.push((envelope, kind));
        }
        if !send_letter(&bridge, (&node, proxy.id), &window, &mut letter).await {
            return;
        }
        link.handled.fetch_add(taken, Ordering::Release);
    }
}

/// About how many bytes an envelope takes in a letter.
fn envelope_len(envelope: &Envelope) -> usize {
    const FIELDS: usize = 64;
    FIELDS
        + match envelope {
            Envelope::Message { payload, from, .. } | Envelope::Call { payload, from, .. } => {
                payload.len() + from.name.as_ref().map_or(0, String::len)
            }
            Envelope::Answer {
                answer: Ok(reply), ..
            } => reply.len(),
            _ => 0,
        }
}

/// Publish the envelopes gathered in `letter` (and empty it), once the
/// window has room for them. `false` when the window is gone.
async fn send_letter(
    bridge: &Arc<Bridge>,
    (node, proxy): (&str, GuestId),
    window: &Arc<Semaphore>,
    letter: &mut Vec<(Envelope, Kind)>,
) -> bool {
    if letter.is_empty() {
        return true;
    }
    let Ok(permits) = window.clone().acquire_many_owned(letter.len() as u32).await else {
        return false;
    };
    let (envelopes, kinds) = letter.drain(..).unzip();
    publish(bridge, (node, proxy), envelopes, kinds, permits).await;
    true
}

/// The envelope that carries `item` to the guest `proxy` stands for, on
/// node `node`, which its senders call `to`. A message is numbered and
/// kept as unsettled here.
fn envelope_for(
    bridge: &Bridge,
    proxy: &Entry,
    target: &Target,
    (node, to): (&str, &Arc<Address>),
    item: Item,
) -> Option<(Envelope, Kind)> {
    let from = |id: GuestId, name: Option<String>| wire::From { id: id.0, name };
    match item {
        Item::Message {
            from: sender,
            from_name,
            request: None,
            payload,
            seq: origin,
        } => {
            let sent = Sent {
                from: sender,
                to: to.clone(),
                len: payload.len() as u64,
                origin,
            };
            let (seq, evicted) = bridge.unsettled.keep(node, sent);
            if let Some(evicted) = evicted {
                settle::evicted(bridge, node, evicted);
            }
            let envelope = Envelope::Message {
                to: target.clone(),
                from: from(sender, from_name),
                seq: seq.get(),
                payload: payload.to_vec(),
            };
            Some((envelope, Kind::Send { seq: seq.get() }))
        }
        Item::Message {
            from: sender,
            from_name,
            request: Some(request),
            payload,
            ..
        } => {
            // A call that ended while queued needs no trip.
            let deadline = bridge.relay.call_deadline(request)?;
            let left = deadline.saturating_duration_since(Instant::now());
            let envelope = Envelope::Call {
                to: target.clone(),
                from: from(sender, from_name),
                request: request.0,
                timeout_ms: (left.as_millis() as u64).max(1),
                payload: payload.to_vec(),
            };
            Some((envelope, Kind::Call { request }))
        }
        Item::Notice(item) => {
            let (_, to) = bridge.remote_of(proxy.id)?;
            Some((Envelope::Notice { to, item }, Kind::Other))
        }
        Item::Answer { call, answer } => {
            let answer = answer.map(|reply| serde_bytes::ByteBuf::from(reply.to_vec()));
            Some((
                Envelope::Answer {
                    request: call,
                    answer,
                },
                Kind::Other,
            ))
        }
        // The other host ends that call at its own deadline, the same one.
        Item::Expired(_) => None,
    }
}

async fn publish(
    bridge: &Arc<Bridge>,
    (node, proxy): (&str, GuestId),
    envelopes: Vec<Envelope>,
    kinds: Vec<Kind>,
    permits: OwnedSemaphorePermit,
) {
    let seq = bridge.acks.next.fetch_add(1, Ordering::Relaxed);
    let mut letter = Letter {
        node: bridge.config.node.clone(),
        envelopes,
        // What we owe that host rides along.
        acks: bridge.owed.take(node),
    };
    let mut payload = wire::encode(&letter);
    if payload.len() > bridge.max_payload && !letter.acks.is_empty() {
        // The acks go on their own, then.
        owed::send(bridge, std::mem::take(&mut letter.acks)).await;
        payload = wire::encode(&letter);
    }
    let pending = Pending {
        sent: Instant::now(),
        node: node.to_owned(),
        proxy,
        kinds,
        _permits: permits,
    };
    if payload.len() > bridge.max_payload {
        // The proxy's size limit and the letter's room keep payloads under
        // this; long names cannot make up the rest.
        settle(
            bridge,
            pending,
            Acked::All(Outcome::Ack(Ack::Undeliverable(
                UndeliverableReason::TooLarge,
            ))),
        );
        return;
    }
    bridge.acks.lock().insert(seq, pending);
    let reply = format!("{}.{seq}", bridge.acks_subject);
    bridge.stats.sent.fetch_add(1, Ordering::Relaxed);
    if let Err(err) = bridge
        .client
        .publish_with_reply(bridge.subjects.inbox(node), reply, payload)
        .await
    {
        tracing::warn!("wasmproc: cannot publish to node `{node}`: {err}");
        // The acks it carried go on their own, if they can.
        owed::send(bridge, letter.acks).await;
        if let Some(pending) = bridge.acks.lock().remove(&seq) {
            settle(
                bridge,
                pending,
                Acked::All(Outcome::Unknown("it could not be published")),
            );
        }
        return;
    }
    let carried = letter.acks.len() as u64;
    bridge
        .stats
        .acks_carried
        .fetch_add(carried, Ordering::Relaxed);
}

/// Take every ack that comes back, and settle its envelope.
pub(super) async fn receive_acks(bridge: Weak<Bridge>, mut acks: async_nats::Subscriber) {
    while let Some(message) = acks.next().await {
        let Some(bridge) = bridge.upgrade() else {
            return;
        };
        let token = message.subject.rsplit('.').next().unwrap_or_default();
        if token == owed::MANY {
            match wire::decode::<Vec<Answered>>(&message.payload) {
                Some(answers) => answers.into_iter().for_each(|a| answered(&bridge, a)),
                None => tracing::warn!("wasmproc: acks that are not, on {}", message.subject),
            }
            continue;
        }
        let Ok(seq) = token.parse::<u64>() else {
            continue;
        };
        let acked = if message.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            Acked::All(Outcome::NoResponders)
        } else {
            match wire::decode::<Vec<Ack>>(&message.payload) {
                Some(acks) => Acked::Each(acks),
                None => Acked::All(Outcome::Ack(Ack::Garbled)),
            }
        };
        ack(&bridge, seq, acked);
    }
}

/// Settle the letter an ack that came carried (or with others) answers,
/// if it is one of ours: a host that restarted since hears its old
/// letters' acks, which find nothing.
pub(super) fn answered(bridge: &Arc<Bridge>, answered: Answered) {
    let seq = answered
        .reply
        .strip_prefix(bridge.acks_subject.as_str())
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|seq| seq.parse::<u64>().ok());
    if let Some(seq) = seq {
        ack(bridge, seq, Acked::Each(answered.acks));
    }
}

/// Settle letter `seq` as `acked`.
fn ack(bridge: &Arc<Bridge>, seq: u64, acked: Acked) {
    // An ack after its timeout finds nothing: it was settled as unknown.
    let Some(pending) = bridge.acks.lock().remove(&seq) else {
        return;
    };
    bridge.stats.acked.fetch_add(1, Ordering::Relaxed);
    settle(bridge, pending, acked);
}

/// How a letter ended: one outcome for all its envelopes, or an ack each.
#[derive(Debug)]
enum Acked {
    All(Outcome),
    Each(Vec<Ack>),
}

/// Tell whoever is concerned how each envelope of a letter ended.
fn settle(bridge: &Arc<Bridge>, pending: Pending, acked: Acked) {
    if let Acked::All(Outcome::NoResponders) = acked {
        bridge.stats.no_responders.fetch_add(1, Ordering::Relaxed);
        // Nobody serves that node: its host is gone.
        if bridge.lock().liveness.may_judge(Instant::now()) {
            let (bridge, node) = (bridge.clone(), pending.node.clone());
            tokio::spawn(async move { bridge.lose(&node, "nobody serves its inbox").await });
        }
    }
    let Pending { node, kinds, .. } = pending;
    match acked {
        Acked::All(Outcome::Unknown(why)) => {
            // Told in one go: a letter may hold hundreds of messages.
            let mut unknown = Vec::new();
            for kind in kinds {
                if let Kind::Send { seq } = kind
                    // Settled already if its take report came first.
                    && let Some(sent) = bridge.unsettled.settle(&node, seq)
                {
                    unknown.push(sent);
                }
            }
            settle::unknown(bridge, &node, unknown, why);
        }
        Acked::All(outcome) => {
            for kind in kinds {
                settle_one(bridge, &node, kind, outcome.clone());
            }
        }
        Acked::Each(acks) => {
            // A host that answers fewer acks than envelopes is garbled.
            let mut acks = acks.into_iter();
            for kind in kinds {
                let ack = acks.next().unwrap_or(Ack::Garbled);
                settle_one(bridge, &node, kind, Outcome::Ack(ack));
            }
        }
    }
}

/// Tell whoever is concerned how one envelope ended (the unknown outcomes
/// of messages are told by [`settle`], a letter at a time).
fn settle_one(bridge: &Bridge, node: &str, kind: Kind, outcome: Outcome) {
    let relay = &bridge.relay;
    match kind {
        Kind::Send { seq } => {
            let reason = match outcome {
                // In the recipient's mailbox: its take report settles it.
                Outcome::Ack(Ack::Accepted) => return,
                Outcome::Ack(Ack::Undeliverable(reason)) => reason,
                Outcome::Ack(Ack::CallFailed(_) | Ack::Garbled) | Outcome::NoResponders => {
                    UndeliverableReason::UnknownRecipient
                }
                Outcome::Unknown(why) => {
                    if let Some(sent) = bridge.unsettled.settle(node, seq) {
                        settle::unknown(bridge, node, vec![sent], why);
                    }
                    return;
                }
            };
            if let Some(sent) = bridge.unsettled.settle(node, seq) {
                settle::tell(bridge, &sent, reason);
            }
        }
        Kind::Call { request } => {
            let error = match outcome {
                Outcome::Ack(Ack::Accepted) | Outcome::Unknown(_) => return,
                Outcome::Ack(Ack::CallFailed(error)) => error,
                Outcome::Ack(Ack::Undeliverable(_) | Ack::Garbled) => CallError::UnknownRecipient,
                Outcome::NoResponders => CallError::CalleeExited("host lost".to_owned()),
            };
            relay.fail_call(request, error);
        }
        Kind::Other => {}
    }
}
