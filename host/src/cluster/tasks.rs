//! The bridge's long-lived tasks: the beats and exits of the other nodes,
//! control verbs forwarded here, and the clock (our beats, lost peers,
//! overdue acks, connection events). Each holds the bridge weakly and ends
//! with it, or with the shutdown token. (Our node's claim is answered by
//! [`super::claim`].)

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::peers::Heard;
use super::wire::{self, BEAT, Beat, Exit};
use super::{Bridge, moving};
use crate::relay::LocalEvent;

/// Beats of every node (ours included, to catch a second claimant).
pub(super) async fn hear_beats(bridge: Weak<Bridge>, mut beats: async_nats::Subscriber) {
    while let Some(message) = beats.next().await {
        let Some(bridge) = bridge.upgrade() else {
            return;
        };
        let Some(beat) = wire::decode::<Beat>(&message.payload) else {
            tracing::warn!("wasmproc: a beat on {} that is not one", message.subject);
            continue;
        };
        if beat.node == bridge.config.node {
            if beat.instance == bridge.instance {
                bridge.lock().liveness.heard_self(Instant::now());
            } else {
                node_conflict(
                    &bridge,
                    &format!(
                        "another host also claims node `{}` in app `{}`: give each host its own --node",
                        beat.node, bridge.config.app
                    ),
                );
            }
            continue;
        }
        if beat.leaving {
            bridge.lock().liveness.forget(&beat.node);
            bridge.drop_proxies(Some(&beat.node), "host stopped").await;
            bridge.left(&beat.node);
            continue;
        }
        let heard = bridge
            .lock()
            .liveness
            .beat(&beat.node, beat.instance, Instant::now());
        match heard {
            Heard::New => {
                tracing::info!("wasmproc: node `{}` joined", beat.node);
                // It hears of our guests now, not at our next beat.
                bridge.beat_now.notify_one();
            }
            Heard::Known => {}
            Heard::Conflict { .. } => {
                node_conflict(
                    &bridge,
                    &format!(
                        "two hosts claim node `{}` in app `{}`: only the first one heard is used",
                        beat.node, bridge.config.app
                    ),
                );
                continue;
            }
        }
        bridge.reconcile(&beat.node, &beat.guests);
    }
}

/// Two hosts claim one node name: counted (`ps`, `top`, metrics) and logged.
fn node_conflict(bridge: &Bridge, what: &str) {
    bridge.stats.node_conflicts.fetch_add(1, Ordering::Relaxed);
    tracing::error!("wasmproc: {what}");
}

/// Guests of other nodes that ended: their proxies end with the reason.
pub(super) async fn hear_exits(bridge: Weak<Bridge>, mut exits: async_nats::Subscriber) {
    while let Some(message) = exits.next().await {
        let Some(bridge) = bridge.upgrade() else {
            return;
        };
        let Some((node, exit)) = wire::decode::<(String, Exit)>(&message.payload) else {
            continue;
        };
        if node == bridge.config.node {
            continue;
        }
        let proxy = {
            let mut state = bridge.lock();
            let key = (node, exit.id);
            match state.proxies.get(&key) {
                // A swapped-out instance: the proxy leads to its name, which
                // the next beat shows with the new instance's id. One that
                // moved to another node gave its name to that node's proxy
                // here, and ends now.
                Some(p) if exit.moved && p.entry.successor().is_none() => None,
                Some(_) => state.proxies.remove(&key),
                None => None,
            }
        };
        if let Some(proxy) = proxy {
            bridge.relay.unregister(proxy.entry.id, &exit.reason).await;
        }
    }
}

/// Control verbs forwarded to this node.
pub(super) async fn serve_control(bridge: Weak<Bridge>, mut requests: async_nats::Subscriber) {
    while let Some(message) = requests.next().await {
        let Some(bridge) = bridge.upgrade() else {
            return;
        };
        let Some(reply) = message.reply.clone() else {
            continue;
        };
        let handler = bridge
            .control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let client = bridge.client.clone();
        let weak = Arc::downgrade(&bridge);
        drop(bridge);
        // Each verb on its own: a slow one (a swap) holds up no other.
        tokio::spawn(async move {
            let request: Result<serde_json::Value, _> = serde_json::from_slice(&message.payload);
            // A guest moving between nodes is the bridge's own business.
            let moving = match (&request, weak.upgrade()) {
                (Ok(request), Some(bridge)) => moving::answer(&bridge, request).await,
                _ => None,
            };
            let answer = match (handler, request) {
                _ if moving.is_some() => moving.unwrap_or_default(),
                (Some(handler), Ok(request)) => handler(request).await,
                (None, _) => {
                    serde_json::json!({"ok": false, "error": "this node takes no verbs yet"})
                }
                (_, Err(err)) => {
                    serde_json::json!({"ok": false, "error": format!("not JSON: {err}")})
                }
            };
            let _ = client
                .publish(reply, bytes::Bytes::from(answer.to_string()))
                .await;
        });
    }
}

