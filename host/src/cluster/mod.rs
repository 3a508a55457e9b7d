//! The cluster bridge: hosts that form one app over NATS.
//!
//! Each host's bridge joins the app's NATS subjects ([`wire`]) as its node,
//! says every second which guests it runs ([`wire::Beat`]), and keeps, for
//! every guest of the other hosts, a *proxy* in its own relay: an entry
//! with that guest's name and group whose mailbox the bridge drains
//! ([`link`]). So names, groups, broadcasts, the allow-list, monitors and
//! calls reach guests on any host with no new road in the relay: a send to
//! a remote guest lands in its proxy's mailbox like any other, and the
//! proxy's link takes it on.
//!
//! A group is therefore spread by the sender's relay, round-robin over its
//! members on every host, rather than by a NATS queue group per member: a
//! queue group picks a subscriber at random, so it could neither keep the
//! order from one sender to one member nor tell the sender which member's
//! host must acknowledge the message.
//!
//! # Delivery across hosts
//!
//! Every message is taken by its recipient or returned to its sender, across
//! hosts too; where nobody can say which, it is returned as `unknown
//! outcome` (NATS is at-most-once).
//!
//! Every envelope goes in a request that the remote relay answers with an
//! [`wire::Ack`] per envelope once the message is in its recipient's
//! mailbox. An ack is not a take, so each message also carries a number:
//! the sending host keeps what each number was (sender, address, length;
//! no payload) from the moment it goes out, and the receiving host reports
//! the numbers home in batches when its guests take those messages, or when
//! they come back because the recipient ended first ([`settle`]). Acks are
//! pipelined, [`link::WINDOW`]
//! envelopes per proxy, and what a proxy's mailbox holds goes out many
//! envelopes to a NATS message, so throughput is bound neither by the round
//! trip nor by one NATS message per message; an ack that only accepts
//! waits a moment for a letter going back to carry it ([`owed`]), so a
//! round trip costs two NATS messages, as a plain request and reply does;
//! one link publishes
//! in order on one connection, and the receiving host handles its inbox in
//! order, so the order per sender and receiver holds. No responders means
//! no host serves that node any more: `unknown recipient` at once. No ack
//! within [`link::ACK_TIMEOUT`]: `unknown outcome`, told to the sender (a
//! guest of WIT 0.2 is not shown it) and counted.
//!
//! # Host loss
//!
//! A peer silent for [`wire::MISSED_BEATS`] beats (or whose inbox has no
//! responder when its beat is late) is lost, judged only while our own
//! connection has been up that long and carries our own beats back to us
//! ([`peers`]). Its proxies are
//! unregistered with `host lost`: monitors get `down (host lost)`, calls
//! to its guests fail with `callee exited: host lost`, its names leave the
//! directory, and every message sent there and not reported taken or
//! returned (acked or not) goes back to its sender as `unknown outcome`:
//! its take report may have been in flight. When our own connection
//! drops, every proxy goes with `no connection`, and every unsettled
//! message of every peer comes back the same way; local guests go on. On
//! reconnect the next beats (ours at once) bring the directory back.

mod claim;
mod inbox;
mod link;
mod moving;
mod owed;
mod peers;
mod settle;
mod tasks;
pub mod wire;

pub use moving::HandedOver;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wasmproc_protocol::GuestId;

use crate::relay::{Entry, Registration, Relay};
use peers::Liveness;
use wire::{BEAT, Beat, Subjects};

/// Where and as what a host joins its app's cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The NATS server, `nats://HOST:PORT`.
    pub url: String,
    /// The app's name: every host of one app uses the same.
    pub app: String,
    /// This host's node name, unique in the app.
    pub node: String,
}

/// Why a host could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "cannot reach the cluster's NATS server at {url}: {reason} (is nats-server running there?)"
    )]
    Unreachable { url: String, reason: String },
    #[error(
        "node `{node}` is in app `{app}`'s cluster already (another host answers for it): \
         give this host another name with --node"
    )]
    NodeTaken { node: String, app: String },
    #[error("the cluster's NATS server at {url} refused a subscription: {reason}")]
    Subscribe { url: String, reason: String },
}

