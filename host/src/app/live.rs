//! A running app as the control verbs see it: one [`Slot`] per guest
//! instance (its state, its numbers, the channel to its supervisor), the
//! guests' recent output, and the verbs themselves.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wasmproc_manifest::GuestDef;
use wasmproc_protocol::{Address, valid_name};

use super::supervise::{Control, supervise};
use super::{Event, Stream, command_for};
use crate::cache::Cache;
use crate::child::Child;
use crate::host::{Host, Swapped};
use crate::relay::Entry;
use crate::status::ExitStatus;

/// Output bytes kept per guest for `logs`; older lines make room.
pub const LOG_BYTES: usize = 256 * 1024;
/// Events a slow subscriber may fall behind before it misses some.
const SUBSCRIBER_BACKLOG: usize = 4096;
/// Control verbs waiting for one supervisor.
const CONTROL_BACKLOG: usize = 16;

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Starting,
    Running,
    Restarting,
    /// Stopped by `stop`.
    Stopped,
    /// Ended, and its restart policy does not start it again.
    Exited,
    /// Ended too often too quickly: the supervisor gave up.
    GaveUp,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Restarting => "restarting",
            State::Stopped => "stopped",
            State::Exited => "exited",
            State::GaveUp => "gave-up",
        }
    }
}

/// One guest instance of the app.
#[derive(Debug)]
pub struct Slot {
    pub name: String,
    /// The group of its table, with replicas.
    pub group: Option<String>,
    control: mpsc::Sender<Control>,
    info: Mutex<Info>,
}

#[derive(Debug)]
struct Info {
    state: State,
    id: u64,
    pid: u32,
    since: Instant,
    restarts: u32,
    last_exit: Option<String>,
    last_success: bool,
    module: PathBuf,
    /// The start of the module's artifact hash.
    artifact: String,
    /// The running instance, as the relay knows it (its counters).
    entry: Option<Arc<Entry>>,
    /// Its table, as it runs now (`reload` compares it with the file).
    def: GuestDef,
}

impl Slot {
    fn info(&self) -> MutexGuard<'_, Info> {
        self.info.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A run of `child` has started.
    pub(super) async fn running(&self, child: &Child, def: &GuestDef) {
        let artifact = artifact_hash(&def.module).await;
        let mut info = self.info();
        info.state = State::Running;
        info.def = def.clone();
        info.entry = Some(child.entry().clone());
        info.id = child.id().0;
        info.pid = child.pid();
        info.since = Instant::now();
        info.module = def.module.clone();
        info.artifact = artifact;
    }

    /// A swap has put `child` (running `def`'s module) in the old one's place.
    pub(super) async fn swapped(&self, child: &Child, def: &GuestDef) {
        let artifact = artifact_hash(&def.module).await;
        let mut info = self.info();
        info.def = def.clone();
        info.entry = Some(child.entry().clone());
        info.id = child.id().0;
        info.pid = child.pid();
        info.module = def.module.clone();
        info.artifact = artifact;
    }

    /// `top`'s row: the counters of the running instance, its mailbox, its
    /// calls, and what the kernel says of its process.
    fn metrics(&self, relay: &crate::relay::Relay) -> Value {
        use std::sync::atomic::Ordering::Relaxed;
        let info = self.info();
        let running = info.state == State::Running;
        let mut row = json!({
            "name": self.name,
            "state": info.state.as_str(),
            "pid": if running { Some(info.pid) } else { None },
        });
        if let Some(entry) = &info.entry {
            let c = &entry.counters;
            let (owed, made) = relay.calls_pending_for(entry.id);
            row["msgs_in"] = json!(c.msgs_in.load(Relaxed));
            row["bytes_in"] = json!(c.bytes_in.load(Relaxed));
            row["msgs_out"] = json!(c.msgs_out.load(Relaxed));
            row["bytes_out"] = json!(c.bytes_out.load(Relaxed));
            row["undeliverable"] = json!(c.undeliverable.load(Relaxed));
            row["memory_bytes"] = json!(c.memory.load(Relaxed));
            row["mailbox"] = json!(entry.mailbox.len());
            row["mailbox_high_water"] = json!(entry.mailbox.high_water());
            row["calls_to_answer"] = json!(owed);
            row["calls_waiting"] = json!(made);
            row["unknown_outcome"] = json!(c.unknown_outcome.load(Relaxed));
        }
        if running && let Some((rss, cpu_ms)) = crate::os::procfs::usage(info.pid) {
            let alive_ms = info.since.elapsed().as_millis().max(1) as u64;
            row["rss_bytes"] = json!(rss);
            row["cpu_ms"] = json!(cpu_ms);
            row["cpu_percent"] =
                json!((cpu_ms as f64 * 100.0 / alive_ms as f64 * 10.0).round() / 10.0);
        }
        row
    }

