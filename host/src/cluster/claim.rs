//! Claiming a node name, so that two hosts never run one node, even when
//! they start at the same moment.
//!
//! A joining host first answers claims of its node itself (as *claiming*),
//! then asks who else answers, and listens for [`WINDOW`]. It gives up the
//! name when a host that has it already (*settled*) answers, or when
//! another claimant with a lower instance number answers or asks within
//! its window; otherwise it settles, and from then on answers every claim
//! as settled. Whichever of two simultaneous claimants hears the other
//! first, exactly one keeps the name: the decision and the switch to
//! *settled* happen under one lock with the answers, so a claim either
//! reaches the first host while it still claims (and the lower number
//! wins) or after it has settled (and it keeps the name).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;

/// How long a claimant listens for other claimants.
pub(super) const WINDOW: Duration = Duration::from_millis(200);

/// Where our claim stands.
#[derive(Debug, Default)]
struct State {
    settled: bool,
    /// A claimant with a lower number asked while we claimed: it wins.
    outranked: bool,
}

/// Our claim of a node, answered by [`answer`] until the process ends.
#[derive(Debug, Clone)]
pub(super) struct Claim {
    instance: u64,
    state: Arc<Mutex<State>>,
}

/// What one answer said.
fn parse(payload: &[u8]) -> Option<(u64, bool)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut words = text.split(' ');
    let instance = words.next()?.parse().ok()?;
    // A host that says no more has the name (the older answer).
    let settled = words.next() != Some("claiming");
    Some((instance, settled))
}

impl Claim {
    pub(super) fn new(instance: u64) -> Claim {
        Claim {
            instance,
            state: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ask who else answers for `subject` (our own answers are subscribed
    /// already) and decide: `true` when the name is ours.
    pub(super) async fn decide(
        &self,
        client: &async_nats::Client,
        subject: String,
    ) -> Result<bool, async_nats::SubscribeError> {
        let inbox = client.new_inbox();
        let mut answers = client.subscribe(inbox.clone()).await?;
        let asked = client
            .publish_with_reply(subject, inbox, self.instance.to_string().into())
            .await;
        if asked.is_err() {
            // Nobody heard the question: nobody can claim it meanwhile
            // either without hearing ours.
            tracing::debug!("could not ask who claims the node");
        }
        let deadline = tokio::time::Instant::now() + WINDOW;
        let mut beaten = false;
        while let Ok(Some(answer)) = tokio::time::timeout_at(deadline, answers.next()).await {
            let Some((instance, settled)) = parse(&answer.payload) else {
                continue;
            };
            if instance != self.instance && (settled || instance < self.instance) {
                beaten = true;
            }
        }
        let mut state = self.lock();
        if beaten || state.outranked {
            return Ok(false);
        }
        state.settled = true;
        Ok(true)
    }
}

/// Answer every claim of our node with where our claim stands.
pub(super) async fn answer(
    client: async_nats::Client,
    mut claims: async_nats::Subscriber,
    claim: Claim,
) {
    while let Some(asked) = claims.next().await {
        let asker: Option<u64> = std::str::from_utf8(&asked.payload)
            .ok()
            .and_then(|t| t.parse().ok());
        let word = {
            let mut state = claim.lock();
            if !state.settled && asker.is_some_and(|a| a < claim.instance) {
                state.outranked = true;
            }
            if state.settled { "settled" } else { "claiming" }
        };
        if let Some(reply) = asked.reply {
            let answer = format!("{} {word}", claim.instance);
            let _ = client.publish(reply, answer.into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_say_who_and_whether_they_hold_the_name() {
        assert_eq!(parse(b"42 claiming"), Some((42, false)));
        assert_eq!(parse(b"42 settled"), Some((42, true)));
        assert_eq!(parse(b"42"), Some((42, true)), "an answer of old");
        assert_eq!(parse(b"x"), None);
    }
}
