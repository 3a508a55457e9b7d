//! Hosts that form one app over NATS: real `nats-server` processes (a
//! cluster of them where a test kills one), real `wasmproc up` hosts as
//! separate processes, real guests.
//!
//! Every server listens on 127.0.0.1 on ports it picks itself (`-p -1`,
//! read back from `--ports_file_dir`); a server restarted in a test comes
//! back on the ports it had. Tests run one at a time: each starts several
//! hosts, and a 2-core machine shared by parallel tests would make the
//! timings they print meaningless.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{cli, guest, output_within, scrape, scratch_dir};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// One `nats-server`, stopped (SIGKILL) when dropped.
struct Nats {
    child: Option<Child>,
    dir: PathBuf,
    name: String,
    port: u16,
    cluster_port: u16,
    routes: Vec<u16>,
}

impl Nats {
    /// A lone server.
    fn start(dir: &Path, name: &str) -> Nats {
        Nats::launch(dir, name, None, &[])
    }

    /// A lone server with the settings of `config` (a nats-server file).
    fn with_config(dir: &Path, name: &str, config: &Path) -> Nats {
        Nats::spawn(dir, name, None, None, &[], Some(config))
    }

    /// A server of a NATS cluster, routed to the servers listening for
    /// routes on `routes`.
    fn member(dir: &Path, name: &str, routes: &[u16]) -> Nats {
        Nats::launch(dir, name, Some(None), routes)
    }

    /// `cluster`: `None` for a lone server, `Some(port)` for a member
    /// (`Some(None)`: a route port of its own choosing).
    fn launch(dir: &Path, name: &str, cluster: Option<Option<u16>>, routes: &[u16]) -> Nats {
        Nats::spawn(dir, name, None, cluster, routes, None)
    }