    /// A run ended with `status`; the instance is now `state`.
    pub(super) fn set_ended(&self, status: &ExitStatus, state: State) {
        let mut info = self.info();
        info.state = state;
        info.pid = 0;
        info.last_exit = Some(status.to_string());
        info.last_success = status.success();
    }

    /// It is being started again.
    pub(super) fn restarted(&self) {
        let mut info = self.info();
        info.restarts += 1;
        info.state = State::Starting;
    }

    /// `ps`'s row.
    fn row(&self) -> Value {
        let info = self.info();
        let live = matches!(info.state, State::Running);
        json!({
            "name": self.name,
            "group": self.group,
            "id": info.id,
            "pid": if live { Some(info.pid) } else { None },
            "state": info.state.as_str(),
            "uptime_ms": if live { Some(info.since.elapsed().as_millis() as u64) } else { None },
            "restarts": info.restarts,
            "last_exit": info.last_exit,
            "module": info.module.display().to_string(),
            "artifact": info.artifact,
        })
    }
}

/// The group the instances of `def` join, if any.
pub(super) fn group_of(def: &GuestDef) -> Option<String> {
    def.group
        .clone()
        .or_else(|| (def.replicas > 1).then(|| def.name.clone()))
}

/// The start of the artifact hash of `module` (the cache has it already).
async fn artifact_hash(module: &Path) -> String {
    match Cache::global().artifact(module).await {
        Ok(artifact) => artifact
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().chars().take(12).collect())
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// One line a guest wrote.
#[derive(Debug, Clone)]
struct LogLine {
    at: SystemTime,
    stream: Stream,
    line: String,
}

/// Each guest's recent output, capped in bytes.
#[derive(Debug, Default)]
struct Logs {
    by_guest: BTreeMap<String, (VecDeque<LogLine>, usize)>,
}

impl Logs {
    fn push(&mut self, guest: &str, stream: Stream, line: &str) {
        let (lines, bytes) = self.by_guest.entry(guest.to_owned()).or_default();
        *bytes += line.len();
        lines.push_back(LogLine {
            at: SystemTime::now(),
            stream,
            line: line.to_owned(),
        });
        while *bytes > LOG_BYTES {
            match lines.pop_front() {
                Some(old) => *bytes -= old.line.len(),
                None => break,
            }
        }
    }
}

/// The app's log file: every guest's output, timestamped, renamed to
/// `FILE.1` past its size and begun again.
#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    file: std::fs::File,
    written: u64,
    max: u64,
}

impl LogFile {
    fn open(path: &Path, max: u64) -> std::io::Result<LogFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let written = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_owned(),
            file,
            written,
            max,
        })
    }

    fn write(&mut self, guest: &str, stream: Stream, line: &str) {
        use std::io::Write;
        let text = format!(
            "{} {guest}{} {line}\n",
            humantime::format_rfc3339_millis(SystemTime::now()),
            if stream == Stream::Stderr { " !" } else { " |" }
        );
        if self.written > 0 && self.written + text.len() as u64 > self.max {
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            let reopened = std::fs::rename(&self.path, &old)
                .and_then(|()| LogFile::open(&self.path, self.max));
            match reopened {
                Ok(fresh) => *self = fresh,
                Err(err) => tracing::warn!("cannot rotate {}: {err}", self.path.display()),
            }
        }
        if self.file.write_all(text.as_bytes()).is_ok() {
            self.written += text.len() as u64;
        }
    }
}

