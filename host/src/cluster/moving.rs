//! Moving a guest to another node with the no-loss swap.
//!
//! Guest `w` runs on node A; `swap w MODULE --node b` starts its new
//! instance on B as a standby and, once that is ready, asks A to hand `w`
//! over ([`Cluster::hand_over`]). Nothing is returned and every sender's
//! order holds, because no host sends `w` anything on the new road before
//! all it sent on the old one has arrived:
//!
//! 1. **Hold.** A asks every other node to hold `w`'s messages: each gives
//!    the name to a proxy of B's new instance whose link does not send yet
//!    (B itself: to a holder, whose messages wait for the new instance),
//!    and answers once its old proxy has sent all it had and A has acked
//!    it. What any host sends `w` from then on waits there.
//! 2. **Switch.** A gives the name to a proxy of B's new instance, which
//!    names it by its id (B's name still leads back to A): what A holds
//!    for `w`, from every host, goes there in order, and the old instance
//!    finishes what it was delivered (the swap's drain).
//! 3. **Release.** Once B has acked all that, A tells B (the held messages
//!    queue behind what came from A, and the name is the new instance's),
//!    then every other node (their proxies send).
//!
//! A node that does not answer the hold in time is logged and the move
//! goes on: only its own messages of those moments can arrive out of
//! order. A message A passes on keeps its sender's number: B reports its
//! take (or its return) to A, which reports it to the sender's host
//! ([`super::settle`]). A hold that is never released (A lost mid-move)
//! lets go when A is judged lost, or after [`RELEASE_LIMIT`].

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use wasmproc_protocol::GuestId;

use super::link::{self, Link};
use super::wire::Target;
use super::{Bridge, Cluster};
use crate::relay::{Entry, Registration};

/// How long a node may take to hold: its old proxy's letters acked.
const HOLD_LIMIT: Duration = Duration::from_secs(5);

/// How long what A held for the guest may take to reach B.
const FLUSH_LIMIT: Duration = Duration::from_secs(10);

/// A hold nobody releases lets go after this.
pub const RELEASE_LIMIT: Duration = Duration::from_secs(60);

/// What this host holds for a guest moving between two other nodes (or
/// to this one).
#[derive(Debug)]
pub(super) struct Hold {
    /// The node it leaves.
    from: String,
    /// The node it moves to, and its id there.
    to: (String, u64),
    /// Where the held messages wait: a proxy of the new instance, or on
    /// the new instance's own node, a holder that is never announced.
    holder: Arc<Entry>,
    /// The proxy's link (none on the new instance's node).
    link: Option<Arc<Link>>,
}

/// How a hand-over went, as the old node saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandedOver {
    /// Messages this host held for the guest, sent on to its new node.
    pub moved: u64,
    /// Messages the other nodes held while the guest moved.
    pub held: u64,
    /// Nodes that did not hold in time (their messages of those moments
    /// may arrive out of order).
    pub unheld: Vec<String>,
}