/// The bridge's numbers (for `ps`, `top` and metrics).
#[derive(Debug, Default)]
pub struct Stats {
    /// Envelopes published to other hosts, and acks received.
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    /// Other hosts' letters we acked: on a letter of ours going back, or
    /// on their own.
    pub acks_carried: AtomicU64,
    pub acks_alone: AtomicU64,
    /// Sends no host served (no responders).
    pub no_responders: AtomicU64,
    /// Messages given back to their senders as of unknown outcome: no ack
    /// in time, or the peer or our connection was lost before the peer
    /// said whether its guest took them.
    pub unknown_outcome: AtomicU64,
    /// Messages whose take (or return) a peer reported, each counted once
    /// (a report heard again, or one about a message already settled as of
    /// unknown outcome, adds nothing).
    pub settled: AtomicU64,
    /// Unsettled messages pushed out by the bound (`settle::UNSETTLED` per
    /// peer), each returned as of unknown outcome.
    pub evicted: AtomicU64,
    /// Messages the NATS client dropped because a subscription's buffer
    /// was full (`slow consumer`): each is also logged.
    pub slow_consumers: AtomicU64,
    /// Beats heard from another process claiming this host's node.
    pub node_conflicts: AtomicU64,
    /// Times our connection to NATS dropped.
    pub disconnects: AtomicU64,
}

/// Answers control verbs forwarded from other nodes (`ps --cluster`,
/// `start --node`): set by the app.
pub type ControlHandler = Arc<
    dyn Fn(serde_json::Value) -> futures_util::future::BoxFuture<'static, serde_json::Value>
        + Send
        + Sync,
>;

/// A joined cluster: the handle of this host's bridge. Dropping the last
/// handle does not leave; [`Cluster::leave`] (or the shutdown token) does.
#[derive(Debug, Clone)]
pub struct Cluster {
    inner: Arc<Bridge>,
}

/// One remote guest's proxy, as the bridge keeps it.
#[derive(Debug)]
struct Proxy {
    entry: Arc<Entry>,
    link: Arc<link::Link>,
    /// When it was made (or its guest's move ended): one made for a sender
    /// (before its host's beat named it), or for a guest moving to its
    /// host, is not reaped by a beat older than itself.
    born: Instant,
    /// It stands for a guest moving to its node, which that node's beats
    /// do not name until the move ends.
    moving: bool,
}

#[derive(Debug, Default)]
struct State {
    liveness: Liveness,
    /// (node, its id for the guest) → the proxy.
    proxies: HashMap<(String, u64), Proxy>,
    /// Guests moving between two other nodes, by name: what this host
    /// sends them is held until the move ends.
    holds: HashMap<String, moving::Hold>,
}

