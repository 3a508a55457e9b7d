//! The app manifest, `app.toml`: one `[guests.NAME]` table per guest.
//!
//! ```toml
//! [guests.coordinator]
//! module = "coordinator.wasm"          # relative to this file
//! args = ["2", "3000000", "64", "primes.1", "primes.2"]
//! talks-to = ["primes"]                # names or groups (no key: anyone); the parent is always allowed
//!
//! [guests.primes]
//! module = "primes.wasm"
//! replicas = 2                         # primes.1 and primes.2, group `primes`
//! restart = "on-failure"               # never | on-failure | always
//! max-restarts = 5                     # within restart-window
//! restart-window = "60s"
//! min-uptime = "1s"                    # a shorter run counts toward the crash loop
//! backoff = "100ms"                    # doubles per short run in a row, up to backoff-max
//! backoff-max = "15s"
//! grace = "5s"                         # between `shutdown` and the kill
//! max-memory = "256MiB"                # linear memory (default 512MiB)
//! max-cpu = "10m"                      # CPU time (default: none)
//! max-message-size = "1MiB"            # largest message (default 16MiB)
//! inbox-size = 1000                    # items held in the runner (default 65536)
//! max-call-timeout = "10s"             # longest a call may wait (default 60s)
//!
//! [app]                                # how `wasmproc up` operates it (optional)
//! log-file = "app.log"                 # every guest's output, timestamped
//! log-size = "10MiB"                   # then renamed to app.log.1 and begun again
//! metrics = "127.0.0.1:9464"           # Prometheus text at /metrics
//!
//! [cluster]                            # hosts that form one app over NATS (optional)
//! url = "nats://127.0.0.1:4222"        # the NATS server this host joins through
//! node = "a"                           # this host's node name (or `up --node`)
//! ```
//!
//! In a cluster every guest table is placed: `node = "b"` runs it (all its
//! replicas) on node `b`; `nodes = ["a", "b"]` spreads its replicas over
//! the nodes in turn (`replicas` defaults to the number of nodes). Every
//! host runs the same manifest and starts only what is placed on it.
//!
//! Everything is checked before anything starts: unknown keys, wrong types,
//! missing modules and folders, `talks-to` entries naming nothing, names
//! that collide. Every error names the file, the line and the key. This
//! crate has no wasmtime in it, so it can be fuzzed on its own.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// What happens when a guest ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never start it again.
    Never,
    /// Start it again unless it exited with code 0.
    OnFailure,
    /// Start it again whenever it ends (until the app shuts down).
    Always,
}

/// A host folder a guest sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dir {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

/// One `[guests.NAME]` table, checked and with defaults filled in. It
/// travels as JSON from one host to another when a guest moves there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestDef {
    /// The table's name: the guest's name, or with replicas the group's.
    pub name: String,
    /// The module, resolved against the manifest's folder.
    pub module: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub dirs: Vec<Dir>,
    pub replicas: u32,
    /// The group its instances join, when not the table's own (a table
    /// with replicas is the group of its name). A manifest has no such key;
    /// `wasmproc start --group` sets it.
    pub group: Option<String>,
    /// Names and groups this guest may send to, besides its parent; `None`
    /// (no `talks-to` key): anyone; `Some([])`: only its parent.
    pub talks_to: Option<Vec<String>>,
    pub restart: RestartPolicy,
    pub max_restarts: u32,
    pub restart_window: Duration,
    pub min_uptime: Duration,
    pub backoff: Duration,
    pub backoff_max: Duration,
    pub grace: Duration,
    /// The guest's time and resource limits.
    pub limits: GuestLimits,
    /// The nodes its instances run on, in turn (`node` or `nodes`); empty:
    /// not placed (an app on one host).
    pub nodes: Vec<String>,
}

/// How long a guest may run and what it may use; `None` takes the host's
/// default. The same set the CLI's `--timeout`, `--max-*` and
/// `--inbox-size` flags give.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestLimits {
    pub timeout: Option<Duration>,
    pub max_memory: Option<u64>,
    pub max_cpu: Option<Duration>,
    pub max_message_size: Option<u64>,
    pub inbox_size: Option<u32>,
    /// The longest a call the guest makes may wait for its reply.
    pub max_call_timeout: Option<Duration>,
}

