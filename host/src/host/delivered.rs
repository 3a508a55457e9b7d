//! What the host has delivered to a runner and not yet seen taken.
//!
//! The host owns every message until the recipient's guest takes it. The
//! session's writer records each item it writes to the runner, in order;
//! the runner's `Taken { count }` frames say how many of them the guest has
//! taken so far. When the runner ends, whatever is left here was in the
//! pipe or in the runner's inbox: each message goes back to its sender as
//! `undeliverable: recipient exited`. Payloads are not kept: a notice
//! carries only the length.
//!
//! A message from a guest of another host also keeps that host's number
//! for it: its take is told to the relay ([`Relay::settled_remote`]), for
//! the cluster bridge to tell the sending host, and so is its return.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use wasmproc_protocol::GuestId;

use crate::relay::{Counters, Item, Relay, Seq, Settled};

/// A delivered message's sender, length and number (from another host);
/// `None` for a notice.
type Record = Option<(GuestId, u64, Seq)>;

/// The delivered-but-not-taken items of one runner.
#[derive(Debug)]
pub(crate) struct Delivered {
    state: Mutex<State>,
    /// Told the takes of messages from other hosts.
    relay: Relay,
}

#[derive(Debug, Default)]
struct State {
    /// Oldest first: the runner takes items in the order they were written.
    pending: VecDeque<Record>,
    /// Items recorded, in all.
    delivered: u64,
    /// Items the runner has said were taken, in all.
    taken: u64,
}

impl State {
    /// Publish how many delivered items are not yet taken.
    fn count(&self, counters: &Counters) {
        counters.outstanding.store(
            self.pending.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

impl Delivered {
    pub(crate) fn new(relay: Relay) -> Delivered {
        Delivered {
            state: Mutex::default(),
            relay,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record items about to be written to the runner, in order. Only
    /// inbox items count (a call's answer goes to the call, not the inbox);
    /// a request is recorded without its sender, whose call hears instead.
    pub(crate) fn record<'a>(
        &self,
        items: impl IntoIterator<Item = &'a Item>,
        counters: &Counters,
    ) {
        let mut state = self.lock();
        for item in items {
            let record = match item {
                Item::Message {
                    from,
                    request: None,
                    payload,
                    seq,
                    ..
                } => Some((*from, payload.len() as u64, seq.clone())),
                Item::Message { .. } | Item::Notice(_) => None,
                Item::Answer { .. } | Item::Expired(_) => continue,
            };
            state.delivered += 1;
            state.pending.push_back(record);
        }
        state.count(counters);
    }

    /// The runner says `count` items have been taken in all.
    ///
    /// # Errors
    ///
    /// A protocol violation when the count goes back or is beyond what was
    /// delivered.
    pub(crate) fn taken(&self, count: u64, counters: &Counters) -> Result<(), String> {
        let mut state = self.lock();
        if count < state.taken {
            return Err(format!(
                "the taken count went back from {} to {count}",
                state.taken
            ));
        }
        if count > state.delivered {
            return Err(format!(
                "{count} items taken, but only {} were delivered",
                state.delivered
            ));
        }
        let newly = (count - state.taken) as usize;
        for (_, _, number) in state.pending.drain(..newly).flatten() {
            if let Some(number) = number {
                self.relay.settled_remote(&number, Settled::Taken);
            }
        }
        state.taken = count;
        state.count(counters);
        Ok(())
    }

    /// Everything never taken, in order: the senders, lengths and numbers
    /// of the messages (notices are dropped: nobody is waiting for them).
    pub(crate) fn drain(&self, counters: &Counters) -> Vec<(GuestId, u64, Seq)> {
        let mut state = self.lock();
        let messages: Vec<(GuestId, u64, Seq)> = state.pending.drain(..).flatten().collect();
        state.taken = state.delivered;
        state.count(counters);
        counters
            .returned
            .fetch_add(messages.len() as u64, std::sync::atomic::Ordering::Relaxed);
        messages
    }
}

#[cfg(test)]
mod tests {
    use wasmproc_protocol::InboxItem;

    use super::*;

    fn message(from: u64, len: usize) -> Item {
        Item::Message {
            from: GuestId(from),
            from_name: None,
            request: None,
            payload: vec![0; len].into(),
            seq: None,
        }
    }

    #[test]
    fn what_was_not_taken_is_returned_in_order() {
        let d = Delivered::new(Relay::new());
        let c = Counters::default();
        let items = [
            message(1, 10),
            Item::Notice(InboxItem::Shutdown),
            message(2, 20),
            message(3, 30),
        ];
        d.record(&items[..2], &c);
        d.record(&items[2..], &c);
        d.taken(1, &c).unwrap();
        assert_eq!(
            d.drain(&c),
            vec![(GuestId(2), 20, None), (GuestId(3), 30, None)]
        );
        assert_eq!(d.drain(&c), Vec::new());
    }

    #[test]
    fn counts_that_go_back_or_run_ahead_are_violations() {
        let d = Delivered::new(Relay::new());
        let c = Counters::default();
        d.record(&[message(1, 1), message(1, 1)], &c);
        d.taken(2, &c).unwrap();
        assert_eq!(
            d.taken(1, &c),
            Err("the taken count went back from 2 to 1".to_owned())
        );
        assert_eq!(
            d.taken(3, &c),
            Err("3 items taken, but only 2 were delivered".to_owned())
        );
        assert_eq!(d.drain(&c), Vec::new());
    }
}