struct Bridge {
    client: async_nats::Client,
    subjects: Subjects,
    config: ClusterConfig,
    instance: u64,
    /// Where our acks come back: each letter's reply subject is this and
    /// its number.
    acks_subject: String,
    relay: Relay,
    /// The largest envelope the server takes.
    max_payload: usize,
    state: Mutex<State>,
    acks: link::Acks,
    /// Acks we owe other hosts' letters, waiting for a letter going back.
    owed: owed::Owed,
    /// What we sent to each peer and have not heard settled.
    unsettled: settle::Unsettled,
    /// Take reports we sent and have not heard answered.
    reports: settle::Outbox,
    stats: Arc<Stats>,
    control: Mutex<Option<ControlHandler>>,
    /// Asks the beat task for a beat now (a guest came or went).
    beat_now: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("config", &self.config)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// Connection events waiting for the bridge.
const EVENTS: usize = 256;

/// How long a leaving host tries to say so.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long after a peer's last beat its last take reports may come.
const LEAVE_GRACE: Duration = Duration::from_secs(1);

impl Cluster {
    /// Join the cluster of `config.app` as `config.node`, with `relay`'s
    /// guests. Returns once the node is claimed and every subscription is
    /// in place; the bridge's tasks end with `shutdown`.
    ///
    /// # Errors
    ///
    /// When the server does not answer, the node name is taken, or a
    /// subscription is refused.
    pub(crate) async fn join(
        config: ClusterConfig,
        relay: Relay,
        shutdown: CancellationToken,
    ) -> Result<Cluster, JoinError> {
        let stats = Arc::new(Stats::default());
        let (events_tx, events) = mpsc::channel(EVENTS);
        let counted = stats.clone();
        let options = async_nats::ConnectOptions::new()
            .name(format!("wasmproc {} node {}", config.app, config.node))
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(Duration::from_secs(2)))
            .max_reconnects(None)
            // Back soon after a server restart, without hammering it.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64 * 100).min(1000))
            })
            .event_callback(move |event| {
                if let async_nats::Event::SlowConsumer(_) = event {
                    counted.slow_consumers.fetch_add(1, Ordering::Relaxed);
                }
                // Never waits: a connection state missed here is read
                // again from the client on the next tick.
                let _ = events_tx.try_send(event);
                async {}
            });
        let client =
            options
                .connect(config.url.as_str())
                .await
                .map_err(|err| JoinError::Unreachable {
                    url: config.url.clone(),
                    reason: err.to_string(),
                })?;
        let subjects = Subjects::new(&config.app);
        let subscribe_error = |err: async_nats::SubscribeError| JoinError::Subscribe {
            url: config.url.clone(),
            reason: err.to_string(),
        };
        // Claim the node: whoever runs it (or claims it too) answers.
        let instance = random_instance();
        let claims = client
            .subscribe(subjects.claim(&config.node))
            .await
            .map_err(subscribe_error)?;
        let claim = claim::Claim::new(instance);
        let answering = tokio::spawn(claim::answer(client.clone(), claims, claim.clone()));
        let ours = claim
            .decide(&client, subjects.claim(&config.node))
            .await
            .map_err(subscribe_error)?;
        if !ours {
            answering.abort();
            return Err(JoinError::NodeTaken {
                node: config.node.clone(),
                app: config.app.clone(),
            });
        }
        let inbox = client
            .subscribe(subjects.inbox(&config.node))
            .await
            .map_err(subscribe_error)?;
        let acks_subject = subjects.acks(&config.node, instance);
        let acks = client
            .subscribe(format!("{acks_subject}.*"))
            .await
            .map_err(subscribe_error)?;
        let beats = client
            .subscribe(subjects.every("beat"))
            .await
            .map_err(subscribe_error)?;
        let exits = client
            .subscribe(subjects.every("exit"))
            .await
            .map_err(subscribe_error)?;
        let control = client
            .subscribe(subjects.control(&config.node))
            .await
            .map_err(subscribe_error)?;
        let reports = client
            .subscribe(subjects.settled(&config.node))
            .await
            .map_err(subscribe_error)?;
        let report_answers = client
            .subscribe(format!(
                "{}.*",
                subjects.report_acks(&config.node, instance)
            ))
            .await
            .map_err(subscribe_error)?;
        let max_payload = client.server_info().max_payload;
        let bridge = Arc::new(Bridge {
            client,
            subjects,
            config,
            instance,
            acks_subject,
            relay: relay.clone(),
            max_payload,
            state: Mutex::new(State::default()),
            acks: link::Acks::default(),
            owed: owed::Owed::default(),
            unsettled: settle::Unsettled::new(random_instance()),
            reports: settle::Outbox::default(),
            stats,
            control: Mutex::new(None),
            beat_now: Arc::new(tokio::sync::Notify::new()),
            shutdown,
        });
        bridge.lock().liveness.connected(Instant::now());
        let (local_tx, local) = mpsc::channel(crate::relay::LOCAL_EVENTS);
        relay.watch_local(local_tx);

        let weak = Arc::downgrade(&bridge);
        use tasks::{hear_beats, hear_exits, serve_control, tick};
        tokio::spawn(inbox::serve(weak.clone(), inbox));
        tokio::spawn(link::receive_acks(weak.clone(), acks));
        tokio::spawn(owed::flush(weak.clone()));
        tokio::spawn(hear_beats(weak.clone(), beats));
        tokio::spawn(hear_exits(weak.clone(), exits));
        tokio::spawn(serve_control(weak.clone(), control));
        tokio::spawn(settle::hear(weak.clone(), reports));
        tokio::spawn(settle::report(weak.clone()));
        tokio::spawn(settle::hear_answers(weak.clone(), report_answers));
        tokio::spawn(tick(weak, events, local));
        bridge.beat_now.notify_one();
        Ok(Cluster { inner: bridge })
    }

    /// This host's node name.
    pub fn node(&self) -> &str {
        &self.inner.config.node
    }

    /// The bridge's numbers.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// The other nodes heard from now.
    pub fn peers(&self) -> Vec<String> {
        self.inner.lock().liveness.nodes()
    }

    /// The guests of other nodes this host can reach now: (node, name,
    /// group), sorted.
    pub fn directory(&self) -> Vec<(String, Option<String>, Option<String>)> {
        let mut guests: Vec<_> = self
            .inner
            .lock()
            .proxies
            .iter()
            .map(|((node, _), p)| (node.clone(), p.entry.name.clone(), p.entry.group.clone()))
            .collect();
        guests.sort();
        guests
    }

    /// Messages sent to other hosts that they have not yet said were taken
    /// or returned.
    pub fn unsettled(&self) -> usize {
        self.inner.unsettled.len()
    }

    /// Take reports sent to other hosts and not answered yet, and those
    /// given up on (unanswered after every try, or past the bound).
    pub fn unanswered_reports(&self) -> (usize, u64) {
        let outbox = &self.inner.reports;
        (outbox.len(), outbox.given_up.load(Ordering::Relaxed))
    }

    /// Take reports for other hosts this host dropped, because too many
    /// waited (more than the relay keeps for the bridge).
    pub fn dropped_reports(&self) -> u64 {
        self.inner.relay.dropped_settlements()
    }

    /// Whether our connection to NATS is up.
    pub fn connected(&self) -> bool {
        self.inner.lock().liveness.is_connected()
    }

    /// Answer control verbs that other nodes forward here with `handler`.
    pub fn serve_control(&self, handler: ControlHandler) {
        *self.inner.control.lock().unwrap_or_else(|e| e.into_inner()) = Some(handler);
    }

    /// Carry out control `request` on node `node` and return its answer.
    ///
    /// # Errors
    ///
    /// When no host serves `node`, or it does not answer in `timeout`.
    pub async fn forward(
        &self,
        node: &str,
        request: &serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, String> {
        let subject = self.inner.subjects.control(node);
        // The client's own request timeout (2 s) is for short asks; a verb
        // (a swap, a move) may take longer.
        let ask = self.inner.client.send_request(
            subject,
            async_nats::Request::new()
                .payload(bytes::Bytes::from(request.to_string()))
                .timeout(Some(timeout)),
        );
        match tokio::time::timeout(timeout, ask).await {
            Err(_) => Err(format!("node `{node}` did not answer within {timeout:?}")),
            Ok(Err(err)) if err.kind() == async_nats::RequestErrorKind::NoResponders => {
                Err(format!("node `{node}` is not in the cluster"))
            }
            Ok(Err(err)) => Err(format!("node `{node}`: {err}")),
            Ok(Ok(reply)) => serde_json::from_slice(&reply.payload)
                .map_err(|err| format!("node `{node}` answered garbage: {err}")),
        }
    }

    /// Leave: a last beat that says so, so peers drop our guests at once
    /// (`host stopped`) instead of after the missed beats.
    pub async fn leave(&self) {
        let bridge = &self.inner;
        if !bridge.lock().liveness.is_connected() {
            // Nobody would hear it; the peers see our beats stop instead.
            return;
        }
        // What our guests took or gave back goes before the last beat, so
        // the peers hear it before they settle the rest as unknown.
        settle::flush(bridge).await;
        // And the acks that waited for a letter going back.
        owed::send(bridge, bridge.owed.take_all()).await;
        let beat = Beat {
            node: bridge.config.node.clone(),
            instance: bridge.instance,
            guests: Vec::new(),
            leaving: true,
        };
        let said = async {
            let _ = bridge
                .client
                .publish(
                    bridge.subjects.beat(&bridge.config.node),
                    wire::encode(&beat),
                )
                .await;
            let _ = bridge.client.flush().await;
        };
        // A connection that dropped just now must not hold the shutdown.
        if tokio::time::timeout(LEAVE_TIMEOUT, said).await.is_err() {
            tracing::warn!("wasmproc: could not tell the cluster that this host leaves");
        }
    }
}