/// Read a size such as `512MiB`, `64 KiB`, `1GB` or `4096` (bytes).
///
/// # Errors
///
/// A message saying what is wrong.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 512MiB, 64KiB or 4096"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "`{other}` is not a size unit (B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

impl GuestDef {
    /// The node instance `index` (0-based, in [`GuestDef::instance_names`]
    /// order) is placed on; `None` when the table is not placed.
    pub fn node_of(&self, index: usize) -> Option<&str> {
        match self.nodes.len() {
            0 => None,
            n => Some(&self.nodes[index % n]),
        }
    }

    /// The names of this table's guests: `NAME` alone, or `NAME.1`..`NAME.N`
    /// with replicas.
    pub fn instance_names(&self) -> Vec<String> {
        if self.replicas == 1 {
            vec![self.name.clone()]
        } else {
            (1..=self.replicas)
                .map(|i| format!("{}.{i}", self.name))
                .collect()
        }
    }
}

/// A checked manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub path: PathBuf,
    /// By name.
    pub guests: Vec<GuestDef>,
    /// The `[app]` table: how the app is operated.
    pub app: AppSettings,
    /// The `[cluster]` table: which NATS server and node this host joins as.
    pub cluster: ClusterSettings,
}

/// The `[cluster]` table of a manifest; `wasmproc up --cluster --node`
/// override it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterSettings {
    /// The NATS server's URL (`url = "nats://127.0.0.1:4222"`).
    pub url: Option<String>,
    /// This host's node name (`node = "a"`).
    pub node: Option<String>,
}

/// The `[app]` table of a manifest (for `wasmproc up`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSettings {
    /// Every guest's output, appended with a timestamp and the guest's
    /// name (`log-file`, relative to the manifest).
    pub log_file: Option<PathBuf>,
    /// Past this size the log file is renamed to `FILE.1` (replacing the
    /// one before) and begun again (`log-size`, default 10 MiB).
    pub log_size: u64,
    /// Serve metrics here (`metrics = "127.0.0.1:9464"`).
    pub metrics: Option<std::net::SocketAddr>,
}

impl Default for AppSettings {
    fn default() -> Self {
        AppSettings {
            log_file: None,
            log_size: defaults::LOG_SIZE,
            metrics: None,
        }
    }
}

/// A manifest that cannot be used, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    pub file: PathBuf,
    /// 1-based.
    pub line: Option<usize>,
    /// The dotted key, like `guests.worker.replicas`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Defaults, as stated in the README.
pub mod defaults {
    use std::time::Duration;