/// A running app.
#[derive(Debug)]
pub struct Live {
    pub(super) host: Host,
    pub(super) shutdown: CancellationToken,
    /// Whether the app stays up when every guest has ended (`up`), so that
    /// verbs can start guests again.
    pub(super) stay_up: bool,
    events: mpsc::Sender<Event>,
    subscribers: broadcast::Sender<Event>,
    slots: Mutex<BTreeMap<String, Arc<Slot>>>,
    logs: Mutex<Logs>,
    log_file: Option<Mutex<LogFile>>,
    pub(super) tasks: TaskTracker,
    /// The cluster this host is a node of, and where the manifest placed
    /// each instance (instance, node).
    cluster: std::sync::OnceLock<(crate::cluster::Cluster, Vec<(String, String)>)>,
}

/// The JSON answer of a verb: `Ok` fields, or an error message.
pub type Answer = Result<Value, String>;

/// How long a node of the cluster may take to answer one step of a move.
const MOVE_ASK: Duration = Duration::from_secs(5);

impl Live {
    pub(super) fn new(
        host: Host,
        events: mpsc::Sender<Event>,
        shutdown: CancellationToken,
        stay_up: bool,
        settings: &wasmproc_manifest::AppSettings,
    ) -> std::io::Result<Arc<Live>> {
        let log_file = match &settings.log_file {
            Some(path) => Some(Mutex::new(LogFile::open(path, settings.log_size)?)),
            None => None,
        };
        Ok(Arc::new(Live {
            log_file,
            host,
            shutdown,
            stay_up,
            events,
            subscribers: broadcast::Sender::new(SUBSCRIBER_BACKLOG),
            slots: Mutex::new(BTreeMap::new()),
            logs: Mutex::new(Logs::default()),
            tasks: TaskTracker::new(),
            cluster: std::sync::OnceLock::new(),
        }))
    }

    /// Make this app a node of `cluster`, its manifest's instances placed
    /// as `placements` says (instance, node).
    pub(super) fn join(&self, cluster: crate::cluster::Cluster, placements: Vec<(String, String)>) {
        let _ = self.cluster.set((cluster, placements));
    }

    /// The cluster this host is a node of.
    pub fn cluster(&self) -> Option<&crate::cluster::Cluster> {
        self.cluster.get().map(|(c, _)| c)
    }

    /// Where the manifest placed each instance (instance, node), in a
    /// cluster.
    pub(super) fn placements(&self) -> &[(String, String)] {
        self.cluster.get().map_or(&[], |(_, p)| p.as_slice())
    }

    fn slots(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record an event (output goes to the logs) and pass it on to the
    /// printer and to subscribers.
    pub(super) async fn emit(&self, event: Event) {
        if let Event::Output {
            guest,
            stream,
            line,
        } = &event
        {
            self.logs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(guest, *stream, line);
            if let Some(file) = &self.log_file {
                file.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write(guest, *stream, line);
            }
        }
        let _ = self.subscribers.send(event.clone());
        let _ = self.events.send(event).await;
    }

    /// Events from now on, for a `subscribe` connection.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.subscribers.subscribe()
    }

    /// Supervise instance `name` of `def`, started as `first` (or started by
    /// the supervisor).
    pub(super) fn adopt(self: &Arc<Self>, def: &GuestDef, name: &str, first: Option<Child>) {
        let (control, verbs) = mpsc::channel(CONTROL_BACKLOG);
        let slot = Arc::new(Slot {
            name: name.to_owned(),
            group: group_of(def),
            control,
            info: Mutex::new(Info {
                state: State::Starting,
                id: 0,
                pid: 0,
                since: Instant::now(),
                restarts: 0,
                last_exit: None,
                last_success: false,
                module: def.module.clone(),
                artifact: String::new(),
                entry: None,
                def: def.clone(),
            }),
        });
        self.slots().insert(name.to_owned(), slot.clone());
        self.tasks
            .spawn(supervise(self.clone(), def.clone(), slot, first, verbs));
    }

    /// Whether every instance's last run exited with code 0.
    pub(super) fn clean(&self) -> bool {
        self.slots().values().all(|slot| slot.info().last_success)
    }