impl Cluster {
    /// Hand local guest `old` over to its new instance, guest `id` of node
    /// `to` (a standby there, ready): the steps in the [module
    /// docs](self). Returns once every node sends the guest's messages
    /// there; `old` is then to drain and stop.
    ///
    /// # Errors
    ///
    /// When `old` has no name, `to` is this node or not in the cluster.
    pub async fn hand_over(
        &self,
        old: &Arc<Entry>,
        to: &str,
        id: u64,
    ) -> Result<HandedOver, String> {
        let bridge = &self.inner;
        let name = old
            .name
            .clone()
            .ok_or("only a named guest moves to another node")?;
        if to == self.node() {
            return Err(format!("`{name}` runs on node `{to}` already"));
        }
        let peers = bridge.lock().liveness.nodes();
        if !peers.iter().any(|p| p == to) {
            return Err(format!("node `{to}` is not in the cluster"));
        }
        let hold = json!({
            "verb": "cluster-hold",
            "name": name,
            "group": old.group,
            "max_message_size": old.max_message_size,
            "from": self.node(),
            "old": old.id.0,
            "to": to,
            "id": id,
        });
        let answers = self.ask_all(&peers, &hold, HOLD_LIMIT).await;
        let mut handed = HandedOver {
            moved: 0,
            held: 0,
            unheld: Vec::new(),
        };
        for (peer, answer) in &answers {
            match answer {
                Ok(answer) if answer["flushed"] == true => {
                    handed.held += answer["held"].as_u64().unwrap_or(0);
                }
                Ok(answer) => {
                    tracing::warn!(
                        "wasmproc: node `{peer}` did not hold `{name}`'s messages in time: {answer}"
                    );
                    handed.unheld.push(peer.clone());
                }
                Err(err) => {
                    tracing::warn!(
                        "wasmproc: node `{peer}` did not hold `{name}`'s messages: {err}"
                    );
                    handed.unheld.push(peer.clone());
                }
            }
        }

        // The switch: the name leads to the new instance, by its id there.
        let proxy = bridge
            .relay
            .register(Registration {
                name: Some(name.clone()),
                group: old.group.clone(),
                max_message_size: old.max_message_size,
                talks_to: None,
                max_cpu: None,
                standby: true,
                remote: Some(to.to_owned()),
            })
            .map_err(|err| format!("`{name}` cannot move: {err}"))?;
        let link = Link::new(Target::Id(id), true);
        bridge.add_proxy(to, id, &proxy, link.clone(), true);
        let moved = bridge.relay.switch(old, &proxy);
        handed.moved = moved as u64;
        if !link::flushed(bridge, &proxy, &link, handed.moved, FLUSH_LIMIT).await {
            tracing::warn!(
                "wasmproc: node `{to}` did not ack within {FLUSH_LIMIT:?} the {moved} message(s) held here for `{name}`; releasing the other nodes anyway"
            );
        }

        // The release: the new node first, so the name there is the new
        // instance's before anyone sends to it by name.
        let release = json!({ "verb": "cluster-release", "name": name, "to": to, "id": id });
        if let Err(err) = self.forward(to, &release, HOLD_LIMIT).await {
            tracing::warn!("wasmproc: node `{to}` did not take `{name}`'s release: {err}");
        }
        link.retarget(Target::Name(name.clone()));
        bridge.moved_in(to, id);
        let others: Vec<String> = peers.into_iter().filter(|p| p != to).collect();
        for (peer, answer) in self.ask_all(&others, &release, HOLD_LIMIT).await {
            if let Err(err) = answer {
                tracing::warn!("wasmproc: node `{peer}` did not take `{name}`'s release: {err}");
            }
        }
        Ok(handed)
    }

    /// Ask each of `nodes` `request`, side by side.
    async fn ask_all(
        &self,
        nodes: &[String],
        request: &Value,
        limit: Duration,
    ) -> Vec<(String, Result<Value, String>)> {
        let asks = nodes.iter().map(|node| async move {
            let answer = self
                .forward(node, request, limit + Duration::from_secs(1))
                .await;
            (node.clone(), answer)
        });
        futures_util::future::join_all(asks).await
    }
}

/// Answer a move's verb forwarded from another node; `None` when the
/// request is not one.
pub(super) async fn answer(bridge: &Arc<Bridge>, request: &Value) -> Option<Value> {
    let answer = match request["verb"].as_str()? {
        "cluster-hold" => hold(bridge, request).await,
        "cluster-release" => release(bridge, request).await,
        _ => return None,
    };
    Some(match answer {
        Ok(Value::Object(mut fields)) => {
            fields.insert("ok".into(), Value::Bool(true));
            Value::Object(fields)
        }
        Ok(other) => json!({ "ok": true, "value": other }),
        Err(error) => json!({ "ok": false, "error": error }),
    })
}

/// The fields of a move's verb.
struct Move {
    name: String,
    from: String,
    old: u64,
    to: String,
    id: u64,
}

fn fields(request: &Value) -> Result<Move, String> {
    let text = |key: &str| {
        request[key]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("a move's `{key}` is missing"))
    };
    Ok(Move {
        name: text("name")?,
        from: text("from").unwrap_or_default(),
        old: request["old"].as_u64().unwrap_or(0),
        to: text("to")?,
        id: request["id"].as_u64().ok_or("a move's `id` is missing")?,
    })
}