    pub const MAX_RESTARTS: u32 = 10;
    pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
    pub const MIN_UPTIME: Duration = Duration::from_secs(1);
    pub const BACKOFF: Duration = Duration::from_millis(100);
    pub const BACKOFF_MAX: Duration = Duration::from_secs(15);
    pub const GRACE: Duration = Duration::from_secs(5);
    pub const MAX_REPLICAS: u32 = 1000;
    pub const LOG_SIZE: u64 = 10 * 1024 * 1024;
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    guests: Spanned<BTreeMap<Spanned<String>, Spanned<RawGuest>>>,
    app: Option<RawApp>,
    cluster: Option<RawCluster>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    url: Option<Spanned<String>>,
    node: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawApp {
    log_file: Option<String>,
    log_size: Option<Spanned<String>>,
    metrics: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawGuest {
    module: Spanned<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    dirs: Vec<Spanned<RawDir>>,
    replicas: Option<Spanned<u32>>,
    talks_to: Option<Vec<Spanned<String>>>,
    restart: Option<RestartPolicy>,
    max_restarts: Option<u32>,
    restart_window: Option<Spanned<String>>,
    min_uptime: Option<Spanned<String>>,
    backoff: Option<Spanned<String>>,
    backoff_max: Option<Spanned<String>>,
    grace: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    max_memory: Option<Spanned<String>>,
    max_cpu: Option<Spanned<String>>,
    max_message_size: Option<Spanned<String>>,
    inbox_size: Option<u32>,
    max_call_timeout: Option<Spanned<String>>,
    node: Option<Spanned<String>>,
    nodes: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDir {
    host: String,
    guest: String,
    #[serde(default)]
    read_only: bool,
}

pub use wasmproc_protocol::contract::NAME_RULE;
pub use wasmproc_protocol::valid_name;

/// What a node name may be (it becomes one token of NATS subjects).
pub const NODE_RULE: &str = "1 to 64 characters of A-Z, a-z, 0-9, `_` and `-`";

/// Whether `node` is a valid node name ([`NODE_RULE`]).
pub fn valid_node(node: &str) -> bool {
    (1..=64).contains(&node.len())
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Why a CPU limit of zero is refused (the manifest and the CLI say the same).
pub const NO_CPU: &str = "is no CPU time at all: give a limit above zero, like 10s";

/// What a zero `max-call-timeout` is told.
pub const NO_CALL_TIMEOUT: &str =
    "would fail every call at once: give a limit above zero, like 60s";

/// Read and check the manifest at `path`.
///
/// # Errors
///
/// A [`ManifestError`] naming the file, line and key.
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    let source = std::fs::read_to_string(path).map_err(|err| ManifestError {
        file: path.to_owned(),
        line: None,
        key: None,
        message: format!("cannot read it: {err}"),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&source, path, base, &|p| p.exists())
}

/// Check manifest text. `file` is only used in errors; module and folder
/// paths are resolved against `base`, and `exists` says whether a path is
/// there (so the parser can be tested and fuzzed without touching disk).
///
/// # Errors
///
/// A [`ManifestError`] naming the file, line and key.
pub fn parse(
    source: &str,
    file: &Path,
    base: &Path,
    exists: &dyn Fn(&Path) -> bool,
) -> Result<Manifest, ManifestError> {
    let at = |offset: usize, message: String| {
        let (line, key) = locate(source, offset);
        ManifestError {
            file: file.to_owned(),
            line: Some(line),
            key,
            message,
        }
    };
    let raw: RawManifest = toml::from_str(source).map_err(|err| {
        let offset = err.span().map(|s| s.start).unwrap_or(0);
        at(offset, err.message().trim().to_owned())
    })?;

    let guests_span = raw.guests.span().start;
    let mut guests = Vec::new();
    for (name, guest) in raw.guests.into_inner() {
        let name_span = name.span().start;
        let name = name.into_inner();
        if !valid_name(&name) {
            return Err(at(
                name_span,
                format!(
                    "`{name}` is not a valid guest name: {}",
                    wasmproc_protocol::contract::NAME_RULE
                ),
            ));
        }
        let guest = guest.into_inner();
        let duration = |value: &Option<Spanned<String>>, default: Duration| match value {
            None => Ok(default),
            Some(text) => humantime::parse_duration(text.get_ref()).map_err(|err| {
                at(
                    text.span().start,
                    format!(
                        "`{}` is not a duration like 500ms, 5s or 2m: {err}",
                        text.get_ref()
                    ),
                )
            }),
        };
        // A limit that must be above zero; `refusal` says why zero is wrong.
        let above_zero = |value: &Option<Spanned<String>>,
                          refusal: &str|
         -> Result<Option<Duration>, ManifestError> {
            let Some(text) = value else { return Ok(None) };
            match duration(value, Duration::ZERO)? {
                Duration::ZERO => Err(at(
                    text.span().start,
                    format!("`{}` {refusal}", text.get_ref()),
                )),
                limit => Ok(Some(limit)),
            }
        };
        let size = |value: &Option<Spanned<String>>| -> Result<Option<u64>, ManifestError> {
            value
                .as_ref()
                .map(|text| parse_size(text.get_ref()).map_err(|msg| at(text.span().start, msg)))
                .transpose()
        };
        let module = base.join(guest.module.get_ref());
        if !exists(&module) {
            return Err(at(
                guest.module.span().start,
                format!(
                    "module `{}` not found (looked for {})",
                    guest.module.get_ref(),
                    module.display()
                ),
            ));
        }
        let nodes: Vec<String> = match (&guest.node, &guest.nodes) {
            (Some(_), Some(list)) => {
                return Err(at(
                    list.span().start,
                    "give `node` or `nodes`, not both".to_owned(),
                ));
            }
            (Some(node), None) => vec![node.get_ref().clone()],
            (None, Some(list)) if list.get_ref().is_empty() => {
                return Err(at(
                    list.span().start,
                    "`nodes` is empty: list at least one node".to_owned(),
                ));
            }
            (None, Some(list)) => list.get_ref().iter().map(|n| n.get_ref().clone()).collect(),
            (None, None) => Vec::new(),
        };
        for (node, span) in guest
            .node
            .iter()
            .map(|n| (n.get_ref(), n.span().start))
            .chain(
                guest
                    .nodes
                    .iter()
                    .flat_map(|l| l.get_ref().iter().map(|n| (n.get_ref(), n.span().start))),
            )
        {
            if !valid_node(node) {
                return Err(at(
                    span,
                    format!("`{node}` is not a valid node name: {NODE_RULE}"),
                ));
            }
        }
        let replicas = match &guest.replicas {
            None if nodes.len() > 1 => nodes.len() as u32,
            None => 1,
            Some(n) if (1..=defaults::MAX_REPLICAS).contains(n.get_ref()) => *n.get_ref(),
            Some(n) => {
                return Err(at(
                    n.span().start,
                    format!(
                        "{} replicas: give 1 to {}",
                        n.get_ref(),
                        defaults::MAX_REPLICAS
                    ),
                ));
            }
        };
        let mut dirs = Vec::new();
        for dir in &guest.dirs {
            let host = base.join(&dir.get_ref().host);
            if !exists(&host) {
                return Err(at(
                    dir.span().start,
                    format!(
                        "folder `{}` not found (looked for {})",
                        dir.get_ref().host,
                        host.display()
                    ),
                ));
            }
            dirs.push(Dir {
                host,
                guest: dir.get_ref().guest.clone(),
                read_only: dir.get_ref().read_only,
            });
        }
        guests.push((
            guest.talks_to,
            GuestDef {
                name,
                module,
                args: guest.args,
                env: guest.env.into_iter().collect(),
                dirs,
                replicas,
                group: None,
                talks_to: None,
                restart: guest.restart.unwrap_or(RestartPolicy::Never),
                max_restarts: guest.max_restarts.unwrap_or(defaults::MAX_RESTARTS),
                restart_window: duration(&guest.restart_window, defaults::RESTART_WINDOW)?,
                min_uptime: duration(&guest.min_uptime, defaults::MIN_UPTIME)?,
                backoff: duration(&guest.backoff, defaults::BACKOFF)?,
                backoff_max: duration(&guest.backoff_max, defaults::BACKOFF_MAX)?,
                grace: duration(&guest.grace, defaults::GRACE)?,
                limits: GuestLimits {
                    timeout: guest
                        .timeout
                        .as_ref()
                        .map(|t| duration(&Some(t.clone()), Duration::ZERO))
                        .transpose()?,
                    max_memory: size(&guest.max_memory)?,
                    max_cpu: above_zero(&guest.max_cpu, NO_CPU)?,
                    max_message_size: size(&guest.max_message_size)?,
                    inbox_size: guest.inbox_size,
                    max_call_timeout: above_zero(&guest.max_call_timeout, NO_CALL_TIMEOUT)?,
                },
                nodes,
            },
            name_span,
        ));
    }
    if guests.is_empty() {
        return Err(at(
            guests_span,
            "no guests: add a [guests.NAME] table".to_owned(),
        ));
    }

    // Every name a send may use: table names (groups) and instance names.
    let mut known = BTreeSet::new();
    let mut instances = BTreeMap::new();
    for (_, def, span) in &guests {
        known.insert(def.name.clone());
        for instance in def.instance_names() {
            if let Some(other) = instances.insert(instance.clone(), def.name.clone())
                && other != def.name
            {
                return Err(at(
                    *span,
                    format!("guest name `{instance}` is used by `{other}` too"),
                ));
            }
            known.insert(instance);
        }
    }
    for (_, def, span) in &guests {
        if def.replicas > 1 && instances.contains_key(&def.name) {
            return Err(at(
                *span,
                format!("group `{}` has the name of a guest", def.name),
            ));
        }
    }
    let mut checked = Vec::new();
    for (talks_to, mut def, _) in guests {
        if let Some(talks_to) = talks_to {
            let mut list = Vec::new();
            for target in talks_to {
                if !known.contains(target.get_ref()) {
                    return Err(at(
                        target.span().start,
                        format!("`{}` names no guest or group", target.get_ref()),
                    ));
                }
                list.push(target.into_inner());
            }
            def.talks_to = Some(list);
        }
        checked.push(def);
    }
    let mut app = AppSettings::default();
    if let Some(raw) = raw.app {
        app.log_file = raw.log_file.map(|f| base.join(f));
        if let Some(size) = raw.log_size {
            app.log_size = parse_size(size.get_ref()).map_err(|msg| at(size.span().start, msg))?;
        }
        if let Some(addr) = raw.metrics {
            app.metrics = Some(addr.get_ref().parse().map_err(|_| {
                at(
                    addr.span().start,
                    format!("`{}` is not an address like 127.0.0.1:9464", addr.get_ref()),
                )
            })?);
        }
    }
    let mut cluster = ClusterSettings::default();
    if let Some(raw) = raw.cluster {
        if let Some(node) = &raw.node
            && !valid_node(node.get_ref())
        {
            return Err(at(
                node.span().start,
                format!("`{}` is not a valid node name: {NODE_RULE}", node.get_ref()),
            ));
        }
        if let Some(url) = &raw.url
            && !url.get_ref().starts_with("nats://")
        {
            return Err(at(
                url.span().start,
                format!(
                    "`{}` is not a NATS URL like nats://127.0.0.1:4222",
                    url.get_ref()
                ),
            ));
        }
        cluster.url = raw.url.map(Spanned::into_inner);
        cluster.node = raw.node.map(Spanned::into_inner);
    }
    Ok(Manifest {
        path: file.to_owned(),
        guests: checked,
        app,
        cluster,
    })
}

/// The 1-based line of `offset` and the dotted key written on it (the table
/// header in force, plus the key before `=` on that line).
fn locate(source: &str, offset: usize) -> (usize, Option<String>) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line_no = before.matches('\n').count() + 1;
    let mut table: Option<String> = None;
    for line in before.lines() {
        let t = line.trim();
        if t.starts_with('[') && !t.starts_with("[[") {
            table = Some(
                t.trim_matches(|c| c == '[' || c == ']')
                    .trim()
                    .replace('"', ""),
            );
        }
    }
    let line_text = source[before.rfind('\n').map_or(0, |i| i + 1)..]
        .lines()
        .next()
        .unwrap_or("");
    let trimmed = line_text.trim();
    if trimmed.starts_with('[') {
        let header = trimmed
            .trim_matches(|c| c == '[' || c == ']')
            .trim()
            .replace('"', "");
        return (line_no, Some(header));
    }
    let key = line_text
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_owned())
        .filter(|k| !k.is_empty() && !k.starts_with('#'));
    let full = match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k),
        (t, None) => t,
    };
    (line_no, full)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(source: &str) -> Result<Manifest, ManifestError> {
        parse(source, Path::new("app.toml"), Path::new("/apps"), &|p| {
            !p.to_string_lossy().contains("missing")
        })
    }