/// How often the bridge looks at its peers and its acks.
const TICK: Duration = Duration::from_millis(250);

/// The bridge's clock: beats, lost peers, overdue acks, connection events
/// and changes to this host's guests.
pub(super) async fn tick(
    bridge: Weak<Bridge>,
    mut events: mpsc::Receiver<async_nats::Event>,
    mut local: mpsc::Receiver<LocalEvent>,
) {
    let mut ticks = tokio::time::interval(TICK);
    let mut last_beat = Instant::now() - BEAT;
    let Some(strong) = bridge.upgrade() else {
        return;
    };
    let (shutdown, beat_now) = (strong.shutdown.clone(), strong.beat_now.clone());
    drop(strong);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
            () = beat_now.notified() => last_beat = Instant::now() - BEAT,
            Some(event) = events.recv() => {
                let Some(bridge) = bridge.upgrade() else { return };
                connection_event(&bridge, event).await;
                continue;
            }
            Some(change) = local.recv() => {
                let Some(bridge) = bridge.upgrade() else { return };
                // Disconnected, the peers have dropped our guests already;
                // a publish now would wait for the connection.
                if let LocalEvent::Exited { id, reason, moved, .. } = change
                    && bridge.lock().liveness.is_connected()
                {
                    let exit = (bridge.config.node.clone(), Exit { id: id.0, reason, moved });
                    let _ = bridge
                        .client
                        .publish(bridge.subjects.exit(&bridge.config.node), wire::encode(&exit))
                        .await;
                }
                // A new guest is announced at once (at most once a tick).
                last_beat = last_beat.min(Instant::now() - BEAT + TICK);
                continue;
            }
        }
        let Some(bridge) = bridge.upgrade() else {
            return;
        };
        let now = Instant::now();
        if now.duration_since(last_beat) >= BEAT && bridge.lock().liveness.is_connected() {
            last_beat = now;
            bridge.beat().await;
        }
        let lost = bridge.lock().liveness.lost(now);
        for node in lost {
            bridge.lose(&node, "no beat for 3 s").await;
        }
        let (late, judge) = {
            let state = bridge.lock();
            (state.liveness.late(now), state.liveness.may_judge(now))
        };
        if judge {
            for node in late {
                tokio::spawn(probe(Arc::downgrade(&bridge), node));
            }
        }
        bridge.acks.sweep(&bridge, now);
        if bridge.lock().liveness.is_connected() {
            super::settle::resend(&bridge, now).await;
        }
    }
}

/// Ask a late peer's inbox whether anyone serves it: nobody means the host
/// is gone (its process ended, and the server dropped its subscriptions).
async fn probe(bridge: Weak<Bridge>, node: String) {
    let Some(strong) = bridge.upgrade() else {
        return;
    };
    let envelope = wire::encode(&wire::Letter::new(
        strong.config.node.clone(),
        vec![wire::Envelope::Ping],
    ));
    let (client, subject) = (strong.client.clone(), strong.subjects.inbox(&node));
    drop(strong);
    let ask = client.request(subject, envelope);
    let answer = tokio::time::timeout(Duration::from_millis(500), ask).await;
    if let Ok(Err(err)) = answer
        && err.kind() == async_nats::RequestErrorKind::NoResponders
        && let Some(bridge) = bridge.upgrade()
        && bridge.lock().liveness.may_judge(Instant::now())
    {
        bridge.lose(&node, "nobody serves its inbox").await;
    }
}

/// Our connection went down or came back.
async fn connection_event(bridge: &Arc<Bridge>, event: async_nats::Event) {
    match event {
        async_nats::Event::Disconnected => {
            bridge.stats.disconnects.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "wasmproc: lost the connection to the cluster's NATS server; guests of other nodes are unreachable until it is back"
            );
            bridge.lock().liveness.disconnected();
            bridge.drop_proxies(None, "no connection").await;
            bridge.acks.fail_all(bridge);
            bridge.lose_all();
        }
        async_nats::Event::Connected => {
            tracing::info!("wasmproc: connected to the cluster's NATS server");
            bridge.lock().liveness.connected(Instant::now());
            bridge.beat_now.notify_one();
        }
        async_nats::Event::SlowConsumer(sid) => tracing::error!(
            "wasmproc: the NATS client dropped messages of subscription {sid} (slow consumer): {} so far",
            bridge.stats.slow_consumers.load(Ordering::Relaxed)
        ),
        // Each failed reconnect says so; the disconnect was said once.
        async_nats::Event::ClientError(err) => tracing::debug!("wasmproc: NATS: {err}"),
        other => tracing::warn!("wasmproc: NATS: {other}"),
    }
}