impl Bridge {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The largest payload a proxy may take: what the server carries, less
    /// room for the envelope around it.
    fn payload_limit(&self) -> u64 {
        self.max_payload.saturating_sub(link::ENVELOPE_ROOM) as u64
    }

    /// The proxy of `node`'s guest `id`, made (and its link started) if
    /// there is none: `name` and `group` as that host says (what this host
    /// cannot take of them is left out, and logged).
    fn proxy(self: &Arc<Self>, node: &str, guest: &wire::Guest) -> Option<Arc<Entry>> {
        let mut state = self.lock();
        if let Some(proxy) = state.proxies.get(&(node.to_owned(), guest.id)) {
            return Some(proxy.entry.clone());
        }
        // A named guest restarted or swapped there: same name, new id.
        if let Some(name) = &guest.name {
            let moved = state
                .proxies
                .iter()
                .find(|((n, _), p)| n == node && p.entry.name.as_ref() == Some(name))
                .map(|(key, _)| key.clone());
            if let Some(key) = moved
                && let Some(proxy) = state.proxies.remove(&key)
            {
                let entry = proxy.entry.clone();
                state.proxies.insert((node.to_owned(), guest.id), proxy);
                return Some(entry);
            }
        }
        let max_message_size = guest.max_message_size.min(self.payload_limit());
        let registration = |name: Option<String>| Registration {
            name,
            group: guest.group.clone(),
            max_message_size,
            talks_to: None,
            max_cpu: None,
            standby: false,
            remote: Some(node.to_owned()),
        };
        let entry = match self.relay.register(registration(guest.name.clone())) {
            Ok(entry) => entry,
            Err(err) => {
                tracing::warn!(
                    "node `{node}`'s guest {}: {err}; this host reaches that one by id only",
                    guest.name.as_deref().unwrap_or("(unnamed)")
                );
                let anonymous = Registration {
                    group: None,
                    ..registration(None)
                };
                // Without its name, else (a group that is not a valid
                // name) without either: then there is nothing to refuse.
                match self.relay.register(registration(None)) {
                    Ok(entry) => entry,
                    Err(_) => self.relay.register(anonymous).ok()?,
                }
            }
        };
        let target = match &entry.name {
            Some(name) => wire::Target::Name(name.clone()),
            None => wire::Target::Id(guest.id),
        };
        drop(state);
        self.add_proxy(node, guest.id, &entry, link::Link::new(target, true), false);
        Some(entry)
    }

