//! Apps of cooperating guests: a manifest's guests started together,
//! supervised, and shut down together (what PM2 and Node's `cluster` give
//! Node users).
//!
//! The guests start together: every module is compiled and every instance
//! registered before the first one runs, so a guest can send to any other
//! from its first instruction (and a module that does not compile stops the
//! app before anything starts). Each instance then has a supervising task:
//! forward its output line by line, wait for it to end, then apply its
//! restart policy with exponential backoff. Runs shorter than `min-uptime` count toward the
//! crash loop; past `max-restarts` of them within `restart-window` the
//! supervisor gives up on that guest. On shutdown every guest gets a
//! `shutdown` item, and whatever is still running after its `grace` is
//! killed. Everything that happens is an [`Event`] on one channel.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use wasmproc_manifest::{GuestDef, Manifest};

pub mod control;
mod live;
pub mod metrics;
mod nodes;
mod supervise;

pub use live::{Live, decode_bytes, encode_bytes, unix_ms};
pub use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, ClusterConfig};
use crate::command::{Command, default_arg0};
use crate::host::Host;
use crate::os::Stdio;
use crate::os::limits::{
    FILES_PER_GUEST, FILES_PER_GUEST_ON_SOCKETS, guests_for, raise_open_files,
};
use crate::status::ExitStatus;

/// Longest output line forwarded whole; longer lines are cut.
const MAX_LINE: usize = 64 * 1024;
/// Events buffered between the app and whoever prints them.
pub const EVENT_CAPACITY: usize = 4096;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Something that happened in an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started {
        guest: String,
        id: u64,
        pid: u32,
    },
    Output {
        guest: String,
        stream: Stream,
        line: String,
    },
    Exited {
        guest: String,
        status: ExitStatus,
        uptime: Duration,
    },
    Restarting {
        guest: String,
        attempt: u32,
        delay: Duration,
    },
    GaveUp {
        guest: String,
        restarts: u32,
        window: Duration,
    },
    Refused {
        from: String,
        to: String,
    },
    /// A swap replaced the guest's module; what became of its messages.
    Swapped {
        guest: String,
        moved: u64,
        drained: u64,
        returned: u64,
    },
    /// The guest moved to another node (`swap --node`): its new instance
    /// runs there, and this host supervises it no more.
    MovedAway {
        guest: String,
        node: String,
    },
    /// A guest sent its parent (the app) a message, or called it (`call`:
    /// an app answers no calls; the caller's deadline ends it).
    ToParent {
        guest: String,
        /// The payload as text, or `hex:` and its bytes.
        payload: String,
        call: bool,
    },
    /// A message the app sent a guest (`wasmproc send`) came back.
    Returned {
        guest: String,
        reason: String,
        bytes: u64,
    },
    /// A control request came (`verb` and its target, as given).
    Request {
        verb: String,
        target: String,
    },
    /// The app shuts down (`down`, SIGTERM or Ctrl-C).
    ShuttingDown,
    /// A guest of the manifest is placed on a node that has not joined the
    /// cluster (a while after this host joined): it runs nowhere.
    NodeMissing {
        guest: String,
        node: String,
    },
    /// The app has stopped and the host dropped notices rather than wait
    /// for a guest that did not read its mailbox (see
    /// [`Host::dropped_notices`]); sent only when there were any.
    Stopped {
        dropped_notices: u64,
    },
}

