//! This host's inbox on NATS: envelopes from the other hosts, handled one
//! at a time in the order they came (which keeps each sender's order; a
//! message for a full mailbox waits for room only so long, per letter and
//! while the inbox has a backlog: [`handle`], [`BACKLOG`]), each
//! answered with its [`Ack`] (at once, or carried by a letter going back:
//! [`super::owed`]), and the acks of our letters that came carried.
//!
//! A sender on another host is represented here by its proxy, so the
//! recipient sees a `from` it can answer (by id or by name) and the relay's
//! accounting works unchanged. A message keeps its sending host's number
//! on its way here, so that its take, or its return when the recipient
//! never takes it, goes home as that number ([`super::settle`]).

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use wasmproc_protocol::{Address, GuestId, InboxItem, RequestId, UndeliverableReason};

use super::wire::{self, Ack, Envelope, Letter, Target};
use super::{Bridge, link, owed};
use crate::relay::{Entry, Number};

/// How long the inbox may go without catching up (without finding no
/// letter waiting) before a letter's messages and calls no longer wait
/// for room in full mailboxes, so that a backlog of letters for slow
/// recipients, each waiting its own second, cannot make the acks of the
/// later ones late. An ack carried by a letter waits out the backlog of
/// both inboxes (the one that owes it, the one it goes to): twice this,
/// and the 1 ms an ack may wait for a letter, stay well under the
/// senders' ack timeout.
pub const BACKLOG: Duration = Duration::from_secs(1);

pub(super) async fn serve(bridge: Weak<Bridge>, mut inbox: async_nats::Subscriber) {
    // Since when letters have been waiting for this task without a break.
    let mut busy_since: Option<tokio::time::Instant> = None;
    loop {
        let message = match inbox.next().now_or_never() {
            Some(message) => message,
            None => {
                busy_since = None;
                inbox.next().await
            }
        };
        let Some(message) = message else {
            return;
        };
        let since = *busy_since.get_or_insert_with(tokio::time::Instant::now);
        let Some(bridge) = bridge.upgrade() else {
            return;
        };
        let (node, acks) = match wire::decode::<Letter>(&message.payload) {
            Some(Letter {
                node,
                envelopes,
                acks: carried,
            }) => {
                for answered in carried {
                    link::answered(&bridge, answered);
                }
                let mut acks = Vec::with_capacity(envelopes.len());
                let mut patience =
                    crate::relay::MAILBOX_PATIENCE.min(BACKLOG.saturating_sub(since.elapsed()));
                let home: Arc<str> = Arc::from(node.as_str());
                for envelope in envelopes {
                    acks.push(handle(&bridge, &home, envelope, &mut patience).await);
                }
                (Some(node), acks)
            }
            None => {
                tracing::warn!("wasmproc: envelopes that are not, on {}", message.subject);
                (None, vec![Ack::Garbled])
            }
        };
        let Some(reply) = message.reply else {
            continue;
        };
        // A host's acks may wait for a letter going back (not once this
        // host shuts down: its guests may take a while to end, and its
        // letters then stop); anyone else's request is answered now.
        match node {
            Some(node) if bridge.subjects.is_acks(&reply) && !bridge.shutdown.is_cancelled() => {
                let now = bridge.owed.owe(&node, reply.to_string(), acks);
                if !now.is_empty() {
                    owed::send(&bridge, now).await;
                }
            }
            _ => {
                let _ = bridge.client.publish(reply, wire::encode(&acks)).await;
            }
        }
    }
}

/// The guest an envelope from `node` is for: a local one, or one this host
/// passes the message on to (keeping its number): by name, a guest that
/// moved from here to a third node; by id, the proxy a message this host
/// passed on came from, which the recipient answers (see
/// [`super::moving`]).
fn recipient(bridge: &Bridge, node: &str, to: &Target) -> Result<Arc<Entry>, UndeliverableReason> {
    let found = match to {
        // Never back to where it came from by name: that host's name led
        // here.
        Target::Name(name) => bridge
            .relay
            .lookup(name)
            .filter(|entry| entry.remote.as_deref() != Some(node)),
        Target::Id(id) => bridge.relay.entry(GuestId(*id)),
    };
    found
        .filter(|entry| entry.remote.as_deref() != Some(bridge.config.node.as_str()))
        .ok_or(UndeliverableReason::RecipientExited)
}