    /// The instances `target` names: one by name, or every member of a group.
    fn targets(&self, target: &str) -> Result<Vec<Arc<Slot>>, String> {
        let slots = self.slots();
        if let Some(slot) = slots.get(target) {
            return Ok(vec![slot.clone()]);
        }
        let members: Vec<Arc<Slot>> = slots
            .values()
            .filter(|s| s.group.as_deref() == Some(target))
            .cloned()
            .collect();
        if members.is_empty() {
            return Err(format!("no guest or group `{target}` in this app"));
        }
        Ok(members)
    }

    /// `ps`: every instance, by name.
    pub fn ps(&self) -> Answer {
        let node = self.cluster().map(|c| c.node().to_owned());
        let rows: Vec<Value> = self
            .slots()
            .values()
            .map(|s| {
                let mut row = s.row();
                row["node"] = json!(node);
                row
            })
            .collect();
        Ok(json!({ "guests": rows, "cluster": self.cluster_stats() }))
    }

    /// `top`: every instance's numbers, and the host's.
    pub fn metrics(&self) -> Answer {
        let relay = self.host.relay();
        let node = self.cluster().map(|c| c.node().to_owned());
        let rows: Vec<Value> = self
            .slots()
            .values()
            .map(|s| {
                let mut row = s.metrics(relay);
                if node.is_some() {
                    row["node"] = json!(node);
                }
                row
            })
            .collect();
        Ok(json!({
            "guests": rows,
            "late_replies": self.host.late_replies(),
            "dropped_notices": self.host.dropped_notices(),
            "cluster": self.cluster_stats(),
        }))
    }

    /// `stop` / `restart`: one instance, or a group one member at a time.
    pub async fn stop_or_restart(&self, target: &str, restart: bool) -> Answer {
        let mut done = Vec::new();
        for slot in self.targets(target)? {
            let verb = if restart {
                Control::Restart
            } else {
                Control::Stop
            };
            let said = self.tell(&slot, verb).await?;
            if restart {
                // Rolling: the next member goes once this one runs again.
                self.wait_running(&slot).await;
            }
            done.push(said);
        }
        Ok(json!({ "done": done }))
    }