    /// Keep `entry` as the proxy of `node`'s guest `id`, and start its link.
    fn add_proxy(
        self: &Arc<Self>,
        node: &str,
        id: u64,
        entry: &Arc<Entry>,
        link: Arc<link::Link>,
        moving: bool,
    ) {
        self.lock().proxies.insert(
            (node.to_owned(), id),
            Proxy {
                entry: entry.clone(),
                link: link.clone(),
                born: Instant::now(),
                moving,
            },
        );
        tokio::spawn(link::drain(
            Arc::downgrade(self),
            entry.clone(),
            node.to_owned(),
            link,
        ));
    }

    /// The proxy of `node`'s guest `id`, if there is one.
    fn proxy_of(&self, node: &str, id: u64) -> Option<Arc<Entry>> {
        self.lock()
            .proxies
            .get(&(node.to_owned(), id))
            .map(|p| p.entry.clone())
    }

    /// Where a proxy leads: its node and that node's id for the guest.
    fn remote_of(&self, proxy: GuestId) -> Option<(String, u64)> {
        self.lock()
            .proxies
            .iter()
            .find(|(_, p)| p.entry.id == proxy)
            .map(|(key, _)| key.clone())
    }

    /// `node`'s guests are these now: make what is new, drop what is gone.
    fn reconcile(self: &Arc<Self>, node: &str, guests: &[wire::Guest]) {
        for guest in guests {
            self.proxy(node, guest);
        }
        let gone: Vec<(u64, Arc<Entry>)> = {
            let mut state = self.lock();
            let listed: std::collections::HashSet<u64> = guests.iter().map(|g| g.id).collect();
            let young = BEAT * 2;
            let keys: Vec<(String, u64)> = state
                .proxies
                .iter()
                // A proxy whose guest moved on ends with that instance's
                // exit (it may still answer calls); one of a guest moving
                // here is named once the move ends.
                .filter(|((n, id), p)| {
                    n == node
                        && !listed.contains(id)
                        && peers::ago(p.born) > young
                        && !p.moving
                        && p.entry.successor().is_none()
                })
                .map(|(key, _)| key.clone())
                .collect();
            keys.into_iter()
                .filter_map(|key| state.proxies.remove(&key).map(|p| (key.1, p.entry)))
                .collect()
        };
        for (_, entry) in gone {
            let relay = self.relay.clone();
            tokio::spawn(async move {
                relay
                    .unregister(entry.id, "exited (its host's directory no longer lists it)")
                    .await;
            });
        }
    }