    fn spawn(
        dir: &Path,
        name: &str,
        port: Option<u16>,
        cluster: Option<Option<u16>>,
        routes: &[u16],
        config: Option<&Path>,
    ) -> Nats {
        let ports_dir = dir.join(format!("ports-{name}"));
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir).unwrap();
        let mut command = Command::new("nats-server");
        command
            .args(["-a", "127.0.0.1", "-n", name, "-p"])
            .arg(port.map_or("-1".to_owned(), |p| p.to_string()))
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .arg("-l")
            .arg(dir.join(format!("{name}.log")));
        if let Some(config) = config {
            command.arg("-c").arg(config);
        }
        if let Some(cluster_port) = cluster {
            let at = cluster_port.map_or("-1".to_owned(), |p| p.to_string());
            command
                .args(["--cluster_name", "test"])
                .arg("--cluster")
                .arg(format!("nats://127.0.0.1:{at}"));
            if !routes.is_empty() {
                let routes: Vec<String> = routes
                    .iter()
                    .map(|p| format!("nats://127.0.0.1:{p}"))
                    .collect();
                command.arg("--routes").arg(routes.join(","));
            }
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start nats-server ({err}): install it (`apt-get install nats-server`; `make test` does)"
                )
            });
        let ports_file = ports_dir.join(format!("nats-server_{}.ports", child.id()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let ports: serde_json::Value = loop {
            if let Ok(text) = std::fs::read_to_string(&ports_file)
                && let Ok(ports) = serde_json::from_str(&text)
            {
                break ports;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server {name} wrote no ports file in 10 s; its log: {}",
                std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let port_of = |key: &str| -> u16 {
            ports[key][0]
                .as_str()
                .and_then(|url| url.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .unwrap_or(0)
        };
        Nats {
            child: Some(child),
            dir: dir.to_owned(),
            name: name.to_owned(),
            port: port_of("nats"),
            cluster_port: port_of("cluster"),
            routes: routes.to_vec(),
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the ports it had, with the routes it had.
    fn restart(&mut self) {
        self.kill();
        let cluster = (self.cluster_port != 0).then_some(Some(self.cluster_port));
        let again = Nats::spawn(
            &self.dir,
            &self.name,
            Some(self.port),
            cluster,
            &self.routes,
            None,
        );
        assert_eq!(again.port, self.port);
        *self = again;
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A NATS cluster of three servers, routed to each other.
fn nats_cluster(dir: &Path) -> [Nats; 3] {
    let first = Nats::member(dir, "n1", &[]);
    let second = Nats::member(dir, "n2", &[first.cluster_port]);
    let third = Nats::member(dir, "n3", &[first.cluster_port, second.cluster_port]);
    // Let the routes form before hosts subscribe across them.
    wait_for("the NATS routes to form", Duration::from_secs(10), || {
        let log = std::fs::read_to_string(dir.join("n1.log")).unwrap_or_default();
        (log.matches("Route connection created").count() >= 2).then_some(())
    });
    [first, second, third]
}

/// Poll `probe` every 50 ms until it gives something, or fail after `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One `wasmproc up` host, in the foreground as a child process, with a
/// control-socket folder of its own; SIGTERM (then SIGKILL) when dropped.
struct Host {
    child: Option<Child>,
    node: String,
    app: String,
    runtime: PathBuf,
    out: PathBuf,
    err: PathBuf,
}

impl Host {
    fn up(dir: &Path, app: &str, node: &str, url: &str, manifest: &Path) -> Host {
        let runtime = dir.join(format!("run-{node}"));
        std::fs::create_dir_all(&runtime).unwrap();
        let out = dir.join(format!("{node}.out"));
        let err = dir.join(format!("{node}.err"));
        let child = Command::new(cli())
            .args(["up", "--app", app, "--cluster", url, "--node", node])
            .arg(manifest)
            .env("XDG_RUNTIME_DIR", &runtime)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("start wasmproc up");
        let mut host = Host {
            child: Some(child),
            node: node.to_owned(),
            app: app.to_owned(),
            runtime,
            out,
            err,
        };
        wait_for(
            &format!("host {node} to answer"),
            Duration::from_secs(60),
            || {
                if let Some(status) = host
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    panic!("host {node} ended at once ({status}):\n{}", host.output());
                }
                (host.run(&["ps"]).status.code() == Some(0)).then_some(())
            },
        );
        host
    }

    /// `wasmproc ARGS --app APP` against this host's socket.
    fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new(cli());
        command
            .args(&args[..1])
            .args(["--app", &self.app])
            .args(&args[1..])
            .env("XDG_RUNTIME_DIR", &self.runtime);
        output_within(&mut command, 60)
    }

    /// `wasmproc ARGS`, which must succeed: its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?} on {}: {}",
            self.node,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Everything the host printed so far (its stdout, then its stderr).
    fn output(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!("{}{}", read(&self.out), read(&self.err))
    }

    /// Wait until the host has printed `text`.
    fn wait_output(&self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.output().contains(text) {
            assert!(
                Instant::now() < deadline,
                "host {} did not print `{text}` within {limit:?}; it printed:\n{}",
                self.node,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ps --cluster --json`, parsed.
    fn ps_cluster(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["ps", "--cluster", "--json"])).expect("ps JSON")
    }

    /// Wait until this host can reach `name` on another node.
    fn wait_reachable(&self, name: &str) {
        wait_for(
            &format!("{} to reach `{name}`", self.node),
            Duration::from_secs(20),
            || {
                let ps = self.ps_cluster();
                ps["reachable"]
                    .as_array()?
                    .iter()
                    .any(|g| g["name"] == name)
                    .then_some(())
            },
        );
    }

    /// Start guest `name` here from `module` with `args`.
    fn start(&self, name: &str, module: &str, args: &[&str]) {
        let module = guest(module);
        let mut argv = vec!["start", "--module", module.to_str().unwrap(), name, "--"];
        argv.extend_from_slice(args);
        self.ok(&argv);
    }

    /// SIGTERM, and how long the host takes to end (at most `limit`).
    fn terminate(&mut self, limit: Duration) -> Duration {
        let mut child = self.child.take().expect("a running host");
        let asked = Instant::now();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc_kill(child.id() as i32, 15) };
        while child.try_wait().ok().flatten().is_none() {
            if asked.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("host {} did not end within {limit:?} of SIGTERM", self.node);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        asked.elapsed()
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc_kill(child.id() as i32, 15) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

/// Write a manifest into `dir`; `{guest:NAME}` stands for a built guest.
fn manifest(dir: &Path, text: &str) -> PathBuf {
    let mut text = text.to_owned();
    while let Some(at) = text.find("{guest:") {
        let end = at + text[at..].find('}').unwrap();
        let path = guest(&text[at + 7..end]);
        text.replace_range(at..=end, path.to_str().unwrap());
    }
    let path = dir.join("app.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn names_groups_and_broadcasts_reach_guests_on_other_hosts() {
    let _one = serial();
    let dir = scratch_dir("cluster-reach");
    let servers = nats_cluster(&dir);
    let app = manifest(
        &dir,
        r#"
[guests.srv]
module = "{guest:rpc}"
args = ["serve", "name"]
node = "b"

[guests.client]
module = "{guest:rpc}"
args = ["poll", "srv", "hello"]
node = "a"

[guests.e]
module = "{guest:echo}"
nodes = ["a", "b"]
"#,
    );
    let a = Host::up(&dir, "reach", "a", &servers[0].url(), &app);
    let b = Host::up(&dir, "reach", "b", &servers[1].url(), &app);

    // A guest on A calls one on B by name (polling until B has joined).
    a.wait_output("client | ok srv", Duration::from_secs(30));

    // ps --cluster shows each guest with its node.
    a.wait_reachable("e.2");
    let ps = a.ps_cluster();
    let node_of = |name: &str| {
        ps["guests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .map(|g| g["node"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(node_of("srv").as_deref(), Some("b"), "{ps}");
    assert_eq!(node_of("e.1").as_deref(), Some("a"), "{ps}");
    assert_eq!(node_of("e.2").as_deref(), Some("b"), "{ps}");

    // A group over A and B gets round-robin from both, and a broadcast
    // reaches every member; the replies come back across hosts to the
    // sender's `from`.
    a.start(
        "postman",
        "postman",
        &[
            "group:e", "group:e", "group:e", "group:e", "all:e", "expect:6",
        ],
    );
    a.wait_output("postman ended", Duration::from_secs(30));
    let output = a.output();
    let replies = |from: &str| {
        output
            .matches(&format!("from postman: {from}: reply"))
            .count()
    };
    println!("replies: e.1 {}, e.2 {}", replies("e.1"), replies("e.2"));
    assert_eq!(
        (replies("e.1"), replies("e.2")),
        (3, 3),
        "two group sends and one broadcast each:\n{output}"
    );

    // The allow-list holds across hosts: a guest that may talk to group
    // `e` reaches its member on B, and not `srv` there.
    let postman = guest("postman");
    a.ok(&[
        "start",
        "--talks-to",
        "e",
        "--module",
        postman.to_str().unwrap(),
        "strict",
        "--",
        "e.2",
        "srv",
    ]);
    a.wait_output("strict ended", Duration::from_secs(30));
    let output = a.output();
    assert!(output.contains("from strict: e.2: reply"), "{output}");
    assert!(output.contains("from strict: srv: not allowed"), "{output}");

    // The parent's call by name crosses too, and the reply names its guest.
    assert_eq!(a.ok(&["call", "srv", "x"]).trim(), "srv");
    // An unknown name is refused as unknown, not lost.
    let out = a.run(&["call", "nobody", "x"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown recipient"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Verbs go to the node they name: a guest started on B from A's
    // socket, then swapped there with no loss.
    let echo = guest("echo");
    let started = a.ok(&[
        "start",
        "--node",
        "b",
        "--module",
        echo.to_str().unwrap(),
        "late",
    ]);
    assert_eq!(started.trim(), "started late");
    assert!(b.ok(&["ps"]).contains("late"), "it runs on B");
    a.wait_reachable("late");
    let rpc = guest("rpc");
    let swapped = a.ok(&["swap", "--node", "b", "srv", rpc.to_str().unwrap()]);
    assert!(swapped.starts_with("swapped srv: 0 moved"), "{swapped}");
    // The name follows the new instance; A's proxy keeps the name.
    assert_eq!(a.ok(&["call", "srv", "again"]).trim(), "srv");
    let out = a.run(&["ps", "--node", "nowhere"]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node `nowhere` is not in the cluster"),
        "{err}"
    );

    // The text `ps` names each guest's node, and the bridge's state.
    let ps = a.ok(&["ps"]);
    let header: Vec<&str> = ps
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header[..2], ["NAME", "NODE"], "{ps}");
    assert!(
        ps.contains(
            "node a: connected; peers [\"b\"]; unknown outcome 0, slow consumer 0, node conflicts 0"
        ),
        "{ps}"
    );

    // A host that stops cleanly takes its guests out of the directory at once.
    let stopped = Instant::now();
    drop(b);
    wait_for(
        "B's guests to leave A's directory",
        Duration::from_secs(5),
        || {
            a.ps_cluster()["reachable"]
                .as_array()?
                .is_empty()
                .then_some(())
        },
    );
    println!(
        "B stopped: its guests left A's directory after {:.2?}",
        stopped.elapsed()
    );
}

/// `taken T returned R duplicates D disorders O`, as `sender` prints it.
fn sender_counts(output: &str) -> [u64; 4] {
    let line = output
        .lines()
        .find(|l| l.contains("sender | taken"))
        .expect("the sender's counts");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    [numbers[0], numbers[1], numbers[2], numbers[3]]
}

#[test]
fn a_hundred_thousand_numbered_messages_cross_hosts_complete_and_in_order() {
    const COUNT: u64 = 100_000;
    let _one = serial();
    let dir = scratch_dir("cluster-stream");
    let server = Nats::start(&dir, "solo");
    let app = manifest(
        &dir,
        r#"
[app]
metrics = "127.0.0.1:0"

[guests.r0]
module = "{guest:echo}"
node = "b"
"#,
    );
    let a = Host::up(&dir, "stream", "a", &server.url(), &app);
    let b = Host::up(&dir, "stream", "b", &server.url(), &app);
    a.wait_reachable("r0");
    // Each number goes A → B and is echoed B → A: taken, or returned.
    let started = Instant::now();
    a.start("sender", "sender", &["r", "1", &COUNT.to_string(), "1000"]);
    a.wait_output("sender | taken", Duration::from_secs(240));
    let elapsed = started.elapsed();
    let [taken, returned, duplicates, disorders] = sender_counts(&a.output());
    println!(
        "{COUNT} messages A→B and back: taken {taken}, returned {returned}, duplicates {duplicates}, \
         disorders {disorders} in {elapsed:.2?} ({:.0} msg/s each way)",
        COUNT as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(taken + returned, COUNT, "every message taken or returned");
    assert_eq!(duplicates, 0);
    assert_eq!(disorders, 0, "in order per sender and receiver");
    assert!(taken > 0, "some messages crossed");
    let top: serde_json::Value = serde_json::from_str(&a.ok(&["top", "--json"])).unwrap();
    println!("sender's counters on A: {}", row(&top, "sender"));
    // Every letter either way was acked exactly once, most of them on a
    // letter going back (the echoes carry A's acks, A's sends B's).
    let bridge = |host: &Host| {
        let top: serde_json::Value = serde_json::from_str(&host.ok(&["top", "--json"])).unwrap();
        top["cluster"].clone()
    };
    let settled = |c: &serde_json::Value| (c["acked"] == c["sent"]).then_some(());
    wait_for("A's letters all acked", Duration::from_secs(5), || {
        settled(&bridge(&a))
    });
    wait_for("B's letters all acked", Duration::from_secs(5), || {
        settled(&bridge(&b))
    });
    // And every message either way heard settled exactly once: A's by B's
    // reports, the echoes by A's.
    wait_for("every message settled", Duration::from_secs(5), || {
        let (on_a, on_b) = (bridge(&a), bridge(&b));
        (on_a["unsettled"] == 0 && on_b["unsettled"] == 0).then_some(())
    });
    let (on_a, on_b) = (bridge(&a), bridge(&b));
    // (A message refused by an ack, `mailbox full`, is settled by the ack,
    // not by a report: none is expected, but it would count in `returned`.)
    assert_eq!(on_a["settled"], COUNT - returned, "{on_a}");
    assert_eq!(on_b["settled"], taken, "{on_b}");
    for (acking, sending) in [(&on_b, &on_a), (&on_a, &on_b)] {
        let carried = acking["acks_carried"].as_u64().unwrap();
        let alone = acking["acks_alone"].as_u64().unwrap();
        println!(
            "{}'s letters: {} sent, acked {carried} carried and {alone} alone",
            sending["node"], sending["sent"]
        );
        assert_eq!(carried + alone, sending["sent"].as_u64().unwrap());
        assert!(carried > 0, "no ack rode on a letter going back");
    }
    // The metrics endpoint, scraped with a real HTTP client, says the same.
    let output = a.output();
    let address = output
        .lines()
        .find_map(|l| l.strip_prefix("wasmproc: metrics on http://"))
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .expect("A says where its metrics are");
    let (status, text) = scrape(address);
    assert_eq!(status, 200);
    let metric = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("wasmproc_cluster_{name} ")))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no wasmproc_cluster_{name} in:\n{text}"))
    };
    let on_a = bridge(&a);
    for key in ["sent", "acked", "acks_carried", "acks_alone", "settled"] {
        assert_eq!(metric(&format!("{key}_total")), on_a[key], "{key}");
    }
    assert_eq!(metric("settled_total"), COUNT - returned);
    assert_eq!(metric("unsettled"), 0);
    assert_eq!(metric("unknown_outcome_total"), 0);
}

/// Guest `name`'s row in `top --json` (null if it has none).
fn row(top: &serde_json::Value, name: &str) -> serde_json::Value {
    top["guests"]
        .as_array()
        .and_then(|guests| guests.iter().find(|g| g["name"] == name))
        .cloned()
        .unwrap_or_default()
}

/// The lines of a file a guest wrote (none if it wrote none).
fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The manifest table of `w`, a `tally take` on `node` that takes one
/// message every `pause_us` with room for 16 in its runner, and writes
/// down each it takes in `out/taken` (shared).
fn slow_taker(pause_us: u32, node: &str, out: &Path) -> String {
    format!(
        r#"
[guests.w]
module = "{{guest:tally}}"
args = ["take", "{pause_us}", "/out/taken", "shared"]
node = "{node}"
inbox-size = 16
dirs = [{{ host = "{out}", guest = "/out" }}]
"#,
        out = out.display()
    )
}

#[test]
fn a_backlog_for_a_slow_recipient_comes_back_mailbox_full_not_of_unknown_outcome() {
    const COUNT: u64 = 600;
    const SENDERS: [&str; 3] = ["s0", "s1", "s2"];
    let _one = serial();
    let dir = scratch_dir("cluster-backlog");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let server = Nats::start(&dir, "backlog");
    // `w` on B takes one message every 10 ms; three senders on A send it
    // 16 KiB messages as fast as they can, 29 MB in all against a mailbox
    // of 16 MiB: B's inbox has many letters waiting for room at once, and
    // at 100 messages a second its acks would come back long after A's 5 s
    // ack timeout if each letter waited its own second.
    let senders: String = SENDERS
        .iter()
        .map(|name| {
            format!(
                r#"
[guests.{name}]
module = "{{guest:tally}}"
args = ["send", "w", "{COUNT}", "0", "/out/returned-{name}", "16384"]
node = "a"
dirs = [{{ host = "{out}", guest = "/out" }}]
"#,
                out = out.display()
            )
        })
        .collect();
    let app = manifest(&dir, &format!("{}{senders}", slow_taker(10_000, "b", &out)));
    let b = Host::up(&dir, "backlog", "b", &server.url(), &app);
    let a = Host::up(&dir, "backlog", "a", &server.url(), &app);
    for name in SENDERS {
        a.wait_output(&format!("{name} | tally sent"), Duration::from_secs(90));
    }
    // Each message was taken or came back `mailbox full`, never both, and
    // none came back as of unknown outcome.
    let returned: Vec<Vec<u64>> = SENDERS
        .iter()
        .map(|name| {
            lines_of(&out.join(format!("returned-{name}")))
                .iter()
                .map(|line| {
                    let (k, reason) = line.split_once(' ').expect("K REASON");
                    assert_eq!(reason, "mailbox full", "{name}: {line}");
                    k.parse().unwrap()
                })
                .collect()
        })
        .collect();
    let back: u64 = returned.iter().map(|r| r.len() as u64).sum();
    let taken_file = out.join("taken");
    wait_for("w to take the rest", Duration::from_secs(60), || {
        (lines_of(&taken_file).len() as u64 + back >= 3 * COUNT).then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    let taken = lines_of(&taken_file);
    for (name, returned) in SENDERS.iter().zip(&returned) {
        let mut all: Vec<u64> = taken
            .iter()
            .filter(|line| line.ends_with(&format!(" {name}")))
            .map(|line| line.split(' ').nth(1).unwrap().parse().unwrap())
            .chain(returned.iter().copied())
            .collect();
        let (took, gave_back) = (all.len() - returned.len(), returned.len());
        all.sort_unstable();
        assert_eq!(all, (1..=COUNT).collect::<Vec<_>>(), "{name}");
        println!("{name}: {took} taken, {gave_back} back `mailbox full`");
    }
    assert!(back > 0, "the mailbox never filled");
    let top: serde_json::Value = serde_json::from_str(&a.ok(&["top", "--json"])).unwrap();
    assert_eq!(top["cluster"]["unknown_outcome"], 0, "{}", top["cluster"]);
    drop(b);
}

#[test]
fn a_killed_host_leaves_every_message_taken_or_returned_as_of_unknown_outcome() {
    const COUNT: u64 = 6000;
    let _one = serial();
    let dir = scratch_dir("cluster-lossless");
    let (a_out, b_out) = (dir.join("a-out"), dir.join("b-out"));
    std::fs::create_dir_all(&a_out).unwrap();
    std::fs::create_dir_all(&b_out).unwrap();
    let server = Nats::start(&dir, "lossless");
    // B's guest takes one message every 2 ms and writes down each; A's
    // streams one every 0.5 ms and writes down each that comes back.
    let app = manifest(
        &dir,
        &format!(
            r#"
[guests.slow]
module = "{{guest:tally}}"
args = ["take", "2000", "/out/taken"]
node = "b"
dirs = [{{ host = "{}", guest = "/out" }}]

[guests.tally]
module = "{{guest:tally}}"
args = ["send", "slow", "{COUNT}", "500", "/out/returned"]
node = "a"
dirs = [{{ host = "{}", guest = "/out" }}]
"#,
            b_out.display(),
            a_out.display()
        ),
    );
    let a = Host::up(&dir, "lossless", "a", &server.url(), &app);
    let mut b = Host::up(&dir, "lossless", "b", &server.url(), &app);
    let taken_file = b_out.join("taken");
    wait_for("B's guest to take 300", Duration::from_secs(30), || {
        (lines_of(&taken_file).len() >= 300).then_some(())
    });
    let killed = Instant::now();
    b.kill9();
    a.wait_output("tally | tally sent", Duration::from_secs(90));
    println!(
        "B SIGKILLed; A's sender was done {:.2?} later",
        killed.elapsed()
    );

    // Taken: what B's guest wrote down, in the order it took them.
    let taken: Vec<u64> = lines_of(&taken_file)
        .iter()
        .map(|l| l.parse().expect("a number"))
        .collect();
    // Returned: what came back to A's sender, and why.
    let returned: Vec<(u64, String)> = lines_of(&a_out.join("returned"))
        .iter()
        .map(|l| {
            let (k, why) = l.split_once(' ').expect("`K REASON`");
            (k.parse().expect("a number"), why.to_owned())
        })
        .collect();
    let unknown: std::collections::BTreeSet<u64> = returned
        .iter()
        .filter(|(_, why)| why == "unknown outcome")
        .map(|(k, _)| *k)
        .collect();
    let other: std::collections::BTreeSet<u64> = returned
        .iter()
        .filter(|(_, why)| why != "unknown outcome")
        .map(|(k, _)| *k)
        .collect();
    let mut reasons: std::collections::BTreeMap<&str, usize> = Default::default();
    for (_, why) in &returned {
        *reasons.entry(why.as_str()).or_default() += 1;
    }
    // Taken but not heard of at A before the kill: returned as unknown too.
    let both: Vec<u64> = taken
        .iter()
        .copied()
        .filter(|k| unknown.contains(k))
        .collect();
    println!(
        "{COUNT} sent A→B, B SIGKILLed mid-stream: taken by B's guest {}, returned {} ({reasons:?}); \
         taken and returned as unknown (their take reports were lost with B): {}",
        taken.len(),
        returned.len(),
        both.len()
    );

    // Each message came back at most once, and was taken at most once, in
    // order (per sender and receiver): 1, 2, 3, ...
    let numbers: std::collections::BTreeSet<u64> = returned.iter().map(|(k, _)| *k).collect();
    assert_eq!(numbers.len(), returned.len(), "returned twice");
    let in_order: Vec<u64> = (1..=taken.len() as u64).collect();
    assert_eq!(taken, in_order, "taken once each, in order, none skipped");
    // Nothing lost: every message is taken or returned.
    for k in 1..=COUNT {
        assert!(
            k <= taken.len() as u64 || unknown.contains(&k) || other.contains(&k),
            "message {k} was neither taken nor returned"
        );
    }
    // A definite return (not `unknown outcome`) means not taken.
    assert!(
        other.iter().all(|k| *k > taken.len() as u64),
        "returned as undeliverable, yet taken"
    );
    // Only the last takes can have an unheard report: the messages taken
    // and returned as unknown are the tail of what B's guest took, and the
    // takes A heard of came back as nothing.
    let heard = taken.len() - both.len();
    assert_eq!(
        both,
        taken[heard..].to_vec(),
        "only the last takes can be unheard"
    );
    assert!(heard > 0, "A heard of B's takes");
    // The sum, exactly: taken + returned = sent + taken-and-returned.
    assert_eq!(
        taken.len() + returned.len(),
        COUNT as usize + both.len(),
        "every message accounted for once (twice only if taken unheard)"
    );
    assert!(
        !unknown.is_empty(),
        "B held messages it had not given its guest"
    );

    // The sender's counters say the same, and A holds nothing for B.
    let top: serde_json::Value = serde_json::from_str(&a.ok(&["top", "--json"])).unwrap();
    let sender = row(&top, "tally");
    assert_eq!(sender["unknown_outcome"], unknown.len() as u64, "{sender}");
    assert_eq!(top["cluster"]["unsettled"], 0, "{}", top["cluster"]);
    println!("A's bridge: {}", top["cluster"]);
}

#[test]
fn a_killed_host_is_lost_its_monitors_fire_and_calls_to_it_fail() {
    let _one = serial();
    let dir = scratch_dir("cluster-loss");
    let servers = nats_cluster(&dir);
    let app = manifest(
        &dir,
        r#"
[guests.srv]
module = "{guest:rpc}"
args = ["serve", "never"]
node = "b"
"#,
    );
    let a = Host::up(&dir, "loss", "a", &servers[0].url(), &app);
    let mut b = Host::up(&dir, "loss", "b", &servers[1].url(), &app);
    a.wait_reachable("srv");
    a.start("watcher", "postman", &["monitor:srv"]);
    a.start("caller", "rpc", &["call", "srv", "x", "30000"]);
    // A call's deadline holds across hosts.
    a.start("quick", "rpc", &["call", "srv", "q", "500"]);
    a.wait_output(
        "from quick: error: no reply before the deadline",
        Duration::from_secs(20),
    );
    // The call is in srv's hands (it never answers) when B dies.
    b.wait_output("from srv: took x", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(200));
    let killed = Instant::now();
    b.kill9();
    // A send right after, before A has judged B lost: nobody serves B's
    // inbox any more, which NATS says at once (no responders).
    a.start("late", "postman", &["srv"]);
    a.wait_output("from watcher: down srv: host lost", Duration::from_secs(15));
    let down_after = killed.elapsed();
    a.wait_output(
        "from caller: error: the callee exited: host lost",
        Duration::from_secs(15),
    );
    let failed_after = killed.elapsed();
    a.wait_output("from late: srv: ", Duration::from_secs(15));
    let output = a.output();
    assert!(
        output.contains("from late: srv: unknown recipient")
            || output.contains("from late: srv: recipient exited"),
        "{output}"
    );
    println!(
        "a send just after the kill: {}",
        if output.contains("from late: srv: unknown recipient") {
            "unknown recipient (no responders)"
        } else {
            "recipient exited (B was already judged lost)"
        }
    );
    println!(
        "B SIGKILLed: A's monitor got `down (host lost)` after {down_after:.2?}, its pending call failed after {failed_after:.2?}"
    );
    // The issue's goal is 3 s; the bound is generous for a loaded machine.
    assert!(down_after < Duration::from_secs(8), "{down_after:?}");
    // The name has left the directory, and says why.
    let out = a.run(&["call", "srv", "x"]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the callee exited: host lost"), "{err}");
    assert!(a.ps_cluster()["reachable"].as_array().unwrap().is_empty());
}

#[test]
fn when_its_nats_server_dies_a_host_goes_on_locally_and_resumes_after() {
    let _one = serial();
    let dir = scratch_dir("cluster-partition");
    let mut servers = nats_cluster(&dir);
    let app = manifest(
        &dir,
        r#"
[guests.srv]
module = "{guest:rpc}"
args = ["serve", "name"]
node = "b"

[guests.kv]
module = "{guest:kv}"
node = "a"
"#,
    );
    let a = Host::up(&dir, "part", "a", &servers[0].url(), &app);
    let _b = Host::up(&dir, "part", "b", &servers[1].url(), &app);
    a.wait_reachable("srv");
    assert_eq!(a.ok(&["call", "srv", "x"]).trim(), "srv");
    a.start("watcher", "postman", &["monitor:srv"]);
    std::thread::sleep(Duration::from_millis(300));

    let killed = Instant::now();
    servers[0].kill();
    a.wait_output(
        "from watcher: down srv: no connection",
        Duration::from_secs(15),
    );
    println!(
        "A's server killed: `down (no connection)` after {:.2?}",
        killed.elapsed()
    );
    // Local guests go on.
    assert_eq!(a.ok(&["call", "kv", "put colour green"]).trim(), "ok");
    assert_eq!(a.ok(&["call", "kv", "get colour"]).trim(), "value green");
    // Remote ones are unreachable, and say why.
    let out = a.run(&["call", "srv", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no connection"), "{err}");

    let restarted = Instant::now();
    servers[0].restart();
    a.wait_reachable("srv");
    assert_eq!(a.ok(&["call", "srv", "x"]).trim(), "srv");
    println!(
        "server back: srv reachable from A again after {:.2?}",
        restarted.elapsed()
    );
    assert!(a.ps_cluster()["guests"].as_array().unwrap().len() >= 2);
}

#[test]
fn payloads_over_the_servers_max_payload_are_refused_here_as_too_large() {
    let _one = serial();
    let dir = scratch_dir("cluster-large");
    let config = dir.join("small.conf");
    std::fs::write(&config, "max_payload: 8192\n").unwrap();
    let server = Nats::with_config(&dir, "small", &config);
    let app = manifest(
        &dir,
        r#"
[guests.srv]
module = "{guest:rpc}"
args = ["serve", "echo"]
node = "b"
"#,
    );
    let a = Host::up(&dir, "large", "a", &server.url(), &app);
    let _b = Host::up(&dir, "large", "b", &server.url(), &app);
    a.wait_reachable("srv");
    let fits = dir.join("fits");
    std::fs::write(&fits, "y".repeat(6000)).unwrap();
    let big = dir.join("big");
    std::fs::write(&big, "x".repeat(9000)).unwrap();
    let reply = a.ok(&["call", "srv", &format!("@{}", fits.display())]);
    assert_eq!(reply.trim().len(), 6000);
    let out = a.run(&["call", "srv", &format!("@{}", big.display())]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("too large"), "{err}");
}

#[test]
fn bad_cluster_input_is_reported_precisely() {
    let _one = serial();
    let dir = scratch_dir("cluster-bad");
    let app = manifest(
        &dir,
        r#"
[guests.here]
module = "{guest:echo}"
node = "a"

[guests.lost]
module = "{guest:echo}"
node = "c"
"#,
    );
    let up = |runtime: &str, args: &[&str]| {
        let runtime = dir.join(runtime);
        std::fs::create_dir_all(&runtime).unwrap();
        let mut command = Command::new(cli());
        command
            .args(["up", "--app", "bad"])
            .args(args)
            .arg(&app)
            .env("XDG_RUNTIME_DIR", runtime);
        let out = output_within(&mut command, 60);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // A URL nobody answers on: a clear error at `up`, at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let started = Instant::now();
    let (code, err) = up("r1", &["--cluster", &url, "--node", "a"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot reach the cluster's NATS server at {url}")),
        "{err}"
    );
    println!("unreachable server reported in {:.2?}", started.elapsed());

    // The same from the manifest's `[cluster]` table, with no flags.
    let from_table = dir.join("table.toml");
    std::fs::write(
        &from_table,
        format!(
            "[cluster]\nurl = \"{url}\"\nnode = \"a\"\n\n[guests.here]\nmodule = \"{}\"\nnode = \"a\"\n",
            guest("echo").display()
        ),
    )
    .unwrap();
    let mut command = Command::new(cli());
    command
        .args(["up", "--app", "table"])
        .arg(&from_table)
        .env("XDG_RUNTIME_DIR", dir.join("r1"));
    let out = output_within(&mut command, 60);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach the cluster's NATS server at {url}")),
        "{err}"
    );

    // Half of the pair of flags.
    let (code, err) = up("r2", &["--cluster", &url]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("needs this host's node name: give --node NAME"),
        "{err}"
    );

    let server = Nats::start(&dir, "bad");
    let a = Host::up(&dir, "bad", "a", &server.url(), &app);

    // A second host claiming node `a`.
    let (code, err) = up("r3", &["--cluster", &server.url(), "--node", "a"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("node `a` is in app `bad`'s cluster already"),
        "{err}"
    );
    assert_eq!(
        a.run(&["ps"]).status.code(),
        Some(0),
        "the first one goes on"
    );

    // A guest placed on a node that never joins: reported, and listed.
    a.wait_output(
        "guest `lost` is placed on node `c`, which has not joined the cluster",
        Duration::from_secs(20),
    );
    let ps = a.ps_cluster();
    let lost = ps["guests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "lost")
        .cloned()
        .unwrap_or_default();
    assert_eq!(lost["state"], "node not joined", "{ps}");
    assert_eq!(lost["node"], "c");

    // In a cluster, a guest that says nowhere to run is refused.
    let unplaced = dir.join("unplaced.toml");
    std::fs::write(
        &unplaced,
        format!("[guests.z]\nmodule = \"{}\"\n", guest("echo").display()),
    )
    .unwrap();
    let mut command = Command::new(cli());
    command
        .args([
            "up",
            "--app",
            "bad2",
            "--cluster",
            &server.url(),
            "--node",
            "q",
        ])
        .arg(&unplaced)
        .env("XDG_RUNTIME_DIR", dir.join("r1"));
    let out = output_within(&mut command, 60);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("guest `z` is not placed"), "{err}");
}

#[test]
fn a_paused_host_is_lost_after_three_beats_and_what_it_held_has_an_unknown_outcome() {
    const COUNT: u64 = 3000;
    let _one = serial();
    let dir = scratch_dir("cluster-paused");
    let a_out = dir.join("a-out");
    std::fs::create_dir_all(&a_out).unwrap();
    let server = Nats::start(&dir, "paused");
    // A streams one message every 0.2 ms, and writes down each that
    // comes back.
    let app = manifest(
        &dir,
        &format!(
            r#"
[guests.r0]
module = "{{guest:echo}}"
node = "b"

[guests.flood]
module = "{{guest:tally}}"
args = ["send", "r0", "{COUNT}", "200", "/out/returned"]
node = "a"
dirs = [{{ host = "{}", guest = "/out" }}]
"#,
            a_out.display()
        ),
    );
    let a = Host::up(&dir, "paused", "a", &server.url(), &app);
    let b = Host::up(&dir, "paused", "b", &server.url(), &app);
    let top = || -> serde_json::Value {
        serde_json::from_str(&a.ok(&["top", "--json"])).expect("top JSON")
    };
    wait_for("messages to cross", Duration::from_secs(20), || {
        (top()["cluster"]["acked"].as_u64()? > 20).then_some(())
    });
    // Stopped, not killed: its connection stays open, its subscriptions
    // answer nothing (no acks, no take reports), its beats stop. Only the
    // missed beats can tell.
    let pid = b.child.as_ref().unwrap().id() as i32;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc_kill(pid, 19) };
    let paused = Instant::now();
    let lost_after = wait_for("A to lose B", Duration::from_secs(15), || {
        top()["cluster"]["peers"]
            .as_array()?
            .is_empty()
            .then(|| paused.elapsed())
    });
    let unknown = wait_for(
        "the in-flight messages to settle",
        Duration::from_secs(15),
        || {
            let top = top();
            let sender = top["guests"]
                .as_array()?
                .iter()
                .find(|g| g["name"] == "flood")?
                .clone();
            assert_eq!(sender["node"], "a", "top names each guest's node");
            let unknown = sender["unknown_outcome"].as_u64()?;
            (unknown > 0).then_some((unknown, top["cluster"].clone()))
        },
    );
    // SAFETY: as above.
    unsafe { libc_kill(pid, 18) };
    // The sender guest was told each one, as `unknown outcome`.
    a.wait_output("flood | tally sent", Duration::from_secs(60));
    let output = a.output();
    let line = output
        .lines()
        .find(|l| l.contains("flood | tally sent"))
        .unwrap();
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let [sent, echoed, returned, told] = numbers[numbers.len() - 4..] else {
        panic!("{line}")
    };
    println!(
        "B paused: lost after {lost_after:.2?}; flood's messages of unknown outcome: {} (the guest was told {told}); \
         sent {sent}, echoed {echoed}, returned {returned}; A's bridge: {}",
        unknown.0, unknown.1
    );
    // Three beats of silence: the last beat came at most a beat and a tick
    // (1.25 s) before the pause, so never sooner than 1.75 s after it.
    assert!(lost_after >= Duration::from_millis(1500), "{lost_after:?}");
    // Each unknown outcome reached the guest, which wrote each down.
    let after = top();
    let counted = row(&after, "flood")["unknown_outcome"]
        .as_u64()
        .unwrap_or_default();
    assert_eq!(told, counted, "{after}");
    assert!(told >= unknown.0);
    assert_eq!(after["cluster"]["unknown_outcome"], counted);
    let file = lines_of(&a_out.join("returned"));
    let told_in_file = file
        .iter()
        .filter(|l| l.ends_with(" unknown outcome"))
        .count();
    assert_eq!(told_in_file as u64, told);
    // Nothing silently lost: each message echoed or returned (one that B
    // took after it resumed may be both: its outcome was unknown).
    assert_eq!(sent, COUNT);
    assert!(echoed + returned >= COUNT, "{line}");
    // And a definite return means not taken: never echoed too.
    assert!(echoed + (returned - told) <= COUNT, "{line}");
}

/// A stand-in for node `node` of app `app`: it beats every second with
/// one guest called `guest`, and takes every letter sent to it without
/// ever answering, until `stop` is set.
fn silent_host(
    url: String,
    app: &str,
    node: &str,
    guest: &str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    use wasmproc::cluster::wire;
    let subjects = wire::Subjects::new(app);
    let beat = wire::encode(&wire::Beat {
        node: node.to_owned(),
        instance: 1,
        guests: vec![wire::Guest {
            id: 1,
            name: Some(guest.to_owned()),
            group: None,
            max_message_size: 1 << 20,
        }],
        leaving: false,
    });
    let (inbox, beats) = (subjects.inbox(node), subjects.beat(node));
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            use futures_util::StreamExt;
            let client = async_nats::connect(url).await.expect("connect");
            // Subscribed, so NATS never says "no responders".
            let mut letters = client.subscribe(inbox).await.unwrap();
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            let mut taken = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::select! {
                    _ = ticks.tick() => {
                        client.publish(beats.clone(), beat.clone()).await.unwrap();
                    }
                    Some(_) = letters.next() => taken += 1,
                }
            }
            taken
        })
    })
}

#[test]
fn a_host_that_never_acks_leaves_its_messages_of_unknown_outcome_after_the_ack_timeout() {
    const COUNT: u64 = 50;
    let _one = serial();
    let dir = scratch_dir("cluster-noack");
    let a_out = dir.join("a-out");
    std::fs::create_dir_all(&a_out).unwrap();
    let server = Nats::start(&dir, "noack");
    let app = manifest(
        &dir,
        &format!(
            r#"
[guests.sender]
module = "{{guest:tally}}"
args = ["send", "r0", "{COUNT}", "1000", "/out/returned"]
node = "a"
dirs = [{{ host = "{}", guest = "/out" }}]
"#,
            a_out.display()
        ),
    );
    // Node b beats, so it is never lost, and never acks anything.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let b = silent_host(server.url(), "noack", "b", "r0", stop.clone());
    let a = Host::up(&dir, "noack", "a", &server.url(), &app);
    let started = Instant::now();
    a.wait_output("sender | tally sent", Duration::from_secs(60));
    let done = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let letters = b.join().unwrap();
    let returned = lines_of(&a_out.join("returned"));
    let top: serde_json::Value = serde_json::from_str(&a.ok(&["top", "--json"])).unwrap();
    println!(
        "no acks from b: {} of {COUNT} came back ({:?} …), the sender done after {done:.2?}; \
         b took {letters} letters; A's bridge: {}",
        returned.len(),
        returned.first(),
        top["cluster"]
    );
    // Each one, once, as of unknown outcome: b took them and said nothing.
    let mut numbers: Vec<u64> = returned
        .iter()
        .map(|l| {
            assert!(l.ends_with(" unknown outcome"), "{l}");
            l.split(' ').next().unwrap().parse().unwrap()
        })
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=COUNT).collect::<Vec<u64>>());
    assert!(letters > 0, "the letters reached b");
    // Not lost: b kept beating.
    assert_eq!(top["cluster"]["peers"], serde_json::json!(["b"]));
    assert_eq!(top["cluster"]["unknown_outcome"], COUNT);
    assert_eq!(row(&top, "sender")["unknown_outcome"], COUNT);
    assert_eq!(top["cluster"]["unsettled"], 0);
    // Neither b lost nor our connection dropped: the ack timeout it was.
    assert_eq!(top["cluster"]["disconnects"], 0);
}

#[test]
fn a_host_whose_own_server_stops_answering_judges_nobody_lost() {
    let _one = serial();
    let dir = scratch_dir("cluster-halfopen");
    let servers = nats_cluster(&dir);
    let app = manifest(
        &dir,
        r#"
[guests.srv]
module = "{guest:rpc}"
args = ["serve", "name"]
node = "b"
"#,
    );
    let a = Host::up(&dir, "half", "a", &servers[0].url(), &app);
    let _b = Host::up(&dir, "half", "b", &servers[1].url(), &app);
    a.wait_reachable("srv");
    a.start("watcher", "postman", &["monitor:srv"]);
    std::thread::sleep(Duration::from_millis(300));
    // A's server stops (SIGSTOP): A's socket stays open and looks up, but
    // nothing comes through, neither B's beats nor A's own.
    let pid = servers[0].child.as_ref().unwrap().id() as i32;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc_kill(pid, 19) };
    std::thread::sleep(Duration::from_secs(6));
    let top: serde_json::Value = serde_json::from_str(&a.ok(&["top", "--json"])).unwrap();
    // SAFETY: as above.
    unsafe { libc_kill(pid, 18) };
    println!(
        "after 6 s without its server, A's bridge: {}",
        top["cluster"]
    );
    assert_eq!(
        top["cluster"]["peers"],
        serde_json::json!(["b"]),
        "B not judged lost"
    );
    assert!(!a.output().contains("down srv"), "{}", a.output());
    // Once the server answers again, traffic goes on as before.
    wait_for("srv to answer A again", Duration::from_secs(20), || {
        let out = a.run(&["call", "srv", "x"]);
        (String::from_utf8_lossy(&out.stdout).trim() == "srv").then_some(())
    });
    assert!(!a.output().contains("down srv"), "{}", a.output());
}

#[test]
fn a_host_whose_server_is_gone_still_shuts_down_promptly() {
    let _one = serial();
    let dir = scratch_dir("cluster-shutdown");
    let mut server = Nats::start(&dir, "gone");
    let app = manifest(
        &dir,
        r#"
[guests.srv]
module = "{guest:rpc}"
args = ["serve", "name"]
node = "a"
"#,
    );
    let mut a = Host::up(&dir, "gone", "a", &server.url(), &app);
    server.kill();
    // The client is reconnecting by now, again and again.
    std::thread::sleep(Duration::from_secs(3));
    let took = a.terminate(Duration::from_secs(15));
    println!("SIGTERM with the server gone for 3 s: A ended in {took:.2?}");
    assert!(a.output().contains("srv ended"), "{}", a.output());
}

#[test]
fn a_guest_moved_to_another_node_loses_nothing_and_keeps_each_senders_order() {
    const COUNT: u64 = 1500;
    let _one = serial();
    let dir = scratch_dir("cluster-move");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let server = Nats::start(&dir, "move");
    // `w` takes one message every 2 ms, with room for 16 in its runner;
    // its two senders (one on each node) stream 2 KiB messages faster than
    // that: what its pipe cannot hold waits in its host (under its
    // mailbox's bound), which the move must carry over.
    let app = manifest(
        &dir,
        &format!(
            r#"{w}
[guests.ta]
module = "{{guest:tally}}"
args = ["send", "w", "{COUNT}", "100", "/out/returned-a", "2048"]
node = "a"
dirs = [{{ host = "{out}", guest = "/out" }}]

[guests.tb]
module = "{{guest:tally}}"
args = ["send", "w", "{COUNT}", "100", "/out/returned-b", "2048"]
node = "b"
dirs = [{{ host = "{out}", guest = "/out" }}]
"#,
            w = slow_taker(2000, "a", &out),
            out = out.display()
        ),
    );
    let a = Host::up(&dir, "move", "a", &server.url(), &app);
    let b = Host::up(&dir, "move", "b", &server.url(), &app);
    let taken_file = out.join("taken");
    // B knows of `w` (so `tb` streams too) before the move is asked.
    b.wait_reachable("w");
    wait_for("w to take 300", Duration::from_secs(30), || {
        (lines_of(&taken_file).len() >= 300).then_some(())
    });
    // Asked on A, carried out on B: move `w` from A to B.
    let tally = guest("tally");
    let moved = Instant::now();
    let said = a.ok(&["swap", "--node", "b", "w", tally.to_str().unwrap()]);
    let took = moved.elapsed();
    println!("{} (in {took:.2?})", said.trim());
    assert!(
        said.starts_with("swapped w from node a to node b: ") && said.contains(" 0 returned"),
        "{said}"
    );
    let moved_count: u64 = said["swapped w from node a to node b: ".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("how many moved");
    assert!(
        moved_count > 0,
        "A held messages for w when it moved: {said}"
    );
    a.wait_output("wasmproc: w moved to node `b`", Duration::from_secs(5));
    wait_for("w to take them all", Duration::from_secs(90), || {
        (lines_of(&taken_file).len() as u64 >= 2 * COUNT).then_some(())
    });

    // Nothing came back, and each sender heard every message taken.
    for (host, sender) in [(&a, "ta"), (&b, "tb")] {
        host.wait_output(&format!("{sender} | tally sent"), Duration::from_secs(30));
        let said = format!("{sender} | tally sent {COUNT} echoed ");
        let line = host
            .output()
            .lines()
            .find(|l| l.contains(&said))
            .map(str::to_owned);
        assert!(
            line.as_ref()
                .is_some_and(|l| l.ends_with(" returned 0 (unknown outcome 0)")),
            "{line:?}"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let top: serde_json::Value =
                serde_json::from_str(&host.ok(&["top", "--json"])).unwrap();
            if row(&top, sender)["msgs_in"] == COUNT {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "waited 30s for {sender}'s {COUNT} echoes; its row: {}\n\
                 host a printed:\n{}\nhost b printed:\n{}",
                row(&top, sender),
                a.output(),
                b.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert_eq!(lines_of(&out.join("returned-a")), Vec::<String>::new());
    assert_eq!(lines_of(&out.join("returned-b")), Vec::<String>::new());

    // Two instances wrote what they took: the old one (on A) a first part
    // of each sender's numbers, the new one (on B) the rest, each in order.
    let lines = lines_of(&taken_file);
    let mut runs: Vec<&str> = Vec::new();
    let mut by_run: std::collections::BTreeMap<(&str, &str), Vec<u64>> = Default::default();
    for line in &lines {
        let mut words = line.split(' ');
        let (run, k, from) = (
            words.next().unwrap(),
            words.next().unwrap(),
            words.next().unwrap(),
        );
        if !runs.contains(&run) {
            runs.push(run);
        }
        by_run
            .entry((run, from))
            .or_default()
            .push(k.parse().unwrap());
    }
    assert_eq!(runs.len(), 2, "the old instance and the new one");
    let (old, new) = (runs[0], runs[1]);
    for sender in ["ta", "tb"] {
        let first = by_run.remove(&(old, sender)).unwrap_or_default();
        let then = by_run.remove(&(new, sender)).unwrap_or_default();
        println!(
            "from {sender}: the old instance took {}, the new one {}",
            first.len(),
            then.len()
        );
        let all: Vec<u64> = first.iter().chain(&then).copied().collect();
        assert_eq!(
            all,
            (1..=COUNT).collect::<Vec<u64>>(),
            "{sender}: each once, in order"
        );
        assert!(
            !first.is_empty() && !then.is_empty(),
            "{sender}: before and after the move"
        );
    }
    assert!(by_run.is_empty(), "nobody else sent: {:?}", by_run.keys());

    // `w` runs on B now: B supervises it, A does not, and both reach it.
    let ps = |host: &Host| -> Vec<serde_json::Value> {
        serde_json::from_str(&host.ok(&["ps", "--json"])).expect("ps JSON")
    };
    let on_b = ps(&b);
    let w = on_b
        .iter()
        .find(|g| g["name"] == "w")
        .cloned()
        .unwrap_or_default();
    assert_eq!(w["state"], "running", "{on_b:?}");
    let on_a = ps(&a);
    assert!(on_a.iter().all(|g| g["name"] != "w"), "{on_a:?}");
    a.wait_reachable("w");
    // And neither host is left waiting to hear what became of a message.
    for host in [&a, &b] {
        wait_for("every message settled", Duration::from_secs(5), || {
            let top: serde_json::Value =
                serde_json::from_str(&host.ok(&["top", "--json"])).unwrap();
            (top["cluster"]["unsettled"] == 0).then_some(())
        });
    }
}

#[test]
fn takes_made_while_a_hosts_connection_is_down_are_reported_once_it_is_back() {
    const COUNT: u64 = 1500;
    let _one = serial();
    let dir = scratch_dir("cluster-offline-takes");
    let (a_out, b_out) = (dir.join("a-out"), dir.join("b-out"));
    std::fs::create_dir_all(&a_out).unwrap();
    std::fs::create_dir_all(&b_out).unwrap();
    let mut servers = nats_cluster(&dir);
    // B's guest takes one message every 5 ms; A's sender is done long
    // before, so most of its messages wait in B's host meanwhile.
    let app = manifest(
        &dir,
        &format!(
            r#"
[guests.slow]
module = "{{guest:tally}}"
args = ["take", "5000", "/out/taken"]
node = "b"
dirs = [{{ host = "{}", guest = "/out" }}]

[guests.tally]
module = "{{guest:tally}}"
args = ["send", "slow", "{COUNT}", "100", "/out/returned"]
node = "a"
dirs = [{{ host = "{}", guest = "/out" }}]
"#,
            b_out.display(),
            a_out.display()
        ),
    );
    let a = Host::up(&dir, "offline", "a", &servers[0].url(), &app);
    let b = Host::up(&dir, "offline", "b", &servers[1].url(), &app);
    let taken_file = b_out.join("taken");
    wait_for(
        "A's sender to have sent them all",
        Duration::from_secs(60),
        || {
            let top: serde_json::Value = serde_json::from_str(&a.ok(&["top", "--json"])).unwrap();
            (row(&top, "tally")["msgs_out"] == COUNT).then_some(())
        },
    );
    // B loses its server for a moment, shorter than the beats a peer must
    // miss to be lost (A keeps its own); B's guest goes on taking.
    let before = lines_of(&taken_file).len();
    let restarted = Instant::now();
    servers[1].restart();
    b.wait_output("lost the connection", Duration::from_secs(10));
    wait_for("B to connect again", Duration::from_secs(10), || {
        let top: serde_json::Value = serde_json::from_str(&b.ok(&["top", "--json"])).unwrap();
        (top["cluster"]["connected"] == true).then_some(())
    });
    let during = lines_of(&taken_file).len() - before;
    println!(
        "B was back {:.2?} after the restart began",
        restarted.elapsed()
    );
    wait_for(
        "B's guest to take them all",
        Duration::from_secs(60),
        || (lines_of(&taken_file).len() as u64 == COUNT).then_some(()),
    );
    println!("B's guest took {during} message(s) while the server was restarting");
    assert!(during > 0, "B's guest took messages meanwhile");

    // A heard of every take: nothing left unsettled, nothing returned.
    wait_for("A to hear every take", Duration::from_secs(10), || {
        let top: serde_json::Value = serde_json::from_str(&a.ok(&["top", "--json"])).unwrap();
        (top["cluster"]["unsettled"] == 0).then_some(())
    });
    let top: serde_json::Value = serde_json::from_str(&a.ok(&["top", "--json"])).unwrap();
    assert_eq!(top["cluster"]["unknown_outcome"], 0, "{}", top["cluster"]);
    assert_eq!(lines_of(&a_out.join("returned")), Vec::<String>::new());
    assert!(
        !a.output().contains("is lost"),
        "A judged B lost:\n{}",
        a.output()
    );
}

#[test]
fn of_two_hosts_that_claim_one_node_at_once_exactly_one_runs_it() {
    let _one = serial();
    let dir = scratch_dir("cluster-twins");
    let server = Nats::start(&dir, "twins");
    let app = manifest(
        &dir,
        r#"
[guests.here]
module = "{guest:echo}"
node = "a"
"#,
    );
    for round in 0..3 {
        let app_name = format!("twins{round}");
        let spawn = |which: &str| {
            let runtime = dir.join(format!("run-{round}-{which}"));
            std::fs::create_dir_all(&runtime).unwrap();
            Command::new(cli())
                .args([
                    "up",
                    "--app",
                    &app_name,
                    "--cluster",
                    &server.url(),
                    "--node",
                    "a",
                ])
                .arg(&app)
                .env("XDG_RUNTIME_DIR", runtime)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start wasmproc up")
        };
        let mut twins = vec![spawn("x"), spawn("y")];
        // One is refused at once; the other runs on.
        let refused = wait_for("one host to be refused", Duration::from_secs(30), || {
            twins
                .iter_mut()
                .position(|t| t.try_wait().ok().flatten().is_some())
        });
        let out = twins.remove(refused).wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!(
                "node `a` is in app `{app_name}`'s cluster already"
            )),
            "{err}"
        );
        // A third comes later: the one left holds the name.
        let late = spawn("z").wait_with_output().unwrap();
        assert_eq!(
            late.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&late.stderr)
        );
        let mut kept = twins.pop().unwrap();
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            kept.try_wait().unwrap().is_none(),
            "the host that kept node `a` runs on"
        );
        let kept_name = ["y", "x"][refused];
        println!("round {round}: host {kept_name} kept node `a`");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc_kill(kept.id() as i32, 15) };
        let _ = kept.wait();
    }
}

#[test]
fn a_take_report_nobody_answers_is_sent_again_until_it_is() {
    use futures_util::StreamExt;
    use wasmproc::cluster::wire;
    let _one = serial();
    let dir = scratch_dir("cluster-report-again");
    let server = Nats::start(&dir, "again");
    let app = manifest(
        &dir,
        r#"
[guests.sink]
module = "{guest:echo}"
node = "a"
"#,
    );
    let a = Host::up(&dir, "again", "a", &server.url(), &app);
    // A stand-in node `s` (this test) sends five numbered messages to
    // `sink` on A, and leaves A's first take report unanswered.
    let subjects = wire::Subjects::new("again");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (first, second, third) = runtime.block_on(async {
        let client = async_nats::connect(server.url()).await.expect("connect");
        let mut reports = client.subscribe(subjects.settled("s")).await.unwrap();
        // Answer what A sends its stand-ins here (the echoes), so that
        // NATS never says nobody serves node `s`.
        let mut inbox = client.subscribe(subjects.inbox("s")).await.unwrap();
        let answering = client.clone();
        tokio::spawn(async move {
            while let Some(letter) = inbox.next().await {
                let count =
                    wire::decode::<wire::Letter>(&letter.payload).map_or(0, |l| l.envelopes.len());
                let acks = wire::encode(&vec![wire::Ack::Accepted; count]);
                if let Some(reply) = letter.reply {
                    let _ = answering.publish(reply, acks).await;
                }
            }
        });
        let beat = wire::encode(&wire::Beat {
            node: "s".to_owned(),
            instance: 7,
            guests: vec![wire::Guest {
                id: 1,
                name: Some("feeder".to_owned()),
                group: None,
                max_message_size: 1 << 20,
            }],
            leaving: false,
        });
        let beating = client.clone();
        let beats = subjects.beat("s");
        tokio::spawn(async move {
            loop {
                let _ = beating.publish(beats.clone(), beat.clone()).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let envelopes = (100..105)
            .map(|seq| wire::Envelope::Message {
                to: wire::Target::Name("sink".to_owned()),
                from: wire::From {
                    id: 1,
                    name: Some("feeder".to_owned()),
                },
                seq,
                payload: b"hi".to_vec(),
            })
            .collect();
        let letter = wire::encode(&wire::Letter::new("s".to_owned(), envelopes));
        let acks = client
            .request(subjects.inbox("a"), letter)
            .await
            .expect("A acks the letter");
        assert_eq!(
            wire::decode::<Vec<wire::Ack>>(&acks.payload),
            Some(vec![wire::Ack::Accepted; 5])
        );
        let mut next = async || {
            let report = tokio::time::timeout(Duration::from_secs(3), reports.next()).await;
            report.ok().flatten()
        };
        let first = next().await.expect("A's take report");
        let heard = Instant::now();
        let second = next().await.expect("A's report, sent again");
        let again = heard.elapsed();
        client
            .publish(
                second.reply.clone().expect("a reply subject"),
                bytes::Bytes::new(),
            )
            .await
            .unwrap();
        client.flush().await.unwrap();
        let third = next().await;
        println!("A sent its unanswered report again after {again:.2?}");
        (first, second, third)
    });
    let taken = |m: &async_nats::Message| {
        let mut taken = wire::decode::<wire::Report>(&m.payload)
            .expect("a report")
            .taken;
        taken.sort_unstable();
        taken
    };
    assert_eq!(taken(&first), [100, 101, 102, 103, 104]);
    assert_eq!(taken(&second), taken(&first), "the same report");
    assert!(third.is_none(), "answered: not sent a third time");
    let top: serde_json::Value = serde_json::from_str(&a.ok(&["top", "--json"])).unwrap();
    assert_eq!(
        top["cluster"]["reports_unanswered"], 0,
        "{}",
        top["cluster"]
    );
    assert_eq!(top["cluster"]["reports_given_up"], 0, "{}", top["cluster"]);
}