/// Handle one envelope of a letter. A message (or call) for a full mailbox
/// waits for room out of `patience`, what the whole letter may wait: once that is
/// spent, the rest of the letter's messages for full mailboxes come back
/// `mailbox full` at once, so the letter's acks come well within the
/// sender's ack timeout however slowly a recipient takes (and this inbox,
/// which serves every guest here, is not held up by one).
async fn handle(
    bridge: &Arc<Bridge>,
    home: &Arc<str>,
    envelope: Envelope,
    patience: &mut Duration,
) -> Ack {
    let (relay, node) = (&bridge.relay, &**home);
    match envelope {
        Envelope::Message {
            to,
            from,
            seq,
            payload,
        } => {
            let target = match recipient(bridge, node, &to) {
                Ok(target) => target,
                Err(reason) => return Ack::Undeliverable(reason),
            };
            let name = from.name.clone().filter(|_| from.id != GuestId::PARENT.0);
            let Some(sender) = sender_proxy(bridge, node, from) else {
                return Ack::Garbled;
            };
            let number = std::num::NonZeroU64::new(seq).map(|seq| Number {
                seq,
                node: home.clone(),
            });
            let numbered = (number, sender.name.as_ref().or(name.as_ref()));
            let routed = relay.route_numbered(&sender, Address::Id(target.id), payload, numbered);
            if let Some(InboxItem::Undeliverable { reason, .. }) = routed.notices.first() {
                return Ack::Undeliverable(*reason);
            }
            for pending in routed.waiting {
                if patience.is_zero() {
                    return Ack::Undeliverable(UndeliverableReason::MailboxFull);
                }
                let waited = tokio::time::Instant::now();
                let delivered = relay
                    .deliver_pending_within(&sender, pending, *patience)
                    .await;
                *patience = patience.saturating_sub(waited.elapsed());
                if let Some(InboxItem::Undeliverable { reason, .. }) = delivered {
                    return Ack::Undeliverable(reason);
                }
            }
            Ack::Accepted
        }
        Envelope::Call {
            to,
            from,
            request,
            timeout_ms,
            payload,
        } => {
            let target = match recipient(bridge, node, &to) {
                Ok(target) => target,
                Err(_) => {
                    return Ack::CallFailed(wasmproc_protocol::CallError::CalleeExited(
                        "it has exited".to_owned(),
                    ));
                }
            };
            let Some(caller) = sender_proxy(bridge, node, from) else {
                return Ack::Garbled;
            };
            // The caller's call number here is its call's id at home.
            let waited = tokio::time::Instant::now();
            let placed = relay
                .call_from_guest(
                    &caller,
                    &Address::Id(target.id),
                    request,
                    Duration::from_millis(timeout_ms),
                    payload,
                    *patience,
                )
                .await;
            *patience = patience.saturating_sub(waited.elapsed());
            match placed {
                Ok(()) => Ack::Accepted,
                Err(error) => Ack::CallFailed(error),
            }
        }
        Envelope::Answer { request, answer } => {
            let answer = answer.map(|reply| bytes::Bytes::from(reply.into_vec()));
            relay.answer_remote(RequestId(request), answer);
            Ack::Accepted
        }
        Envelope::Notice { to, item } => {
            let Some(guest) = relay.entry(GuestId(to)).filter(|e| e.remote.is_none()) else {
                // Its sender has ended: nobody is left to tell.
                return Ack::Accepted;
            };
            relay.notify(&guest.mailbox, translate(bridge, node, item));
            Ack::Accepted
        }
        Envelope::Ping => Ack::Accepted,
    }
}

/// The proxy that stands for `node`'s guest `from` here.
fn sender_proxy(bridge: &Arc<Bridge>, node: &str, from: wire::From) -> Option<Arc<Entry>> {
    if let Some(proxy) = bridge.proxy_of(node, from.id) {
        return Some(proxy);
    }
    // Not announced yet (its host's next beat will): made now, so that a
    // reply finds it. The parent of that host gets no name here, nor a
    // guest whose name leads elsewhere here (a message that host passed on
    // from a third one, or from here).
    let name = from
        .name
        .filter(|name| from.id != GuestId::PARENT.0 && bridge.relay.lookup(name).is_none());
    bridge.proxy(
        node,
        &wire::Guest {
            id: from.id,
            name,
            group: None,
            max_message_size: u64::MAX,
        },
    )
}

/// A notice from `node` names that node's guests by its ids: name them by
/// their proxies here.
fn translate(bridge: &Bridge, node: &str, item: InboxItem) -> InboxItem {
    match item {
        InboxItem::Undeliverable {
            to: Address::Id(id),
            reason,
            payload_len,
        } => {
            let to = match bridge.proxy_of(node, id.0) {
                Some(proxy) => Address::Id(proxy.id),
                None => Address::Id(GuestId(0)),
            };
            InboxItem::Undeliverable {
                to,
                reason,
                payload_len,
            }
        }
        other => other,
    }
}
