//! Taken or returned, across hosts: the receiving host tells the sending
//! host what became of each of its messages, and the sending host keeps
//! what it has not heard of, to return it if the other host is lost.
//!
//! An ack says "in the recipient's mailbox", not "taken". So every message
//! envelope carries a number, and the sending host keeps, per peer, what
//! each number was ([`Sent`]: sender, address, length; never the payload)
//! from the moment it goes out ([`Unsettled`]). The receiving host's relay
//! notes each number when its guest takes that message, or when it comes
//! back (the recipient ended first); the bridge there sends those numbers
//! home in batches ([`report`]: at most one NATS message per peer every
//! [`FLUSH`], however many messages were taken). The sending host forgets a
//! number when it hears it taken, tells the sender when it hears it
//! returned, and when the peer is lost, or its own connection drops, gives
//! every number it still keeps back to its sender as `unknown outcome`:
//! that message may have been taken, with the word of it in flight.
//!
//! Reports are acknowledged: each goes out as a NATS message with a reply
//! subject, the sending host answers it, and one not answered within
//! [`REPORT_ACK`] goes out again (up to [`REPORT_TRIES`] times, while that
//! host is a peer and our connection is up; numbers are idempotent, so a
//! report heard twice settles nothing twice). So a report NATS drops on
//! the way (a slow consumer, a connection that dropped with it in a
//! buffer) is sent again rather than leaving its messages unsettled while
//! both hosts live.
//!
//! # Bounds
//!
//! What a peer holds unsettled is bounded there (each guest's mailbox, its
//! runner's inbox), so the numbers kept here are too, but by the sum over
//! that peer's guests; [`UNSETTLED`] caps them per peer. Past the cap the
//! oldest is given back as `unknown outcome` (and counted): its sender
//! hears that this host no longer knows, rather than the host growing
//! without bound. On the receiving side the relay keeps at most
//! `SETTLEMENTS` (in the relay's `remote`) numbers waiting for a flush.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use wasmproc_protocol::{Address, GuestId, InboxItem, UndeliverableReason};

use super::Bridge;
use super::wire::{self, Report};
use crate::relay::{Seq, Settled};

/// Numbers kept per peer at most, unsettled.
pub const UNSETTLED: usize = 1 << 18;

/// How long the receiving side gathers settlements before it sends them.
pub const FLUSH: Duration = Duration::from_millis(5);

/// Numbers in one report at most (about 10 bytes each: far under the
/// smallest `max_payload` a server is run with).
const REPORT: usize = 8 * 1024;

/// How long a report may go unanswered before it is sent again.
pub const REPORT_ACK: Duration = Duration::from_secs(1);

/// How many times a report is sent at most.
pub const REPORT_TRIES: u32 = 10;

/// Reports sent and not answered yet, at most (about 80 KiB each at
/// worst); past it the oldest is given up, and counted.
const OUTBOX: usize = 256;

/// A report sent and not answered yet.
#[derive(Debug)]
struct Unanswered {
    node: Arc<str>,
    payload: bytes::Bytes,
    sent: tokio::time::Instant,
    tries: u32,
}