    fn error(source: &str) -> String {
        check(source).unwrap_err().to_string()
    }

    const GOOD: &str = r#"
[guests.coordinator]
module = "coordinator.wasm"
args = ["2", "100"]
talks-to = ["primes"]

[guests.primes]
module = "primes.wasm"
replicas = 2
restart = "on-failure"
max-restarts = 3
restart-window = "10s"
min-uptime = "500ms"
backoff = "50ms"
backoff-max = "1s"
grace = "2s"
env = { MODE = "fast" }
dirs = [{ host = "data", guest = "/data", read-only = true }]
max-memory = "64MiB"
max-cpu = "30s"
max-message-size = "1MiB"
inbox-size = 100
max-call-timeout = "5s"
"#;

    #[test]
    fn a_full_manifest_parses_with_paths_resolved() {
        let m = check(GOOD).unwrap();
        assert_eq!(m.guests.len(), 2);
        let c = &m.guests[0];
        assert_eq!(c.name, "coordinator");
        assert_eq!(c.module, PathBuf::from("/apps/coordinator.wasm"));
        assert_eq!(c.talks_to, Some(vec!["primes".to_owned()]));
        assert_eq!(c.restart, RestartPolicy::Never);
        assert_eq!(c.grace, defaults::GRACE);
        let p = &m.guests[1];
        assert_eq!(p.instance_names(), vec!["primes.1", "primes.2"]);
        assert_eq!(p.talks_to, None);
        assert_eq!(p.restart, RestartPolicy::OnFailure);
        assert_eq!(p.max_restarts, 3);
        assert_eq!(p.restart_window, Duration::from_secs(10));
        assert_eq!(p.min_uptime, Duration::from_millis(500));
        assert_eq!(p.backoff_max, Duration::from_secs(1));
        assert_eq!(p.env, vec![("MODE".to_owned(), "fast".to_owned())]);
        assert_eq!(p.limits.max_memory, Some(64 << 20));
        assert_eq!(p.limits.max_cpu, Some(Duration::from_secs(30)));
        assert_eq!(p.limits.max_message_size, Some(1 << 20));
        assert_eq!(p.limits.inbox_size, Some(100));
        assert_eq!(p.limits.max_call_timeout, Some(Duration::from_secs(5)));
        assert_eq!(c.limits.max_memory, None);
        assert_eq!(c.limits.max_call_timeout, None);
        assert_eq!(
            p.dirs,
            vec![Dir {
                host: PathBuf::from("/apps/data"),
                guest: "/data".into(),
                read_only: true
            }]
        );
    }