    /// Drop every proxy of `node` (or of every node) for `reason`.
    async fn drop_proxies(&self, node: Option<&str>, reason: &str) {
        let gone: Vec<Arc<Entry>> = {
            let mut state = self.lock();
            let keys: Vec<(String, u64)> = state
                .proxies
                .keys()
                .filter(|(n, _)| node.is_none_or(|node| n == node))
                .cloned()
                .collect();
            keys.into_iter()
                .filter_map(|key| state.proxies.remove(&key).map(|p| p.entry))
                .collect()
        };
        for entry in gone {
            self.relay.unregister(entry.id, reason).await;
        }
        // A proxy made meanwhile by an in-flight envelope goes too.
        if let Some(node) = node {
            for entry in self.relay.proxies_of(node) {
                self.relay.unregister(entry.id, reason).await;
            }
        }
    }

    /// `node` is lost: say so, and drop its guests. What we sent there
    /// and did not hear settled goes back to its senders: unknown outcome.
    async fn lose(&self, node: &str, why: &str) {
        tracing::warn!("wasmproc: node `{node}` is lost ({why}); its guests are unreachable");
        self.lock().liveness.forget(node);
        moving::lost(self, node);
        self.reports.forget(node);
        self.owed.forget(node);
        self.drop_proxies(Some(node), "host lost").await;
        let unsettled = self.unsettled.take(Some(node));
        settle::unknown(self, node, unsettled, "host lost");
    }

    /// Our connection dropped: nothing we sent anywhere will be reported.
    fn lose_all(&self) {
        for node in self.unsettled.nodes() {
            let unsettled = self.unsettled.take(Some(&node));
            settle::unknown(self, &node, unsettled, "no connection");
        }
    }

    /// `node` said it stops: what it has not reported by `LEAVE_GRACE`
    /// from now never will be (a take report sent before its last beat
    /// may still be on its way here).
    fn left(self: &Arc<Self>, node: &str) {
        let (bridge, node, last) = (self.clone(), node.to_owned(), self.unsettled.last());
        tokio::spawn(async move {
            tokio::time::sleep(LEAVE_GRACE).await;
            let unsettled = bridge.unsettled.take_up_to(&node, last);
            settle::unknown(&bridge, &node, unsettled, "host stopped");
        });
    }

    /// Our beat: this host's guests now.
    async fn beat(&self) {
        let guests = self
            .relay
            .local_directory()
            .into_iter()
            .map(|g| wire::Guest {
                id: g.id.0,
                name: g.name,
                group: g.group,
                max_message_size: g.max_message_size,
            })
            .collect();
        let beat = Beat {
            node: self.config.node.clone(),
            instance: self.instance,
            guests,
            leaving: false,
        };
        let payload = wire::encode(&beat);
        if payload.len() > self.max_payload {
            tracing::error!(
                "wasmproc: this host's directory ({} bytes) is over the NATS server's max_payload ({}): peers cannot hear it",
                payload.len(),
                self.max_payload
            );
            return;
        }
        let _ = self
            .client
            .publish(self.subjects.beat(&self.config.node), payload)
            .await;
    }
}

/// A per-process number, to tell two processes claiming one node apart.
fn random_instance() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}
