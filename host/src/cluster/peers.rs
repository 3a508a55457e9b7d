//! Which peers are up: the heartbeat rule, kept apart from NATS so that it
//! can be tested with made-up clocks.
//!
//! A peer is lost after [`MISSED_BEATS`] beats without one from it, but
//! only while our own connection has been up for that long, and only while
//! we hear our own beats come back: a host whose own link to NATS is down,
//! just came back, or is half-open (the server stopped answering and the
//! socket has not noticed yet) hears no beats from anyone, and must not
//! conclude that everyone else died.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::wire::{BEAT, MISSED_BEATS};

/// What a beat told about its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// A peer not heard of before (or again after it was lost).
    New,
    /// A peer already known.
    Known,
    /// A different process than the one known by that node name: two
    /// hosts claim one node.
    Conflict { known: u64 },
}

#[derive(Debug)]
struct Peer {
    instance: u64,
    last_beat: Instant,
}

/// The peers heard from, and since when our own connection is up.
#[derive(Debug, Default)]
pub struct Liveness {
    connected_since: Option<Instant>,
    /// When our own last beat came back to us through the server.
    heard_self: Option<Instant>,
    peers: HashMap<String, Peer>,
}

impl Liveness {
    /// Our connection is up from `now` (the first time, or again).
    pub fn connected(&mut self, now: Instant) {
        self.connected_since = Some(now);
    }

    /// Our connection dropped: every peer is unreachable. Returns them.
    pub fn disconnected(&mut self) -> Vec<String> {
        self.connected_since = None;
        self.peers.drain().map(|(node, _)| node).collect()
    }

    pub fn is_connected(&self) -> bool {
        self.connected_since.is_some()
    }

    /// Our own beat came back through the server.
    pub fn heard_self(&mut self, now: Instant) {
        self.heard_self = Some(now);
    }

    /// Whether our connection has been up long enough, and still carries
    /// our own beats, to call a silent peer lost.
    pub fn may_judge(&self, now: Instant) -> bool {
        let up_long_enough = self
            .connected_since
            .is_some_and(|since| now.duration_since(since) >= BEAT * MISSED_BEATS);
        let hears_itself = self
            .heard_self
            .is_some_and(|at| now.duration_since(at) < BEAT * 2);
        up_long_enough && hears_itself
    }

    /// A beat from `node`'s process `instance`.
    pub fn beat(&mut self, node: &str, instance: u64, now: Instant) -> Heard {
        match self.peers.get_mut(node) {
            Some(peer) if peer.instance == instance => {
                peer.last_beat = now;
                Heard::Known
            }
            Some(peer) => Heard::Conflict {
                known: peer.instance,
            },
            None => {
                self.peers.insert(
                    node.to_owned(),
                    Peer {
                        instance,
                        last_beat: now,
                    },
                );
                Heard::New
            }
        }
    }

    /// `node` is gone (it said so, or it was lost).
    pub fn forget(&mut self, node: &str) -> bool {
        self.peers.remove(node).is_some()
    }

    /// The peers lost by `now`: silent for [`MISSED_BEATS`] beats while
    /// we could have heard them. They are forgotten.
    pub fn lost(&mut self, now: Instant) -> Vec<String> {
        if !self.may_judge(now) {
            return Vec::new();
        }
        let silent = BEAT * MISSED_BEATS;
        let lost: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| now.duration_since(p.last_beat) >= silent)
            .map(|(node, _)| node.clone())
            .collect();
        for node in &lost {
            self.peers.remove(node);
        }
        lost
    }

    /// The peers whose beat is late (more than one and a half beats), to
    /// be asked whether they are there at all.
    pub fn late(&self, now: Instant) -> Vec<String> {
        let late = BEAT + BEAT / 2;
        self.peers
            .iter()
            .filter(|(_, p)| now.duration_since(p.last_beat) >= late)
            .map(|(node, _)| node.clone())
            .collect()
    }

    /// The peers known now.
    pub fn nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self.peers.keys().cloned().collect();
        nodes.sort();
        nodes
    }
}

/// How long after `since` something happened, for messages.
pub fn ago(since: Instant) -> Duration {
    Instant::now().duration_since(since)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_peer_is_lost_after_three_beats() {
        let t0 = Instant::now();
        let mut live = Liveness::default();
        live.connected(t0);
        assert_eq!(live.beat("b", 1, t0), Heard::New);
        assert_eq!(live.beat("b", 1, t0 + BEAT), Heard::Known);
        live.heard_self(t0 + BEAT * 3);
        assert!(live.lost(t0 + BEAT * 3).is_empty(), "two beats missed");
        assert_eq!(live.late(t0 + BEAT * 3), ["b"]);
        live.heard_self(t0 + BEAT * 4);
        assert_eq!(live.lost(t0 + BEAT * 4), ["b"]);
        assert!(live.nodes().is_empty());
    }

    #[test]
    fn nobody_is_lost_while_our_own_connection_is_young_or_down() {
        let t0 = Instant::now();
        let mut live = Liveness::default();
        live.connected(t0);
        live.beat("b", 1, t0);
        // Our connection drops and comes back: b's beats were not heard,
        // and that says nothing about b until we have listened 3 beats.
        assert_eq!(live.disconnected(), ["b"]);
        assert!(live.lost(t0 + BEAT * 10).is_empty());
        live.connected(t0 + BEAT * 10);
        live.beat("b", 1, t0 + BEAT * 10);
        live.heard_self(t0 + BEAT * 12);
        assert!(live.lost(t0 + BEAT * 12).is_empty());
        assert!(!live.may_judge(t0 + BEAT * 12));
        live.heard_self(t0 + BEAT * 13);
        assert_eq!(live.lost(t0 + BEAT * 13), ["b"]);
    }

    #[test]
    fn nobody_is_lost_while_our_own_beats_do_not_come_back() {
        // Half-open: the connection looks up, but nothing comes through.
        let t0 = Instant::now();
        let mut live = Liveness::default();
        live.connected(t0);
        live.beat("b", 1, t0 + BEAT * 5);
        live.heard_self(t0 + BEAT * 5);
        assert!(
            live.lost(t0 + BEAT * 9).is_empty(),
            "we did not hear ourselves"
        );
        live.heard_self(t0 + BEAT * 9);
        assert_eq!(live.lost(t0 + BEAT * 9), ["b"]);
    }

    #[test]
    fn two_processes_claiming_one_node_conflict() {
        let t0 = Instant::now();
        let mut live = Liveness::default();
        live.connected(t0);
        live.beat("a", 7, t0);
        assert_eq!(live.beat("a", 8, t0), Heard::Conflict { known: 7 });
    }
}