/// Hold what this host sends the moving guest, and answer once what it
/// sent before has reached the old node.
async fn hold(bridge: &Arc<Bridge>, request: &Value) -> Result<Value, String> {
    let Move {
        name,
        from,
        old,
        to,
        id,
    } = fields(request)?;
    let relay = &bridge.relay;
    // What this host calls the guest now: its proxy of the old instance.
    let (old_proxy, old_link) = {
        let state = bridge.lock();
        match state.proxies.get(&(from.clone(), old)) {
            Some(p) => (Some(p.entry.clone()), Some(p.link.clone())),
            None => (None, None),
        }
    };
    let here = to == bridge.config.node;
    let holder = relay
        .register(Registration {
            name: Some(name.clone()),
            group: request["group"].as_str().map(str::to_owned),
            max_message_size: request["max_message_size"].as_u64().unwrap_or(u64::MAX),
            talks_to: None,
            max_cpu: None,
            standby: old_proxy
                .as_ref()
                .is_some_and(|p| relay.lookup(&name).is_some_and(|e| e.id == p.id)),
            remote: Some(to.clone()),
        })
        .map_err(|err| format!("cannot hold `{name}`'s messages: {err}"))?;
    let link = if here {
        None
    } else {
        let link = Link::new(Target::Name(name.clone()), false);
        bridge.add_proxy(&to, id, &holder, link.clone(), true);
        Some(link)
    };
    let held = match &old_proxy {
        Some(p) if relay.lookup(&name).is_some_and(|e| e.id == p.id) => {
            relay.switch(p, &holder) as u64
        }
        _ => 0,
    };
    bridge.lock().holds.insert(
        name.clone(),
        Hold {
            from,
            to: (to, id),
            holder,
            link,
        },
    );
    // Let go in the end, whatever happens to the old node.
    let (weak, held_name) = (Arc::downgrade(bridge), name.clone());
    tokio::spawn(async move {
        tokio::time::sleep(RELEASE_LIMIT).await;
        if let Some(bridge) = weak.upgrade()
            && let Some(hold) = bridge.take_hold(&held_name, id)
        {
            tracing::warn!(
                "wasmproc: the move of `{held_name}` was not released within {RELEASE_LIMIT:?}; sending what was held"
            );
            let _ = let_go(&bridge, hold).await;
        }
    });
    let flushed = match (&old_proxy, &old_link) {
        (Some(proxy), Some(old_link)) => {
            let upto = proxy.mailbox.popped();
            link::flushed(bridge, proxy, old_link, upto, HOLD_LIMIT).await
        }
        _ => true,
    };
    Ok(json!({ "held": held, "flushed": flushed }))
}

/// The move has ended: send what was held.
async fn release(bridge: &Arc<Bridge>, request: &Value) -> Result<Value, String> {
    let Move { name, id, .. } = fields(request)?;
    let Some(hold) = bridge.take_hold(&name, id) else {
        return Ok(json!({ "released": 0 }));
    };
    let released = let_go(bridge, hold).await?;
    Ok(json!({ "released": released }))
}

/// Send what `hold` held: its proxy's link opens, or here, on the new
/// instance's node, the held messages queue behind what the old node sent
/// on, and the name leads to the new instance. Returns how many moved.
async fn let_go(bridge: &Bridge, hold: Hold) -> Result<u64, String> {
    let (node, id) = &hold.to;
    if let Some(link) = &hold.link {
        link.open();
        bridge.moved_in(node, *id);
        return Ok(0);
    }
    let relay = &bridge.relay;
    let standby = relay
        .entry(GuestId(*id))
        .filter(|e| e.remote.is_none())
        .ok_or_else(|| format!("guest {id} is not here any more"))?;
    let moved = relay.switch_to(&hold.holder, &standby, true) as u64;
    relay.unregister(hold.holder.id, "moved").await;
    Ok(moved)
}

/// `node` is lost: every move from it lets go.
pub(super) fn lost(bridge: &Bridge, node: &str) {
    let holds: Vec<Hold> = {
        let mut state = bridge.lock();
        let names: Vec<String> = state
            .holds
            .iter()
            .filter(|(_, h)| h.from == node)
            .map(|(name, _)| name.clone())
            .collect();
        names
            .iter()
            .filter_map(|name| state.holds.remove(name))
            .collect()
    };
    for hold in holds {
        if let Some(link) = &hold.link {
            link.open();
            bridge.moved_in(&hold.to.0, hold.to.1);
        } else {
            let relay = bridge.relay.clone();
            tokio::spawn(async move {
                if let Some(standby) = relay
                    .entry(GuestId(hold.to.1))
                    .filter(|e| e.remote.is_none())
                {
                    relay.switch_to(&hold.holder, &standby, true);
                }
                relay.unregister(hold.holder.id, "moved").await;
            });
        }
    }
}

impl Bridge {
    /// The hold of moving guest `name`, new id `id`, taken.
    fn take_hold(&self, name: &str, id: u64) -> Option<Hold> {
        let mut state = self.lock();
        if state.holds.get(name).is_some_and(|h| h.to.1 == id) {
            state.holds.remove(name)
        } else {
            None
        }
    }

    /// The guest `id` of `node` has moved there: its proxy here is an
    /// ordinary one from now (reaped when that node's beats stop naming it,
    /// after two beats of grace for the first one to come).
    pub(super) fn moved_in(&self, node: &str, id: u64) {
        if let Some(proxy) = self.lock().proxies.get_mut(&(node.to_owned(), id)) {
            proxy.moving = false;
            proxy.born = tokio::time::Instant::now();
        }
    }
}