    /// Wait (a while) until `slot` runs again after a restart.
    async fn wait_running(&self, slot: &Slot) {
        for _ in 0..500 {
            if slot.info().state == State::Running {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Send `slot` a verb that is answered with a line of text.
    async fn tell(
        &self,
        slot: &Slot,
        verb: impl FnOnce(oneshot::Sender<Result<String, String>>) -> Control,
    ) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        slot.control
            .send(verb(reply))
            .await
            .map_err(|_| format!("{} is no longer supervised", slot.name))?;
        answer
            .await
            .map_err(|_| format!("{} ended meanwhile", slot.name))?
            .map_err(|err| format!("{}: {err}", slot.name))
    }

    /// Stop the instances of table `table` and forget them.
    async fn remove(&self, table: &str) -> Result<Vec<String>, String> {
        let slots: Vec<Arc<Slot>> = self
            .slots()
            .values()
            .filter(|s| s.info().def.name == table)
            .cloned()
            .collect();
        let mut said = Vec::new();
        for slot in slots {
            said.push(self.tell(&slot, Control::Remove).await?);
            self.slots().remove(&slot.name);
        }
        Ok(said)
    }

    /// `reload`: make the app what `manifest` says. A table that is new is
    /// started; one that is gone is stopped; one whose module alone changed
    /// (its path, or the file's contents) is swapped, instance by instance;
    /// one whose other settings changed is restarted with them (or, with a
    /// new number of replicas, replaced). What it did, a line each.
    pub async fn reload(self: &Arc<Self>, manifest: &wasmproc_manifest::Manifest) -> Answer {
        let mut running: BTreeMap<String, (GuestDef, Vec<Arc<Slot>>, String)> = BTreeMap::new();
        for slot in self.slots().values() {
            let info = slot.info();
            let entry = running
                .entry(info.def.name.clone())
                .or_insert_with(|| (info.def.clone(), Vec::new(), info.artifact.clone()));
            entry.1.push(slot.clone());
        }
        let mut done = Vec::new();
        for def in &manifest.guests {
            let Some((old, slots, artifact)) = running.remove(&def.name) else {
                self.start(def.clone()).await?;
                done.push(format!("added {}", def.name));
                continue;
            };
            let same_module =
                old.module == def.module && artifact_hash(&def.module).await == artifact;
            let mut module_only = old.clone();
            module_only.module = def.module.clone();
            if same_module && old == *def {
                done.push(format!("unchanged {}", def.name));
            } else if module_only == *def {
                for slot in &slots {
                    let swapped = self.swap(&slot.name, def.module.clone(), def.grace).await?;
                    done.push(format!(
                        "swapped {} ({} moved, {} drained, {} returned)",
                        slot.name, swapped["moved"], swapped["drained"], swapped["returned"]
                    ));
                }
            } else if old.replicas == def.replicas {
                for slot in &slots {
                    let new = Box::new(def.clone());
                    done.push(
                        self.tell(slot, |reply| Control::Replace { def: new, reply })
                            .await?,
                    );
                }
            } else {
                self.remove(&def.name).await?;
                self.start(def.clone()).await?;
                done.push(format!(
                    "replaced {} ({} → {} replicas)",
                    def.name, old.replicas, def.replicas
                ));
            }
        }
        for table in running.keys() {
            done.extend(self.remove(table).await?);
        }
        Ok(json!({ "done": done }))
    }

    /// `swap`: replace instance `name`'s module with `module`.
    pub async fn swap(self: &Arc<Self>, name: &str, module: PathBuf, drain: Duration) -> Answer {
        let slot = self.slots().get(name).cloned();
        let Some(slot) = slot else {
            return self.move_here(name, module, drain).await;
        };
        Cache::global()
            .artifact(&module)
            .await
            .map_err(|err| err.to_string())?;
        let (reply, answer) = oneshot::channel();
        slot.control
            .send(Control::Swap {
                module,
                drain,
                reply,
            })
            .await
            .map_err(|_| format!("{name} is no longer supervised"))?;
        let Swapped {
            moved,
            drained,
            returned,
            old_status,
        } = answer
            .await
            .map_err(|_| format!("{name} ended meanwhile"))??;
        Ok(json!({
            "moved": moved,
            "drained": drained,
            "returned": returned,
            "old": old_status.to_string(),
        }))
    }

    /// `swap` of a guest that runs on another node of the cluster: move it
    /// here with the same no-loss swap. Its settings come from the node it
    /// runs on, its module is `module`; the new instance starts here as a
    /// standby, and once it is ready, that node hands the guest over
    /// ([`crate::cluster::Cluster::hand_over`]), lets the old instance
    /// drain, and supervises it no more; this host supervises the new one.
    async fn move_here(self: &Arc<Self>, name: &str, module: PathBuf, drain: Duration) -> Answer {
        let unknown =
            || format!("no guest `{name}` in this app (swap one member of a group at a time)");
        let cluster = self.cluster().ok_or_else(unknown)?;
        let from = self
            .host
            .relay()
            .lookup(name)
            .and_then(|entry| entry.remote.clone())
            .ok_or_else(unknown)?;
        let asked = |verb: &str, answer: Result<Value, String>| match answer {
            Ok(answer) if answer["ok"] == true => Ok(answer),
            Ok(answer) => Err(format!(
                "node `{from}` refused `{verb}` of `{name}`: {}",
                answer["error"].as_str().unwrap_or("no reason given")
            )),
            Err(err) => Err(err),
        };
        let describe = json!({ "verb": "describe", "target": name });
        let described = asked(
            "describe",
            cluster.forward(&from, &describe, MOVE_ASK).await,
        )?;
        let mut def: GuestDef =
            serde_json::from_value(described["def"].clone()).map_err(|err| {
                format!("node `{from}` described `{name}` in a way this host cannot read: {err}")
            })?;
        def.module = module;
        Cache::global()
            .artifact(&def.module)
            .await
            .map_err(|err| err.to_string())?;
        let standby = command_for(&self.host, &def, name)
            .standby()
            .fork()
            .await
            .map_err(|err| format!("the new module did not start: {err}"))?;
        tokio::select! {
            () = standby.ready() => {}
            status = standby.wait() => {
                return Err(format!("the new instance ended before it was ready: {status}"));
            }
            () = tokio::time::sleep(super::supervise::SWAP_READY) => {
                standby.kill();
                standby.wait().await;
                return Err(format!(
                    "the new instance was not ready within {:?}; `{name}` stays on node `{from}`",
                    super::supervise::SWAP_READY
                ));
            }
        }
        let move_out = json!({
            "verb": "move-out",
            "target": name,
            "to": cluster.node(),
            "id": standby.id().0,
            "drain_ms": drain.as_millis() as u64,
        });
        let answer = asked(
            "move-out",
            cluster
                .forward(&from, &move_out, drain + MOVE_ASK * 6)
                .await,
        );
        let here = self.host.relay().lookup(name).map(|e| e.id) == Some(standby.id());
        let answer = match answer {
            Ok(answer) => answer,
            // The name leads here already: the hand-over happened, and
            // only its answer was lost.
            Err(err) if here => {
                tracing::warn!(
                    "wasmproc: `{name}` moved here, but node `{from}` did not say how: {err}"
                );
                json!({ "moved": 0, "drained": 0, "returned": 0, "old": "unknown" })
            }
            Err(err) => {
                standby.kill();
                standby.wait().await;
                return Err(format!("`{name}` stays on node `{from}`: {err}"));
            }
        };
        let number = |key: &str| answer[key].as_u64().unwrap_or(0);
        self.adopt(&def, name, Some(standby));
        self.emit(Event::Swapped {
            guest: name.to_owned(),
            moved: number("moved"),
            drained: number("drained"),
            returned: number("returned"),
        })
        .await;
        Ok(json!({
            "moved": number("moved"),
            "held": number("held"),
            "drained": number("drained"),
            "returned": number("returned"),
            "old": answer["old"],
            "unheld": answer["unheld"],
            "from": from,
            "node": cluster.node(),
        }))
    }

    /// `describe`: the settings guest `name` runs with (for a node it
    /// moves to).
    pub fn describe(&self, name: &str) -> Answer {
        let slot = self
            .slots()
            .get(name)
            .cloned()
            .ok_or_else(|| format!("no guest `{name}` on this node"))?;
        let def = slot.info().def.clone();
        let def = serde_json::to_value(&def).map_err(|err| err.to_string())?;
        Ok(json!({ "def": def }))
    }

    /// `move-out`: hand guest `name` over to its new instance, guest `id`
    /// of node `node` (see [`Live::move_here`] there), let the old one
    /// drain, and supervise it no more here.
    pub async fn move_out(&self, name: &str, node: &str, id: u64, drain: Duration) -> Answer {
        let slot = self
            .slots()
            .get(name)
            .cloned()
            .ok_or_else(|| format!("no guest `{name}` on this node"))?;
        let (reply, answer) = oneshot::channel();
        slot.control
            .send(Control::MoveOut {
                node: node.to_owned(),
                id,
                drain,
                reply,
            })
            .await
            .map_err(|_| format!("{name} is no longer supervised"))?;
        let (swapped, handed) = answer
            .await
            .map_err(|_| format!("{name} ended meanwhile"))??;
        self.slots().remove(name);
        Ok(json!({
            "moved": swapped.moved,
            "held": handed.held,
            "unheld": handed.unheld,
            "drained": swapped.drained,
            "returned": swapped.returned,
            "old": swapped.old_status.to_string(),
        }))
    }

    /// `start`: plug a new guest (every instance of `def`) into the app,
    /// under the manifest's rules.
    pub async fn start(self: &Arc<Self>, def: GuestDef) -> Answer {
        let names = def.instance_names();
        {
            let slots = self.slots();
            if let Some(group) = &def.group
                && !valid_name(group)
            {
                return Err(format!(
                    "`{group}` is not a valid group name: {}",
                    wasmproc_protocol::contract::NAME_RULE
                ));
            }
            for name in names.iter().chain(std::iter::once(&def.name)) {
                if !valid_name(name) {
                    return Err(format!(
                        "`{name}` is not a valid guest name: {}",
                        wasmproc_protocol::contract::NAME_RULE
                    ));
                }
                if slots.contains_key(name)
                    || slots.values().any(|s| s.group.as_deref() == Some(name))
                {
                    return Err(format!("`{name}` is in the app already"));
                }
            }
            if let Some(talks_to) = &def.talks_to {
                for to in talks_to {
                    let known = slots.contains_key(to)
                        || slots
                            .values()
                            .any(|s| s.group.as_deref() == Some(to.as_str()))
                        || *to == def.name;
                    if !known {
                        return Err(format!("talks-to: `{to}` names no guest or group"));
                    }
                }
            }
        }
        let mut commands: Vec<crate::Command> = names
            .iter()
            .map(|name| command_for(&self.host, &def, name))
            .collect();
        let children = self
            .host
            .fork_all(&mut commands)
            .await
            .map_err(|err| err.to_string())?;
        for (name, child) in names.iter().zip(children) {
            self.adopt(&def, name, Some(child));
        }
        Ok(json!({ "started": names }))
    }

    /// The address a verb's target means: a group by its name, else a name.
    fn address(&self, target: &str) -> Address {
        let is_group = self
            .slots()
            .values()
            .any(|s| s.group.as_deref() == Some(target));
        if is_group {
            Address::Group(target.to_owned())
        } else {
            Address::Name(target.to_owned())
        }
    }

    /// `send`: from the parent to a guest or a group's next member.
    pub fn send(&self, target: &str, payload: Vec<u8>) -> Answer {
        self.host
            .send(&self.address(target), payload)
            .map_err(|err| err.to_string())?;
        Ok(json!({ "sent": true }))
    }

    /// `call`: from the parent, waiting for the reply.
    pub async fn call(&self, target: &str, payload: Vec<u8>, timeout: Duration) -> Answer {
        let reply = self
            .host
            .call(&self.address(target), payload, timeout)
            .await
            .map_err(|err| format!("the call failed: {err}"))?;
        Ok(json!({ "reply": encode_bytes(&reply) }))
    }

    /// `logs`: the last `n` lines of `target` (a guest or a group; every
    /// guest when `None`), oldest first, none older than `since`. An
    /// unknown target is an error,
    /// unless `known_later` (a follower waits for it).
    pub fn logs(
        &self,
        target: Option<&str>,
        n: usize,
        since: Option<SystemTime>,
        known_later: bool,
    ) -> Answer {
        let wanted: Option<Vec<String>> = match target {
            Some(target) => match self.targets(target) {
                Ok(slots) => Some(slots.iter().map(|s| s.name.clone()).collect()),
                Err(_) if known_later => Some(Vec::new()),
                Err(err) => return Err(err),
            },
            None => None,
        };
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        let mut lines: Vec<(&String, &LogLine)> = logs
            .by_guest
            .iter()
            .filter(|(guest, _)| wanted.as_ref().is_none_or(|w| w.contains(guest)))
            .flat_map(|(guest, (lines, _))| lines.iter().map(move |l| (guest, l)))
            .filter(|(_, l)| since.is_none_or(|since| l.at >= since))
            .collect();
        lines.sort_by_key(|(_, l)| l.at);
        let skip = lines.len().saturating_sub(n);
        let lines: Vec<Value> = lines[skip..]
            .iter()
            .map(|(guest, l)| {
                json!({
                    "guest": guest,
                    "ts_ms": unix_ms(l.at),
                    "stream": if l.stream == Stream::Stdout { "stdout" } else { "stderr" },
                    "line": l.line,
                })
            })
            .collect();
        Ok(json!({ "lines": lines }))
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Bytes for JSON and for people: the text when it is printable UTF-8
/// (tabs allowed), else `hex:` and the bytes.
pub fn encode_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(|c| c.is_control() && c != '\t') => text.to_owned(),
        _ => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("hex:{hex}")
        }
    }
}

/// The inverse of [`encode_bytes`].
///
/// # Errors
///
/// A `hex:` string that is not hex.
pub fn decode_bytes(text: &str) -> Result<Vec<u8>, String> {
    let Some(hex) = text.strip_prefix("hex:") else {
        return Ok(text.as_bytes().to_vec());
    };
    if hex.len() % 2 != 0 {
        return Err("hex: needs an even number of digits".to_owned());
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| format!("`{text}` is not hex")))
        .collect()
}