impl Event {
    /// The event as one JSON object, with the time it is written (`ts_ms`,
    /// milliseconds since the Unix epoch).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let mut value = match self {
            Event::Started { guest, id, pid } => {
                json!({"event": "started", "guest": guest, "id": id, "pid": pid})
            }
            Event::Output {
                guest,
                stream,
                line,
            } => json!({
                "event": "output",
                "guest": guest,
                "stream": if *stream == Stream::Stdout { "stdout" } else { "stderr" },
                "line": line,
            }),
            Event::Exited {
                guest,
                status,
                uptime,
            } => json!({
                "event": "exited",
                "guest": guest,
                "reason": status.to_string(),
                "code": status.code(),
                "uptime_ms": uptime.as_millis() as u64,
            }),
            Event::Restarting {
                guest,
                attempt,
                delay,
            } => json!({
                "event": "restarted",
                "guest": guest,
                "attempt": attempt,
                "delay_ms": delay.as_millis() as u64,
            }),
            Event::GaveUp {
                guest,
                restarts,
                window,
            } => json!({
                "event": "gave-up",
                "guest": guest,
                "restarts": restarts,
                "window_ms": window.as_millis() as u64,
            }),
            Event::Refused { from, to } => json!({"event": "refused", "from": from, "to": to}),
            Event::Swapped {
                guest,
                moved,
                drained,
                returned,
            } => json!({
                "event": "swapped",
                "guest": guest,
                "moved": moved,
                "drained": drained,
                "returned": returned,
            }),
            Event::MovedAway { guest, node } => {
                json!({"event": "moved-away", "guest": guest, "node": node})
            }
            Event::Request { verb, target } => {
                json!({"event": "request", "verb": verb, "target": target})
            }
            Event::ToParent {
                guest,
                payload,
                call,
            } => json!({"event": "to-parent", "guest": guest, "payload": payload, "call": call}),
            Event::Returned {
                guest,
                reason,
                bytes,
            } => json!({"event": "returned", "guest": guest, "reason": reason, "bytes": bytes}),
            Event::ShuttingDown => json!({"event": "shutting-down"}),
            Event::NodeMissing { guest, node } => {
                json!({"event": "node-missing", "guest": guest, "node": node})
            }
            Event::Stopped { dropped_notices } => {
                json!({"event": "stopped", "dropped_notices": dropped_notices})
            }
        };
        value["ts_ms"] = json!(unix_ms(std::time::SystemTime::now()));
        value
    }
}

/// Why an app did not start at all.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// More guests than this process can hold open.
    #[error(
        "the app has {guests} guests, but this host can start at most {capacity} \
         with a limit of {files} open files ({FILES_PER_GUEST} each in the first half of it, \
         {FILES_PER_GUEST_ON_SOCKETS} in the second): raise the limit with `ulimit -n` or run \
         fewer replicas"
    )]
    TooManyGuests {
        guests: u64,
        capacity: u64,
        files: u64,
    },
    /// The open-files limit cannot be read.
    #[error("cannot read the open-files limit: {0}")]
    Limits(#[source] std::io::Error),
    /// The manifest's `log-file` cannot be written.
    #[error("cannot open the app's log file: {0}")]
    LogFile(#[source] std::io::Error),
    /// The host could not join its cluster.
    #[error(transparent)]
    Join(#[from] crate::cluster::JoinError),
    /// In a cluster, a guest table without `node` or `nodes`.
    #[error(
        "guest `{0}` is not placed: in a cluster every guest says where it runs \
         (`node = \"a\"`, or `nodes = [\"a\", \"b\"]` for replicas)"
    )]
    Unplaced(String),
}

/// Check that this process can hold every guest of `manifest` at once,
/// before any starts (after raising its soft open-files limit to the hard
/// one).
///
/// # Errors
///
/// [`AppError::TooManyGuests`] with the number it can take.
pub fn check_capacity(manifest: &Manifest) -> Result<(), AppError> {
    let guests: u64 = manifest.guests.iter().map(|g| u64::from(g.replicas)).sum();
    let files = raise_open_files().map_err(AppError::Limits)?;
    let capacity = guests_for(files);
    if guests > capacity {
        return Err(AppError::TooManyGuests {
            guests,
            capacity,
            files,
        });
    }
    Ok(())
}

/// Run every guest of `manifest` until all have ended for good, or until
/// `shutdown` is cancelled (then every guest gets `shutdown`, and a kill
/// after its grace period). Returns whether every guest's last run ended
/// with exit code 0.
///
/// # Errors
///
/// Before anything starts, when this process cannot hold every guest
/// (see [`check_capacity`]).
pub async fn run(
    manifest: &Manifest,
    events: mpsc::Sender<Event>,
    shutdown: CancellationToken,
) -> Result<bool, AppError> {
    let Some(live) = start(manifest, events, shutdown, false).await? else {
        return Ok(false);
    };
    Ok(finish(&live).await)
}

/// Start every guest of `manifest` and its supervisor: the app, live.
/// `None` when a guest could not start (nothing runs then; the event says
/// why). With `stay_up` the app stays up when every guest has ended, until
/// `shutdown`.
///
/// # Errors
///
/// As [`run`].
pub async fn start(
    manifest: &Manifest,
    events: mpsc::Sender<Event>,
    shutdown: CancellationToken,
    stay_up: bool,
) -> Result<Option<Arc<Live>>, AppError> {
    start_in(manifest, events, shutdown, stay_up, None).await
}

