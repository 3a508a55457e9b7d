//! The app as a node of a cluster: the whole app's `ps`, the bridge's
//! numbers, and the instances placed on nodes that have not joined.

use std::time::Duration;

use serde_json::{Value, json};

use super::live::{Answer, Live};

impl Live {
    /// The manifest's instances placed on nodes that have not joined.
    pub fn missing_nodes(&self) -> Vec<(String, String)> {
        let Some(cluster) = self.cluster() else {
            return Vec::new();
        };
        let placements = self.placements();
        let peers = cluster.peers();
        placements
            .iter()
            .filter(|(_, node)| node != cluster.node() && !peers.contains(node))
            .cloned()
            .collect()
    }

    /// `ps --cluster`: every node's guests (each node asked in turn), the
    /// nodes that do not answer, and the instances placed on nodes that
    /// have not joined.
    pub async fn ps_cluster(&self) -> Answer {
        let mut answer = self.ps()?;
        let Some(cluster) = self.cluster() else {
            return Ok(answer);
        };
        let mut rows: Vec<Value> = answer["guests"].as_array().cloned().unwrap_or_default();
        let mut silent = Vec::new();
        for node in cluster.peers() {
            let asked = cluster
                .forward(&node, &json!({"verb": "ps"}), Duration::from_secs(2))
                .await;
            match asked {
                Ok(theirs) if theirs["ok"] == true => {
                    rows.extend(theirs["guests"].as_array().cloned().unwrap_or_default());
                }
                Ok(theirs) => silent.push(json!({"node": node, "error": theirs["error"]})),
                Err(error) => silent.push(json!({"node": node, "error": error})),
            }
        }
        for (instance, node) in self.missing_nodes() {
            rows.push(json!({
                "name": instance,
                "node": node,
                "state": "node not joined",
            }));
        }
        answer["guests"] = json!(rows);
        answer["silent_nodes"] = json!(silent);
        answer["reachable"] = cluster
            .directory()
            .into_iter()
            .map(|(node, name, group)| json!({"node": node, "name": name, "group": group}))
            .collect();
        Ok(answer)
    }

    /// The bridge's numbers, for `top` and `ps`.
    pub fn cluster_stats(&self) -> Value {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(cluster) = self.cluster() else {
            return Value::Null;
        };
        let s = cluster.stats();
        let (unanswered, given_up) = cluster.unanswered_reports();
        json!({
            "node": cluster.node(),
            "connected": cluster.connected(),
            "peers": cluster.peers(),
            "sent": s.sent.load(Relaxed),
            "acked": s.acked.load(Relaxed),
            "acks_carried": s.acks_carried.load(Relaxed),
            "acks_alone": s.acks_alone.load(Relaxed),
            "no_responders": s.no_responders.load(Relaxed),
            "unknown_outcome": s.unknown_outcome.load(Relaxed),
            "settled": s.settled.load(Relaxed),
            "unsettled": cluster.unsettled(),
            "evicted": s.evicted.load(Relaxed),
            "dropped_reports": cluster.dropped_reports(),
            "reports_unanswered": unanswered,
            "reports_given_up": given_up,
            "slow_consumers": s.slow_consumers.load(Relaxed),
            "node_conflicts": s.node_conflicts.load(Relaxed),
            "disconnects": s.disconnects.load(Relaxed),
        })
    }
}
