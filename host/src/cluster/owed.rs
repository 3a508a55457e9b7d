//! The acks this host owes other hosts' letters, held a moment so that a
//! letter going back carries them.
//!
//! Every letter is answered with an [`Ack`] per envelope, but an ack that
//! only says "accepted" changes nothing for the sender's guest: it frees
//! places in the sender's window, and the take report settles the message
//! ([`super::settle`]). So such an ack waits here up to [`ACK_DELAY`]: a
//! letter to that node in the meantime (the answer to a request, the next
//! of a conversation) carries it, which saves a NATS message each way of a
//! round trip; what no letter took goes out on its own after the delay,
//! several letters' acks to one host in one NATS message. An ack that
//! refuses anything goes out at once, as does everything once
//! [`ACK_HOLD`] envelopes wait for one host (a stream without answers
//! keeps its window moving), every answer to a reply subject that is not
//! a host's acks (a probe, another program's request), and every ack once
//! this host shuts down.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Bridge;
use super::wire::{self, Ack, Answered};

/// How long an "accepted" ack may wait for a letter going its way.
pub const ACK_DELAY: Duration = Duration::from_millis(1);

/// Envelopes whose acks may wait for one host at most.
pub const ACK_HOLD: usize = 256;

/// The token after a host's acks subject for several letters' acks.
pub const MANY: &str = "many";

/// Acks owed to one node.
#[derive(Debug)]
struct Owing {
    answers: Vec<Answered>,
    envelopes: usize,
    /// When its oldest ack was owed.
    since: Instant,
}

impl Owing {
    /// Everything owed, taken.
    fn drain(&mut self) -> Vec<Answered> {
        self.envelopes = 0;
        std::mem::take(&mut self.answers)
    }
}

/// Owed acks by the node whose letters they answer.
#[derive(Debug, Default)]
pub(super) struct Owed {
    nodes: Mutex<HashMap<String, Owing>>,
    /// Wakes the flusher: something is owed.
    wake: Arc<Notify>,
}

impl Owed {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Owing>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Owe `node` the acks of its letter answered at `reply`. What must go
    /// at once (the acks refuse something, or too many wait) is given
    /// back, to be sent now.
    pub(super) fn owe(&self, node: &str, reply: String, acks: Vec<Ack>) -> Vec<Answered> {
        let answer = Answered { reply, acks };
        if answer.acks.iter().any(|ack| *ack != Ack::Accepted) {
            return vec![answer];
        }
        let mut nodes = self.lock();
        let owing = nodes.entry(node.to_owned()).or_insert_with(|| Owing {
            answers: Vec::new(),
            envelopes: 0,
            since: Instant::now(),
        });
        if owing.answers.is_empty() {
            owing.since = Instant::now();
            self.wake.notify_one();
        }
        owing.envelopes += answer.acks.len();
        owing.answers.push(answer);
        if owing.envelopes >= ACK_HOLD {
            return owing.drain();
        }
        Vec::new()
    }

    /// Everything owed to `node`, for a letter going there.
    pub(super) fn take(&self, node: &str) -> Vec<Answered> {
        self.lock()
            .get_mut(node)
            .map(Owing::drain)
            .unwrap_or_default()
    }

    /// Everything owed, to every node (this host leaves).
    pub(super) fn take_all(&self) -> Vec<Answered> {
        self.lock().values_mut().flat_map(Owing::drain).collect()
    }

    /// Forget what is owed to a node that is gone.
    pub(super) fn forget(&self, node: &str) {
        self.lock().remove(node);
    }

    /// What has waited [`ACK_DELAY`] by `now`, and when the next of the
    /// rest is due.
    fn due(&self, now: Instant) -> (Vec<Answered>, Option<Instant>) {
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for owing in self.lock().values_mut() {
            if owing.answers.is_empty() {
                continue;
            }
            let at = owing.since + ACK_DELAY;
            if at <= now {
                due.append(&mut owing.drain());
            } else {
                next = Some(next.map_or(at, |next| next.min(at)));
            }
        }
        (due, next)
    }
}

