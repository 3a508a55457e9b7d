//! A proxy's link: what the relay queued for a guest of another host goes
//! out as envelopes, and the acks that come back settle each one.
//!
//! One task per proxy takes its mailbox in order and publishes each
//! envelope with a reply subject of its own, without waiting for the ack:
//! at most [`WINDOW`] are unsettled per proxy (the permit travels with the
//! pending record), so a stream is bound by the window, not by the round
//! trip. One task for the whole bridge takes the acks and settles them;
//! the bridge's clock settles what has waited [`ACK_TIMEOUT`] as of
//! unknown outcome.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use wasmproc_protocol::{Address, CallError, GuestId, InboxItem, RequestId, UndeliverableReason};

use super::Bridge;
use super::inbox::Letter;
use super::wire::{self, Ack, Envelope, Target};
use crate::relay::{Entry, Item};

/// Envelopes in flight per proxy, unacknowledged.
pub const WINDOW: usize = 256;

/// How long an ack may take before the message's fate counts as unknown.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Room kept under the server's `max_payload` for the envelope around a
/// payload (addresses, names, numbers).
pub const ENVELOPE_ROOM: usize = 1024;

/// Items taken from a proxy's mailbox at once.
const BATCH: usize = 256;
const BATCH_BYTES: usize = 4 << 20;

/// What an envelope in flight was, to settle it.
#[derive(Debug)]
enum Kind {
    /// A message from guest `from` to the address `to` (as it knows it).
    Send {
        from: GuestId,
        to: Address,
        len: u64,
    },
    /// Call `request`'s request.
    Call { request: RequestId },
    /// An answer or a notice, for a guest of the other host.
    Other,
}

#[derive(Debug)]
struct Pending {
    sent: Instant,
    node: String,
    kind: Kind,
    /// A place in its proxy's window, given back when settled.
    _permit: OwnedSemaphorePermit,
}

/// How an envelope ended.
#[derive(Debug)]
enum Outcome {
    Ack(Ack),
    /// Nobody serves that node's inbox.
    NoResponders,
    /// No ack in time, or our connection dropped first.
    Unknown,
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
            settle(bridge, pending, Outcome::Unknown);
        }
    }

    /// Our connection dropped: nothing in flight will be acked.
    pub(super) fn fail_all(&self, bridge: &Arc<Bridge>) {
        let all = std::mem::take(&mut *self.lock());
        for (_, pending) in all {
            settle(bridge, pending, Outcome::Unknown);
        }
    }
}

/// Take `proxy`'s mailbox to `node`, in order, until the proxy is gone.
pub(super) async fn drain(bridge: Weak<Bridge>, proxy: Arc<Entry>, node: String, target: Target) {
    let window = Arc::new(Semaphore::new(WINDOW));
    let mut items = Vec::with_capacity(BATCH);
    while proxy
        .mailbox
        .pop_batch(&mut items, BATCH, BATCH_BYTES)
        .await
    {
        let Some(bridge) = bridge.upgrade() else {
            return;
        };
        for item in items.drain(..) {
            let Some((envelope, kind)) = envelope_for(&bridge, &proxy, &target, item) else {
                continue;
            };
            let Ok(permit) = window.clone().acquire_owned().await else {
                return;
            };
            publish(&bridge, &node, envelope, kind, permit).await;
        }
    }
}