/// [`start`], as a node of `cluster`: join it first, then start only the
/// instances placed on this node.
///
/// # Errors
///
/// As [`run`]; and when the cluster cannot be joined, or a guest is not
/// placed.
pub async fn start_in(
    manifest: &Manifest,
    events: mpsc::Sender<Event>,
    shutdown: CancellationToken,
    stay_up: bool,
    cluster: Option<ClusterConfig>,
) -> Result<Option<Arc<Live>>, AppError> {
    check_capacity(manifest)?;
    if cluster.is_some()
        && let Some(def) = manifest.guests.iter().find(|def| def.nodes.is_empty())
    {
        return Err(AppError::Unplaced(def.name.clone()));
    }
    let host = Host::new();
    let joined = match cluster {
        Some(config) => Some(Cluster::join(config, host.relay().clone(), shutdown.clone()).await?),
        None => None,
    };
    let live = Live::new(host.clone(), events, shutdown, stay_up, &manifest.app)
        .map_err(AppError::LogFile)?;
    if let Some(cluster) = &joined {
        let placements = manifest
            .guests
            .iter()
            .flat_map(|def| {
                def.instance_names()
                    .into_iter()
                    .enumerate()
                    .filter_map(move |(i, name)| def.node_of(i).map(|n| (name, n.to_owned())))
            })
            .collect();
        live.join(cluster.clone(), placements);
        let weak = Arc::downgrade(&live);
        cluster.serve_control(Arc::new(move |request| {
            let weak = weak.clone();
            Box::pin(async move {
                match weak.upgrade() {
                    Some(live) => control::respond(&live, &request, serde_json::Value::Null).await,
                    None => serde_json::json!({"ok": false, "error": "the app is shutting down"}),
                }
            })
        }));
        tokio::spawn(report_missing_nodes(Arc::downgrade(&live)));
    }
    let (refusals_tx, mut refusals) = mpsc::channel(256);
    host.relay().report_refusals(refusals_tx);
    // Weakly: once the app is gone, so is its event channel.
    let forward = Arc::downgrade(&live);
    tokio::spawn(async move {
        while let Some(refusal) = refusals.recv().await {
            let Some(live) = forward.upgrade() else {
                return;
            };
            let from = refusal
                .from_name
                .unwrap_or_else(|| refusal.from.to_string());
            live.emit(Event::Refused {
                from,
                to: refusal.to.to_string(),
            })
            .await;
        }
    });

    let here = joined.as_ref().map(|c| c.node().to_owned());
    let instances: Vec<(&GuestDef, String)> = manifest
        .guests
        .iter()
        .flat_map(|def| {
            let here = here.clone();
            def.instance_names()
                .into_iter()
                .enumerate()
                .filter(move |(i, _)| here.is_none() || def.node_of(*i) == here.as_deref())
                .map(move |(_, name)| (def, name))
        })
        .collect();
    let mut commands: Vec<Command> = instances
        .iter()
        .map(|(def, name)| command_for(&host, def, name))
        .collect();
    let children = match host.fork_all(&mut commands).await {
        Ok(children) => children,
        Err(err) => {
            live.emit(Event::Exited {
                guest: instances[err.index].1.clone(),
                status: ExitStatus::Failed {
                    reason: err.to_string(),
                },
                uptime: Duration::ZERO,
            })
            .await;
            return Ok(None);
        }
    };
    for ((def, name), child) in instances.into_iter().zip(children) {
        live.adopt(def, &name, Some(child));
    }
    Ok(Some(live))
}

/// Wait for a started app to end (with `stay_up`: for `shutdown`, then for
/// its guests); whether every guest's last run exited with code 0.
pub async fn finish(live: &Arc<Live>) -> bool {
    if live.stay_up {
        live.shutdown.cancelled().await;
    }
    live.tasks.close();
    live.tasks.wait().await;
    if let Some(cluster) = live.cluster() {
        cluster.leave().await;
    }
    let dropped_notices = live.host.dropped_notices();
    if dropped_notices > 0 {
        live.emit(Event::Stopped { dropped_notices }).await;
    }
    live.clean()
}

/// How long after joining a host says which placed nodes have not joined.
const JOIN_GRACE: Duration = Duration::from_secs(5);

/// Say (once) which instances wait for a node that has not joined, so a
/// misplaced guest is reported rather than silently absent.
async fn report_missing_nodes(live: std::sync::Weak<Live>) {
    tokio::time::sleep(JOIN_GRACE).await;
    let Some(live) = live.upgrade() else { return };
    for (guest, node) in live.missing_nodes() {
        live.emit(Event::NodeMissing { guest, node }).await;
    }
}