/// Send what no letter took once it is due, until the bridge is gone.
pub(super) async fn flush(bridge: Weak<Bridge>) {
    loop {
        let Some(strong) = bridge.upgrade() else {
            return;
        };
        let (shutdown, wake) = (strong.shutdown.clone(), strong.owed.wake.clone());
        drop(strong);
        tokio::select! {
            () = shutdown.cancelled() => {
                // From here the inbox answers at once: what waits goes now.
                if let Some(bridge) = bridge.upgrade() {
                    send(&bridge, bridge.owed.take_all()).await;
                }
                return;
            }
            () = wake.notified() => {}
        }
        let mut at = Instant::now() + ACK_DELAY;
        loop {
            tokio::time::sleep_until(at).await;
            let Some(bridge) = bridge.upgrade() else {
                return;
            };
            let (due, next) = bridge.owed.due(Instant::now());
            send(&bridge, due).await;
            match next {
                Some(next) => at = next,
                None => break,
            }
        }
    }
}

/// Send acks on their own: one letter's to its reply subject, several
/// letters' to one host in one message (to that host's acks subject's
/// [`MANY`]).
pub(super) async fn send(bridge: &Bridge, answers: Vec<Answered>) {
    let alone = answers.len() as u64;
    bridge.stats.acks_alone.fetch_add(alone, Ordering::Relaxed);
    let mut by_host: HashMap<&str, Vec<&Answered>> = HashMap::new();
    for answer in &answers {
        let host = answer.reply.rsplit_once('.').map_or("", |(host, _)| host);
        by_host.entry(host).or_default().push(answer);
    }
    for (host, answers) in by_host {
        let (subject, payload) = match answers.as_slice() {
            [one] => (one.reply.clone(), wire::encode(&one.acks)),
            many => (format!("{host}.{MANY}"), wire::encode(&many)),
        };
        let _ = bridge.client.publish(subject, payload).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmproc_protocol::UndeliverableReason;

    fn acks(n: usize) -> Vec<Ack> {
        vec![Ack::Accepted; n]
    }

    #[test]
    fn accepting_acks_wait_and_ride_on_the_next_letter_to_their_node() {
        let owed = Owed::default();
        assert!(owed.owe("a", "wp.x.ack.a-1.7".into(), acks(3)).is_empty());
        assert!(owed.owe("b", "wp.x.ack.b-2.1".into(), acks(1)).is_empty());
        assert!(owed.owe("a", "wp.x.ack.a-1.8".into(), acks(2)).is_empty());
        let carried: Vec<String> = owed.take("a").into_iter().map(|a| a.reply).collect();
        assert_eq!(carried, ["wp.x.ack.a-1.7", "wp.x.ack.a-1.8"]);
        assert!(owed.take("a").is_empty());
        assert!(owed.owe("c", "wp.x.ack.c-3.4".into(), acks(1)).is_empty());
        assert_eq!(owed.take("b").len(), 1);
        assert!(owed.take("d").is_empty());
        assert_eq!(owed.take_all().len(), 1);
        assert!(owed.take("c").is_empty());
    }

    #[test]
    fn a_refusal_goes_at_once() {
        let owed = Owed::default();
        let refused = vec![
            Ack::Accepted,
            Ack::Undeliverable(UndeliverableReason::MailboxFull),
        ];
        let now = owed.owe("a", "wp.x.ack.a-1.7".into(), refused.clone());
        assert_eq!(
            now,
            [Answered {
                reply: "wp.x.ack.a-1.7".into(),
                acks: refused
            }]
        );
        assert!(owed.take("a").is_empty());
    }

    #[test]
    fn a_hold_of_acks_goes_at_once_when_full() {
        let owed = Owed::default();
        let mut letters = 0;
        let mut now = Vec::new();
        while now.is_empty() {
            now = owed.owe("a", format!("wp.x.ack.a-1.{letters}"), acks(100));
            letters += 1;
        }
        // 100 + 100 + 100 ≥ ACK_HOLD: the third letter's ack sends all three.
        assert_eq!(letters, 3);
        assert_eq!(now.len(), 3);
        assert!(owed.take("a").is_empty());
    }

    #[test]
    fn what_no_letter_took_is_due_after_the_delay() {
        let owed = Owed::default();
        let start = Instant::now();
        owed.owe("a", "wp.x.ack.a-1.1".into(), acks(1));
        let (due, next) = owed.due(start);
        assert!(due.is_empty());
        let next = next.expect("a time it is due");
        assert!(next >= start + ACK_DELAY && next <= Instant::now() + ACK_DELAY);
        let (due, next) = owed.due(next);
        assert_eq!(due.len(), 1);
        assert_eq!(next, None);
        assert!(owed.take("a").is_empty());
    }
}