    #[test]
    fn the_app_table_is_optional_and_checked() {
        let m = check(GOOD).unwrap();
        assert_eq!(m.app, AppSettings::default());
        let with_app = format!(
            "{GOOD}\n[app]\nlog-file = \"logs/app.log\"\nlog-size = \"1MiB\"\nmetrics = \"127.0.0.1:9464\"\n"
        );
        let m = check(&with_app).unwrap();
        assert_eq!(m.app.log_file, Some(PathBuf::from("/apps/logs/app.log")));
        assert_eq!(m.app.log_size, 1 << 20);
        assert_eq!(m.app.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(
            error(&format!("{GOOD}\n[app]\nmetrics = \"localhost\"\n")),
            format!(
                "app.toml:{}: app.metrics: `localhost` is not an address like 127.0.0.1:9464",
                GOOD.lines().count() + 3
            )
        );
    }

    #[test]
    fn unknown_key() {
        assert_eq!(
            error("[guests.a]\nmodule = \"a.wasm\"\nreplica = 2\n"),
            "app.toml:3: guests.a.replica: unknown field `replica`, expected one of `module`, \
             `args`, `env`, `dirs`, `replicas`, `talks-to`, `restart`, `max-restarts`, \
             `restart-window`, `min-uptime`, `backoff`, `backoff-max`, `grace`, `timeout`, \
             `max-memory`, `max-cpu`, `max-message-size`, `inbox-size`, `max-call-timeout`, `node`, `nodes`"
        );
    }

    #[test]
    fn wrong_type() {
        assert_eq!(
            error("[guests.a]\nmodule = \"a.wasm\"\nreplicas = \"two\"\n"),
            "app.toml:3: guests.a.replicas: invalid type: string \"two\", expected u32"
        );
    }

    #[test]
    fn bad_restart_policy() {
        assert_eq!(
            error("[guests.a]\nmodule = \"a.wasm\"\nrestart = \"sometimes\"\n"),
            "app.toml:3: guests.a.restart: unknown variant `sometimes`, expected one of \
             `never`, `on-failure`, `always`"
        );
    }

    #[test]
    fn missing_module() {
        assert_eq!(
            error("[guests.a]\nmodule = \"missing.wasm\"\n"),
            "app.toml:2: guests.a.module: module `missing.wasm` not found \
             (looked for /apps/missing.wasm)"
        );
    }

    #[test]
    fn talks_to_naming_nothing() {
        assert_eq!(
            error(
                "[guests.a]\nmodule = \"a.wasm\"\ntalks-to = [\"b\", \"nobody\"]\n\n[guests.b]\nmodule = \"b.wasm\"\n"
            ),
            "app.toml:3: guests.a.talks-to: `nobody` names no guest or group"
        );
    }

    #[test]
    fn duplicate_names() {
        assert_eq!(
            error("[guests.a]\nmodule = \"a.wasm\"\n\n[guests.a]\nmodule = \"b.wasm\"\n"),
            "app.toml:4: guests.a: duplicate key"
        );
        assert_eq!(
            error(
                "[guests.w]\nmodule = \"a.wasm\"\nreplicas = 2\n\n[guests.\"w.1\"]\nmodule = \"b.wasm\"\n"
            ),
            "app.toml:5: guests.w.1: guest name `w.1` is used by `w` too"
        );
    }

    #[test]
    fn a_cpu_limit_of_zero_and_dot_names_are_refused() {
        let exists = |_: &Path| true;
        assert_eq!(
            error("[guests.a]\nmodule = \"a.wasm\"\nmax-cpu = \"0s\"\n"),
            "app.toml:3: guests.a.max-cpu: `0s` is no CPU time at all: give a limit above zero, like 10s"
        );
        assert_eq!(
            error("[guests.a]\nmodule = \"a.wasm\"\nmax-call-timeout = \"0ms\"\n"),
            "app.toml:3: guests.a.max-call-timeout: `0ms` would fail every call at once: give a limit above zero, like 60s"
        );
        for name in [".", ".."] {
            let err = parse(
                &format!("[guests.\"{name}\"]\nmodule = \"a.wasm\"\n"),
                Path::new("app.toml"),
                Path::new("/apps"),
                &exists,
            )
            .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "app.toml:1: guests.{name}: `{name}` is not a valid guest name: use up to 128 letters, digits, `-`, `_` and `.` (but not `.` or `..` alone)"
                )
            );
        }
    }

    #[test]
    fn bad_duration_and_replicas_and_name() {
        assert_eq!(
            error("[guests.a]\nmodule = \"a.wasm\"\ngrace = \"soon\"\n"),
            "app.toml:3: guests.a.grace: `soon` is not a duration like 500ms, 5s or 2m: \
             expected number at 0"
        );
        assert_eq!(
            error("[guests.a]\nmodule = \"a.wasm\"\nreplicas = 0\n"),
            "app.toml:3: guests.a.replicas: 0 replicas: give 1 to 1000"
        );
        assert_eq!(
            error("[guests.\"a b\"]\nmodule = \"a.wasm\"\n"),
            "app.toml:1: guests.a b: `a b` is not a valid guest name: use up to 128 letters, digits, `-`, `_` and `.` (but not `.` or `..` alone)"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1 GB"), Ok(1_000_000_000));
        assert_eq!(
            error("[guests.a]\nmodule = \"a.wasm\"\nmax-memory = \"lots\"\n"),
            "app.toml:3: guests.a.max-memory: `lots` is not a size like 512MiB, 64KiB or 4096"
        );
        assert_eq!(
            error("[guests.a]\nmodule = \"a.wasm\"\nmax-memory = \"5 parsecs\"\n"),
            "app.toml:3: guests.a.max-memory: `parsecs` is not a size unit (B, KiB, MiB, GiB, KB, MB, GB)"
        );
    }

    #[test]
    fn syntax_error() {
        assert_eq!(
            error("[guests.a]\nmodule = \"a.wasm\nargs = []\n"),
            "app.toml:2: guests.a.module: invalid basic string, expected `\"`"
        );
    }

    #[test]
    fn missing_module_key_and_no_guests() {
        assert_eq!(
            error("[guests.a]\nargs = []\n"),
            "app.toml:1: guests.a: missing field `module`"
        );
        assert_eq!(
            error("[guests]\n"),
            "app.toml:1: guests: no guests: add a [guests.NAME] table"
        );
    }

    #[test]
    fn placement_and_the_cluster_table_are_read_and_checked() {
        let m = check(
            r#"
[cluster]
url = "nats://127.0.0.1:4222"
node = "a"

[guests.front]
module = "f.wasm"
node = "a"

[guests.w]
module = "w.wasm"
nodes = ["a", "b"]
"#,
        )
        .unwrap();
        assert_eq!(m.cluster.url.as_deref(), Some("nats://127.0.0.1:4222"));
        assert_eq!(m.cluster.node.as_deref(), Some("a"));
        assert_eq!(m.guests[0].nodes, ["a"]);
        let w = &m.guests[1];
        assert_eq!(w.replicas, 2, "one replica per listed node");
        assert_eq!(w.instance_names(), ["w.1", "w.2"]);
        assert_eq!((w.node_of(0), w.node_of(1)), (Some("a"), Some("b")));
        assert_eq!(
            error("[guests.x]\nmodule = \"x.wasm\"\nnode = \"a.b\"\n"),
            format!("app.toml:3: guests.x.node: `a.b` is not a valid node name: {NODE_RULE}")
        );
        assert_eq!(
            error("[guests.x]\nmodule = \"x.wasm\"\nnode = \"a\"\nnodes = [\"b\"]\n"),
            "app.toml:4: guests.x.nodes: give `node` or `nodes`, not both"
        );
        assert_eq!(
            error("[cluster]\nurl = \"http://x\"\n[guests.x]\nmodule = \"x.wasm\"\n"),
            "app.toml:2: cluster.url: `http://x` is not a NATS URL like nats://127.0.0.1:4222"
        );
    }
}