/// The reports this host sent and has not heard answered, by number.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    unanswered: Mutex<BTreeMap<u64, Unanswered>>,
    next: AtomicU64,
    /// Reports given up: unanswered after every try, or past the bound.
    pub given_up: AtomicU64,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Unanswered>> {
        self.unanswered.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Report `id` was answered.
    pub(super) fn answered(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// `node` is lost: it hears nothing more.
    pub(super) fn forget(&self, node: &str) {
        self.lock().retain(|_, r| &*r.node != node);
    }

    /// Reports waiting for an answer now.
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Send `payload`, a report for `node`, and keep it until it is answered.
async fn send_report(bridge: &Bridge, node: &Arc<str>, payload: bytes::Bytes) {
    let outbox = &bridge.reports;
    let id = outbox.next.fetch_add(1, Ordering::Relaxed);
    {
        let mut unanswered = outbox.lock();
        if unanswered.len() >= OUTBOX {
            unanswered.pop_first();
            outbox.given_up.fetch_add(1, Ordering::Relaxed);
        }
        unanswered.insert(
            id,
            Unanswered {
                node: node.clone(),
                payload: payload.clone(),
                sent: tokio::time::Instant::now(),
                tries: 1,
            },
        );
    }
    publish_report(bridge, node, id, payload).await;
}

async fn publish_report(bridge: &Bridge, node: &str, id: u64, payload: bytes::Bytes) {
    let reply = format!(
        "{}.{id}",
        bridge
            .subjects
            .report_acks(&bridge.config.node, bridge.instance)
    );
    let _ = bridge
        .client
        .publish_with_reply(bridge.subjects.settled(node), reply, payload)
        .await;
}

/// Send again what has gone unanswered for [`REPORT_ACK`] (the bridge's
/// clock calls this while connected), and give up on what has had every
/// try or whose host is no longer a peer.
pub(super) async fn resend(bridge: &Bridge, now: tokio::time::Instant) {
    let peers = bridge.lock().liveness.nodes();
    let again: Vec<(u64, Arc<str>, bytes::Bytes)> = {
        let outbox = &bridge.reports;
        let mut unanswered = outbox.lock();
        let before = unanswered.len();
        // A host not heard from yet may be about to beat: it gets one
        // timeout's grace.
        unanswered.retain(|_, r| {
            r.tries < REPORT_TRIES
                && (peers.iter().any(|p| **p == *r.node) || now.duration_since(r.sent) < REPORT_ACK)
        });
        let gone = before - unanswered.len();
        if gone > 0 {
            outbox.given_up.fetch_add(gone as u64, Ordering::Relaxed);
            tracing::warn!(
                "wasmproc: gave up on {gone} take report(s) nobody answered; their messages stay unsettled on their hosts until this host is lost there"
            );
        }
        unanswered
            .iter_mut()
            .filter(|(_, r)| now.duration_since(r.sent) >= REPORT_ACK)
            .map(|(id, r)| {
                r.sent = now;
                r.tries += 1;
                (*id, r.node.clone(), r.payload.clone())
            })
            .collect()
    };
    for (id, node, payload) in again {
        publish_report(bridge, &node, id, payload).await;
    }
}

/// Take every answer to our reports.
pub(super) async fn hear_answers(bridge: Weak<Bridge>, mut answers: async_nats::Subscriber) {
    while let Some(answer) = answers.next().await {
        let Some(bridge) = bridge.upgrade() else {
            return;
        };
        if let Some(id) = answer
            .subject
            .rsplit('.')
            .next()
            .and_then(|s| s.parse::<u64>().ok())
        {
            bridge.reports.answered(id);
        }
    }
}

/// A message sent to another host and not settled there yet: enough to
/// tell its sender.
#[derive(Debug, Clone)]
pub(super) struct Sent {
    pub from: GuestId,
    /// The address it was sent to, as its sender knows it (one per proxy,
    /// shared by all its messages).
    pub to: Arc<Address>,
    pub len: u64,
    /// Set when this host passed the message on (its guest moved on to
    /// another host): the number of its sender's host for it, which hears
    /// what became of it from here.
    pub origin: Seq,
}

/// Per peer, the messages sent there and not settled, by number.
#[derive(Debug)]
pub(super) struct Unsettled {
    peers: Mutex<HashMap<String, BTreeMap<u64, Sent>>>,
    next: AtomicU64,
}

impl Unsettled {
    /// Numbers start at a random point of 2^40 (short on the wire): a host
    /// that comes back under the same node name does not reuse the numbers
    /// of the one before it.
    pub(super) fn new(random: u64) -> Unsettled {
        Unsettled {
            peers: Mutex::default(),
            next: AtomicU64::new((random >> 24).max(1)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeMap<u64, Sent>>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number `sent`, a message for `node`, and keep it. Returns its number,
    /// and the oldest kept one if the bound pushed it out.
    pub(super) fn keep(&self, node: &str, sent: Sent) -> (NonZeroU64, Option<Sent>) {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let seq = NonZeroU64::new(seq).unwrap_or(NonZeroU64::MIN);
        let mut peers = self.lock();
        let kept = match peers.get_mut(node) {
            Some(kept) => kept,
            None => peers.entry(node.to_owned()).or_default(),
        };
        let evicted = if kept.len() >= UNSETTLED {
            kept.pop_first().map(|(_, sent)| sent)
        } else {
            None
        };
        kept.insert(seq.get(), sent);
        (seq, evicted)
    }

    /// Number `seq` of `node` is settled: what it was, if still kept.
    pub(super) fn settle(&self, node: &str, seq: u64) -> Option<Sent> {
        self.lock().get_mut(node)?.remove(&seq)
    }

    /// Numbers `seqs` of `node` were taken there: forget them. Returns how
    /// many were still kept (a report heard twice, or after the message
    /// was settled as of unknown outcome, finds nothing), and those among
    /// them this host passed on, whose senders' hosts are to hear it.
    pub(super) fn forget(&self, node: &str, seqs: &[u64]) -> (u64, Vec<Sent>) {
        let (mut kept_here, mut passed_on) = (0, Vec::new());
        if let Some(kept) = self.lock().get_mut(node) {
            for seq in seqs {
                let Some(sent) = kept.remove(seq) else {
                    continue;
                };
                kept_here += 1;
                if sent.origin.is_some() {
                    passed_on.push(sent);
                }
            }
        }
        (kept_here, passed_on)
    }

    /// Everything kept for `node` (every node: `None`), taken.
    pub(super) fn take(&self, node: Option<&str>) -> Vec<Sent> {
        let mut peers = self.lock();
        let taken: Vec<BTreeMap<u64, Sent>> = match node {
            Some(node) => peers.remove(node).into_iter().collect(),
            None => peers.drain().map(|(_, kept)| kept).collect(),
        };
        taken.into_iter().flat_map(BTreeMap::into_values).collect()
    }

    /// Everything kept for `node` up to number `last`, taken.
    pub(super) fn take_up_to(&self, node: &str, last: u64) -> Vec<Sent> {
        let mut peers = self.lock();
        let Some(kept) = peers.get_mut(node) else {
            return Vec::new();
        };
        let later = kept.split_off(&(last + 1));
        let taken = std::mem::replace(kept, later);
        if kept.is_empty() {
            peers.remove(node);
        }
        taken.into_values().collect()
    }

    /// The peers we keep numbers for.
    pub(super) fn nodes(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// The last number given so far.
    pub(super) fn last(&self) -> u64 {
        self.next.load(Ordering::Relaxed).saturating_sub(1)
    }

    /// How many numbers are kept, over every peer.
    pub(super) fn len(&self) -> usize {
        self.lock().values().map(BTreeMap::len).sum()
    }
}

/// Tell `sent`'s sender that it came back, for `reason` (a message this
/// host passed on: its sender's host, as a number).
pub(super) fn tell(bridge: &Bridge, sent: &Sent, reason: UndeliverableReason) {
    let relay = &bridge.relay;
    if let Some(origin) = &sent.origin {
        relay.settled_remote(origin, Settled::Returned(reason));
        return;
    }
    let notice = InboxItem::Undeliverable {
        to: (*sent.to).clone(),
        reason,
        payload_len: sent.len,
    };
    match relay.entry(sent.from) {
        Some(sender) => relay.notify(&sender.mailbox, notice),
        None if sent.from == GuestId::PARENT => {
            tracing::warn!("wasmproc: the app's message came back: {notice:?}");
        }
        // The sender has ended: nobody is left to tell.
        None => {}
    }
}

/// Messages sent to `node` whose fate nobody will tell: back to their
/// senders as `unknown outcome`, counted (for each sender, and for the
/// bridge) and logged once for the lot. A guest built against WIT 0.2 is
/// not shown the item; the count is where it shows for it.
pub(super) fn unknown(bridge: &Bridge, node: &str, sents: Vec<Sent>, why: &str) {
    if sents.is_empty() {
        return;
    }
    let count = sents.len();
    tell_unknown(bridge, sents);
    tracing::warn!(
        "wasmproc: {count} message(s) to node `{node}` have an unknown outcome ({why}): returned to their senders as such",
    );
}

/// The oldest message kept for `node` was pushed out by the bound: back to
/// its sender as of unknown outcome, logged once per power of two.
pub(super) fn evicted(bridge: &Bridge, node: &str, sent: Sent) {
    tell_unknown(bridge, vec![sent]);
    let evicted = bridge.stats.evicted.fetch_add(1, Ordering::Relaxed) + 1;
    if evicted.is_power_of_two() {
        tracing::warn!(
            "wasmproc: more than {UNSETTLED} messages to node `{node}` unsettled: the oldest go back to their senders as of unknown outcome ({evicted} so far)"
        );
    }
}

/// Count `sents` as of unknown outcome and tell their senders.
fn tell_unknown(bridge: &Bridge, sents: Vec<Sent>) {
    bridge
        .stats
        .unknown_outcome
        .fetch_add(sents.len() as u64, Ordering::Relaxed);
    for sent in &sents {
        if let Some(sender) = bridge.relay.entry(sent.from) {
            sender
                .counters
                .unknown_outcome
                .fetch_add(1, Ordering::Relaxed);
        }
        tell(bridge, sent, UndeliverableReason::UnknownOutcome);
    }
}

/// The receiving side: send each peer the numbers of its messages that
/// were taken here or came back, in batches, until the bridge is gone.
pub(super) async fn report(bridge: Weak<Bridge>) {
    let Some(strong) = bridge.upgrade() else {
        return;
    };
    let (relay, shutdown) = (strong.relay.clone(), strong.shutdown.clone());
    drop(strong);
    loop {
        let mut settled = tokio::select! {
            () = shutdown.cancelled() => return,
            settled = relay.settlements() => settled,
        };
        // Gather what comes in the next moments into the same reports.
        tokio::time::sleep(FLUSH).await;
        settled.extend(relay.take_settlements());
        let Some(bridge) = bridge.upgrade() else {
            return;
        };
        if !bridge.lock().liveness.is_connected() {
            // Kept for when the connection is back: a peer that did not
            // judge this host lost meanwhile is owed them.
            drop(bridge);
            relay.keep_settlements(settled);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(OFFLINE_POLL) => continue,
            }
        }
        send_reports(&bridge, settled).await;
    }
}

/// How often reports kept while our connection is down look for it.
const OFFLINE_POLL: Duration = Duration::from_millis(50);

/// Send what waits now at once (a host about to leave).
pub(super) async fn flush(bridge: &Bridge) {
    let settled = bridge.relay.take_settlements();
    send_reports(bridge, settled).await;
}

/// Group `settled` by the sender's node and send each node its report.
async fn send_reports(bridge: &Bridge, settled: Vec<(Arc<str>, NonZeroU64, Settled)>) {
    if settled.is_empty() {
        return;
    }
    let mut reports: HashMap<Arc<str>, Report> = HashMap::new();
    // Also when the sender's proxy here has gone meanwhile: a host that
    // was lost hears nothing (it counts what it sent as of unknown outcome
    // itself), one that is there hears what it is owed.
    for (node, seq, settled) in settled {
        let report = reports.entry(node).or_insert_with(|| Report {
            node: bridge.config.node.clone(),
            taken: Vec::new(),
            returned: Vec::new(),
        });
        match settled {
            Settled::Taken => report.taken.push(seq.get()),
            Settled::Returned(reason) => report.returned.push((seq.get(), reason)),
        }
    }
    for (node, report) in reports {
        for part in report.split(REPORT) {
            send_report(bridge, &node, wire::encode(&part)).await;
        }
    }
}

/// The sending side: hear the reports about our messages, and settle each.
pub(super) async fn hear(bridge: Weak<Bridge>, mut reports: async_nats::Subscriber) {
    while let Some(message) = reports.next().await {
        let Some(bridge) = bridge.upgrade() else {
            return;
        };
        let Some(report) = wire::decode::<Report>(&message.payload) else {
            tracing::warn!(
                "wasmproc: a take report that is not, on {}",
                message.subject
            );
            continue;
        };
        // Heard: its host need not send it again (whatever it says, which
        // is settled below).
        if let Some(reply) = message.reply {
            let _ = bridge.client.publish(reply, bytes::Bytes::new()).await;
        }
        let unsettled = &bridge.unsettled;
        let (mut settled, passed_on) = unsettled.forget(&report.node, &report.taken);
        for sent in passed_on {
            if let Some(origin) = &sent.origin {
                bridge.relay.settled_remote(origin, Settled::Taken);
            }
        }
        for (seq, reason) in report.returned {
            // Gone already when it was settled as of unknown outcome.
            if let Some(sent) = unsettled.settle(&report.node, seq) {
                settled += 1;
                tell(&bridge, &sent, reason);
            }
        }
        bridge.stats.settled.fetch_add(settled, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(from: u64) -> Sent {
        Sent {
            from: GuestId(from),
            to: Arc::new(Address::Name("r".into())),
            len: 1,
            origin: None,
        }
    }

    #[test]
    fn numbers_are_kept_per_peer_until_settled() {
        let u = Unsettled::new(0);
        let (a, _) = u.keep("b", sent(1));
        let (b, _) = u.keep("b", sent(2));
        let (c, _) = u.keep("c", sent(3));
        assert!(a < b && b < c);
        assert_eq!(u.len(), 3);
        assert_eq!(u.settle("b", a.get()).map(|s| s.from), Some(GuestId(1)));
        assert!(u.settle("b", a.get()).is_none(), "settled once");
        assert!(u.settle("c", b.get()).is_none(), "per peer");
        let rest: Vec<GuestId> = u.take(Some("b")).into_iter().map(|s| s.from).collect();
        assert_eq!(rest, [GuestId(2)]);
        assert_eq!(u.take(None).len(), 1);
        assert_eq!(u.len(), 0);
    }

    #[test]
    fn the_bound_pushes_out_the_oldest_and_up_to_leaves_the_later() {
        let u = Unsettled::new(0);
        let first = u.keep("b", sent(0)).0;
        for i in 1..UNSETTLED as u64 {
            assert!(u.keep("b", sent(i)).1.is_none());
        }
        let (_, evicted) = u.keep("b", sent(99));
        assert_eq!(evicted.map(|s| s.from), Some(GuestId(0)));
        assert!(u.settle("b", first.get()).is_none());
        let last = u.last();
        assert!(u.keep("b", sent(100)).1.is_some(), "still at the bound");
        assert_eq!(u.take_up_to("b", last).len(), UNSETTLED - 1);
        assert_eq!(u.len(), 1);
    }
}