/// The command that starts instance `name` of `def`.
pub fn command_for(host: &Host, def: &GuestDef, name: &str) -> crate::Command {
    let mut command = host.command(&def.module);
    command
        .arg0(default_arg0(&def.module))
        .args(def.args.iter().cloned())
        .envs(def.env.iter().cloned())
        .name(name)
        .stdin(Stdio::Null)
        .stdout(Stdio::Piped)
        .stderr(Stdio::Piped);
    if let Some(talks_to) = &def.talks_to {
        command.talks_to(talks_to.iter().cloned());
    }
    if let Some(group) = live::group_of(def) {
        command.group(group);
    }
    for dir in &def.dirs {
        command.preopen(&dir.host, &dir.guest, dir.read_only);
    }
    command.limits(&def.limits);
    command
}

/// Forward a stream's lines as events until it ends (kept reading also
/// when nobody prints any more, so the guest never sees a closed pipe
/// while the host runs).
fn forward_lines<R>(
    stream: Option<R>,
    guest: &str,
    which: Stream,
    live: &Arc<Live>,
) -> tokio::task::JoinHandle<()>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let guest = guest.to_owned();
    let live = live.clone();
    tokio::spawn(async move {
        let Some(stream) = stream else { return };
        let mut lines = Lines::new(stream);
        while let Some(line) = lines.next().await {
            live.emit(Event::Output {
                guest: guest.clone(),
                stream: which,
                line,
            })
            .await;
        }
    })
}

/// A guest's output as lines. A line over [`MAX_LINE`] bytes is replaced by
/// a note and skipped to its end, so a guest cannot make the host buffer
/// without bound, and reading goes on after it.
struct Lines<R> {
    stream: R,
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for a newline.
    scanned: usize,
    /// Inside a line that was too long: drop bytes until its newline.
    skipping: bool,
    ended: bool,
}

impl<R: tokio::io::AsyncRead + Unpin> Lines<R> {
    fn new(stream: R) -> Self {
        Lines {
            stream,
            buf: Vec::with_capacity(8 * 1024),
            scanned: 0,
            skipping: false,
            ended: false,
        }
    }

    /// The next line, without its `\n` (or `\r\n`); `None` at the end.
    async fn next(&mut self) -> Option<String> {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(at) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let end = self.scanned + at;
                let line: Vec<u8> = self.buf.drain(..=end).take(end).collect();
                self.scanned = 0;
                if std::mem::take(&mut self.skipping) {
                    return Some(format!("[line over {MAX_LINE} bytes cut]"));
                }
                return Some(text(&line));
            }
            self.scanned = self.buf.len();
            if self.buf.len() > MAX_LINE {
                self.skipping = true;
                self.buf.clear();
                self.scanned = 0;
            }
            if self.ended {
                if self.buf.is_empty() && !self.skipping {
                    return None;
                }
                let rest = std::mem::take(&mut self.buf);
                self.scanned = 0;
                if std::mem::take(&mut self.skipping) {
                    return Some(format!("[line over {MAX_LINE} bytes cut]"));
                }
                return Some(text(&rest));
            }
            let mut chunk = [0u8; 8 * 1024];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => self.ended = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

fn text(line: &[u8]) -> String {
    String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: Vec<u8>) -> Vec<String> {
        let mut lines = Lines::new(&input[..]);
        let mut out = Vec::new();
        while let Some(line) = lines.next().await {
            out.push(line);
        }
        out
    }

    #[tokio::test]
    async fn an_over_long_line_is_cut_and_reading_goes_on() {
        let mut input = vec![b'x'; 128 * 1024];
        input.push(b'\n');
        for i in 0..10 {
            input.extend_from_slice(format!("line {i}\r\n").as_bytes());
        }
        input.extend_from_slice(b"no newline at the end");
        let mut expected = vec![format!("[line over {MAX_LINE} bytes cut]")];
        expected.extend((0..10).map(|i| format!("line {i}")));
        expected.push("no newline at the end".to_owned());
        assert_eq!(lines_of(input).await, expected);
    }

    #[tokio::test]
    async fn a_line_at_the_limit_is_kept_whole() {
        let mut input = vec![b'y'; MAX_LINE];
        input.extend_from_slice(b"\n\nend\n");
        let lines = lines_of(input).await;
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(&lines[1..], ["", "end"]);
    }
}