/// The envelope that carries `item` to the guest `proxy` stands for.
fn envelope_for(
    bridge: &Bridge,
    proxy: &Entry,
    target: &Target,
    item: Item,
) -> Option<(Envelope, Kind)> {
    let from = |id: GuestId, name: Option<String>| wire::From { id: id.0, name };
    match item {
        Item::Message {
            from: sender,
            from_name,
            request: None,
            payload,
        } => {
            let to = match &proxy.name {
                Some(name) => Address::Name(name.clone()),
                None => Address::Id(proxy.id),
            };
            let kind = Kind::Send {
                from: sender,
                to,
                len: payload.len() as u64,
            };
            let envelope = Envelope::Message {
                to: target.clone(),
                from: from(sender, from_name),
                payload: payload.to_vec(),
            };
            Some((envelope, kind))
        }
        Item::Message {
            from: sender,
            from_name,
            request: Some(request),
            payload,
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
    node: &str,
    envelope: Envelope,
    kind: Kind,
    permit: OwnedSemaphorePermit,
) {
    let seq = bridge.acks.next.fetch_add(1, Ordering::Relaxed);
    let letter = Letter {
        node: bridge.config.node.clone(),
        envelope,
    };
    let payload = wire::encode(&letter);
    let pending = Pending {
        sent: Instant::now(),
        node: node.to_owned(),
        kind,
        _permit: permit,
    };
    if payload.len() > bridge.max_payload {
        // The proxy's size limit keeps payloads under this; names cannot
        // make up the rest.
        settle(
            bridge,
            pending,
            Outcome::Ack(Ack::Undeliverable(UndeliverableReason::TooLarge)),
        );
        return;
    }
    bridge.acks.lock().insert(seq, pending);
    let reply = format!(
        "{}.{seq}",
        bridge.subjects.acks(&bridge.config.node, bridge.instance)
    );
    bridge.stats.sent.fetch_add(1, Ordering::Relaxed);
    if let Err(err) = bridge
        .client
        .publish_with_reply(bridge.subjects.inbox(node), reply, payload)
        .await
    {
        tracing::warn!("wasmproc: cannot publish to node `{node}`: {err}");
        if let Some(pending) = bridge.acks.lock().remove(&seq) {
            settle(bridge, pending, Outcome::Unknown);
        }
    }
}

/// Take every ack that comes back, and settle its envelope.
pub(super) async fn receive_acks(bridge: Weak<Bridge>, mut acks: async_nats::Subscriber) {
    while let Some(message) = acks.next().await {
        let Some(bridge) = bridge.upgrade() else {
            return;
        };
        let Some(seq) = message
            .subject
            .rsplit('.')
            .next()
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        // An ack after its timeout finds nothing: it was settled as unknown.
        let Some(pending) = bridge.acks.lock().remove(&seq) else {
            continue;
        };
        bridge.stats.acked.fetch_add(1, Ordering::Relaxed);
        let outcome = if message.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            Outcome::NoResponders
        } else {
            Outcome::Ack(wire::decode::<Ack>(&message.payload).unwrap_or(Ack::Garbled))
        };
        settle(&bridge, pending, outcome);
    }
}

/// Tell whoever is concerned how an envelope ended.
fn settle(bridge: &Arc<Bridge>, pending: Pending, outcome: Outcome) {
    let relay = &bridge.relay;
    if let Outcome::NoResponders = outcome {
        bridge.stats.no_responders.fetch_add(1, Ordering::Relaxed);
        // Nobody serves that node: its host is gone.
        if bridge.lock().liveness.may_judge(Instant::now()) {
            let (bridge, node) = (bridge.clone(), pending.node.clone());
            tokio::spawn(async move { bridge.lose(&node, "nobody serves its inbox").await });
        }
    }
    match pending.kind {
        Kind::Send { from, to, len } => {
            let reason = match outcome {
                Outcome::Ack(Ack::Accepted) => return,
                Outcome::Ack(Ack::Undeliverable(reason)) => reason,
                Outcome::Ack(Ack::CallFailed(_) | Ack::Garbled) | Outcome::NoResponders => {
                    UndeliverableReason::UnknownRecipient
                }
                Outcome::Unknown => {
                    bridge.stats.unknown_outcome.fetch_add(1, Ordering::Relaxed);
                    if let Some(sender) = relay.entry(from) {
                        sender
                            .counters
                            .unknown_outcome
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::warn!(
                        "wasmproc: a message from {from} to {to} on node `{}`: unknown outcome (no ack within {ACK_TIMEOUT:?})",
                        pending.node
                    );
                    return;
                }
            };
            let notice = InboxItem::Undeliverable {
                to,
                reason,
                payload_len: len,
            };
            match relay.entry(from) {
                Some(sender) => relay.notify(&sender.mailbox, notice),
                None if from == GuestId::PARENT => {
                    tracing::warn!("wasmproc: the app's message came back: {notice:?}");
                }
                // The sender has ended: nobody is left to tell.
                None => {}
            }
        }
        Kind::Call { request } => {
            let error = match outcome {
                Outcome::Ack(Ack::Accepted) | Outcome::Unknown => return,
                Outcome::Ack(Ack::CallFailed(error)) => error,
                Outcome::Ack(Ack::Undeliverable(_) | Ack::Garbled) => CallError::UnknownRecipient,
                Outcome::NoResponders => CallError::CalleeExited("host lost".to_owned()),
            };
            relay.fail_call(request, error);
        }
        Kind::Other => {}
    }
}
