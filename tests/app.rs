//! Apps: groups, the allow-list, monitors, supervision and shutdown, with
//! real processes (the `wasmproc` CLI and its runners).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{cli, guest, recv_text, within};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use wasmproc::{Address, ExitStatus, Host, InboxItem};

#[tokio::test]
async fn a_group_of_three_shares_300_sends_evenly_and_a_broadcast_reaches_all() {
    within(60, async {
        let host = Host::new();
        let mut members = Vec::new();
        for _ in 0..3 {
            members.push(host.command(guest("echo")).group("w").fork().await.unwrap());
        }
        for i in 0..300u32 {
            host.send(&Address::Group("w".into()), i.to_le_bytes().to_vec())
                .unwrap();
        }
        for member in &members {
            for _ in 0..100 {
                assert!(matches!(
                    member.recv().await,
                    Some(InboxItem::Message { .. })
                ));
            }
            assert!(member.try_recv().is_none(), "a member got more than 100");
        }
        host.send(&Address::Broadcast("w".into()), b"all".to_vec())
            .unwrap();
        for member in &members {
            assert_eq!(recv_text(member).await, "all");
        }

        // A guest's sends to the group are shared out the same way.
        let host = Host::new();
        let mut counters = Vec::new();
        for _ in 0..3 {
            let mut command = host.command(guest("pingpong"));
            command.args(["count", "100"]).group("counters");
            counters.push(command.fork().await.unwrap());
        }
        let stream = host
            .command(guest("pingpong"))
            .args(["stream", "group:counters", "300"])
            .fork()
            .await
            .unwrap();
        for counter in &counters {
            assert_eq!(
                counter.recv_value::<(u64, bool)>().await.unwrap(),
                (100, true)
            );
            assert_eq!(counter.wait().await, ExitStatus::Exited { code: 0 });
        }
        assert!(stream.wait().await.success());
        for member in &members {
            member.kill();
        }
    })
    .await;
}

#[tokio::test]
async fn talks_to_refuses_with_not_allowed_and_allowed_sends_still_work() {
    within(60, async {
        let host = Host::new();
        let here = host
            .command(guest("echo"))
            .name("here")
            .fork()
            .await
            .unwrap();
        let other = host
            .command(guest("echo"))
            .name("other")
            .fork()
            .await
            .unwrap();
        let postman = host
            .command(guest("postman"))
            .args(["here", "other", &other.id().0.to_string()])
            .talks_to(["here"])
            .fork()
            .await
            .unwrap();
        let mut lines = vec![
            recv_text(&postman).await,
            recv_text(&postman).await,
            recv_text(&postman).await,
        ];
        lines.sort();
        assert_eq!(
            lines,
            vec![
                format!("#{}: not allowed", other.id().0),
                "here: reply".to_owned(),
                "other: not allowed".to_owned(),
            ]
        );
        assert!(postman.wait().await.success());
        // Nothing reached `other`: it still answers its parent only.
        other.send(b"ping".to_vec()).unwrap();
        assert_eq!(recv_text(&other).await, "ping");
        here.kill();
        other.kill();
    })
    .await;
}

#[tokio::test]
async fn a_monitor_gets_down_with_the_trap_reason() {
    within(60, async {
        let host = Host::new();
        let victim = host
            .command(guest("crasher"))
            .arg("wait")
            .name("victim")
            .fork()
            .await
            .unwrap();
        let watcher = host
            .command(guest("postman"))
            .args(["monitor:victim", "monitor:nobody"])
            .fork()
            .await
            .unwrap();
        // The unknown name is down at once; then the victim traps.
        assert_eq!(recv_text(&watcher).await, "down nobody: no such guest");
        victim.send(b"go".to_vec()).unwrap();
        assert_eq!(
            recv_text(&watcher).await,
            "down victim: trap: wasm `unreachable` instruction executed (in crasher::crash_on_purpose)"
        );
        assert!(watcher.wait().await.success());
    })
    .await;
}

/// A manifest in a fresh folder; `{NAME}` in `body` stands for the path of
/// the built guest NAME.
fn manifest(tag: &str, body: &str) -> PathBuf {
    let dir = common::scratch_dir(&format!("app-{tag}"));
    let mut text = body.to_owned();
    for name in [
        "echo",
        "crasher",
        "primes",
        "coordinator",
        "taker",
        "sender",
    ] {
        text = text.replace(&format!("{{{name}}}"), &guest(name).display().to_string());
    }
    let path = dir.join("app.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The app's JSON events, read as they come.
struct App {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl App {
    fn start(manifest: &std::path::Path) -> App {
        let mut child = tokio::process::Command::new(cli())
            .args(["run", "--json"])
            .arg(manifest)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        App { child, lines }
    }

    async fn next(&mut self) -> Option<Value> {
        let line = self.lines.next_line().await.unwrap()?;
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")))
    }

    /// Events until the app ends.
    async fn rest(&mut self) -> Vec<Value> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }

    /// Wait for `n` `started` events; their pids.
    async fn started(&mut self, n: usize) -> Vec<i32> {
        let mut pids = Vec::new();
        while pids.len() < n {
            let event = self.next().await.expect("the app ended early");
            if event["event"] == "started" {
                pids.push(event["pid"].as_i64().unwrap() as i32);
            }
        }
        pids
    }

    fn signal(&self, signal: i32) {
        let pid = self.child.id().unwrap() as i32;
        // SAFETY: kill(2) on the app process this test started.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    async fn exit_code(&mut self) -> Option<i32> {
        self.child.wait().await.unwrap().code()
    }
}

fn brief(event: &Value) -> String {
    let kind = event["event"].as_str().unwrap_or("?");
    match kind {
        "exited" => format!(
            "exited {}: {}",
            event["guest"].as_str().unwrap(),
            event["reason"].as_str().unwrap()
        ),
        "restarted" => format!(
            "restarted {} #{} after {}ms",
            event["guest"].as_str().unwrap(),
            event["attempt"],
            event["delay_ms"]
        ),
        "gave-up" => format!(
            "gave up {} after {} restarts",
            event["guest"].as_str().unwrap(),
            event["restarts"]
        ),
        other => format!("{other} {}", event["guest"].as_str().unwrap_or("")),
    }
}

#[tokio::test]
async fn on_failure_restarts_with_growing_delays_then_gives_up_and_never_does_not() {
    within(60, async {
        let path = manifest(
            "restart",
            r#"
[guests.flaky]
module = "{crasher}"
args = ["exit", "1"]
restart = "on-failure"
max-restarts = 2
restart-window = "1m"
min-uptime = "10s"
backoff = "50ms"
backoff-max = "1s"

[guests.once]
module = "{crasher}"
args = ["exit", "1"]
restart = "never"
"#,
        );
        let mut app = App::start(&path);
        let events = app.rest().await;
        assert_eq!(app.exit_code().await, Some(1));
        let of = |name: &str| -> Vec<String> {
            events
                .iter()
                .filter(|e| e["guest"] == name)
                .map(brief)
                .collect()
        };
        assert_eq!(
            of("flaky"),
            vec![
                "started flaky",
                "exited flaky: exit code 1",
                "restarted flaky #1 after 50ms",
                "started flaky",
                "exited flaky: exit code 1",
                "restarted flaky #2 after 100ms",
                "started flaky",
                "exited flaky: exit code 1",
                "gave up flaky after 2 restarts",
            ]
        );
        assert_eq!(of("once"), vec!["started once", "exited once: exit code 1"]);
    })
    .await;
}

/// Tests with a deadline run one at a time.
static DEADLINES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn sigterm_shuts_every_guest_down_and_the_host_exits_0_within_the_grace_period() {
    let _one_at_a_time = DEADLINES.lock().await;
    within(60, async {
        let path = manifest(
            "sigterm",
            "[guests.echo]\nmodule = \"{echo}\"\nreplicas = 2\nrestart = \"always\"\ngrace = \"5s\"\n",
        );
        let mut app = App::start(&path);
        app.started(2).await;
        let sent = Instant::now();
        app.signal(libc::SIGTERM);
        let events = app.rest().await;
        assert_eq!(app.exit_code().await, Some(0));
        let took = sent.elapsed();
        assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
        let mut ends: Vec<String> = events.iter().map(brief).collect();
        ends.sort();
        assert_eq!(ends, vec!["exited echo.1: exit code 0", "exited echo.2: exit code 0"]);
    })
    .await;
}

#[tokio::test]
async fn a_guest_that_ignores_shutdown_is_killed_after_the_grace_period() {
    let _one_at_a_time = DEADLINES.lock().await;
    within(60, async {
        let path = manifest(
            "obstinate",
            "[guests.obstinate]\nmodule = \"{crasher}\"\nargs = [\"idle\"]\ngrace = \"1s\"\n\n\
             [guests.polite]\nmodule = \"{echo}\"\n",
        );
        let mut app = App::start(&path);
        app.started(2).await;
        let sent = Instant::now();
        app.signal(libc::SIGINT);
        let events = app.rest().await;
        let took = sent.elapsed();
        assert_eq!(app.exit_code().await, Some(1));
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(3),
            "shutdown took {took:?}"
        );
        let mut ends: Vec<String> = events.iter().map(brief).collect();
        ends.sort();
        assert_eq!(
            ends,
            vec![
                "exited obstinate: killed by the host (SIGKILL)",
                "exited polite: exit code 0",
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn sigterm_stops_a_guest_that_floods_and_never_reads_within_grace_and_a_second() {
    let _one_at_a_time = DEADLINES.lock().await;
    within(60, async {
        let path = manifest(
            "flood",
            "[guests.flood]\nmodule = \"{crasher}\"\nargs = [\"flood\"]\ngrace = \"500ms\"\n",
        );
        let mut app = App::start(&path);
        app.started(1).await;
        // Long enough for its mailbox to fill with notices it never reads.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let sent = Instant::now();
        app.signal(libc::SIGTERM);
        let events = app.rest().await;
        let took = sent.elapsed();
        assert_eq!(app.exit_code().await, Some(1));
        assert!(took < Duration::from_millis(1500), "shutdown took {took:?}");
        let briefs: Vec<String> = events.iter().map(brief).collect();
        assert_eq!(briefs[0], "exited flood: killed by the host (SIGKILL)");
        // The shutdown notice found no room: dropped and counted.
        assert_eq!(briefs[1..], ["stopped "]);
        assert!(events[1]["dropped_notices"].as_u64().unwrap() >= 1);
    })
    .await;
}

#[tokio::test]
async fn an_over_long_output_line_is_cut_and_the_next_ten_lines_still_arrive() {
    within(60, async {
        let path = manifest(
            "longline",
            "[guests.talker]\nmodule = \"{crasher}\"\nargs = [\"longline\", \"131072\"]\n",
        );
        let mut app = App::start(&path);
        let events = app.rest().await;
        assert_eq!(app.exit_code().await, Some(0));
        let lines: Vec<&str> = events
            .iter()
            .filter(|e| e["event"] == "output")
            .map(|e| e["line"].as_str().unwrap())
            .collect();
        let mut expected = vec!["[line over 65536 bytes cut]".to_owned()];
        expected.extend((0..10).map(|i| format!("line {i}")));
        assert_eq!(lines, expected);
        assert_eq!(
            events.last().map(brief).as_deref(),
            Some("exited talker: exit code 0")
        );
    })
    .await;
}

/// A receiver restarted by its policy, twice, in the middle of a stream:
/// every message its sender sent was taken by one of its instances or
/// came back, exactly once.
#[tokio::test]
async fn a_receiver_restarted_by_its_policy_loses_nothing() {
    let _one_at_a_time = DEADLINES.lock().await;
    within(120, async {
        let path = manifest(
            "restart-accounting",
            "[guests.s]\nmodule = \"{sender}\"\nargs = [\"r\", \"1\", \"10000\", \"100\"]\n\n\
             [guests.r0]\nmodule = \"{taker}\"\nargs = [\"all\", \"exit\", \"100\"]\n\
             restart = \"always\"\nbackoff = \"50ms\"\n",
        );
        let mut app = App::start(&path);
        let mut kills = 0;
        let mut report = None;
        while report.is_none() {
            let event = app.next().await.expect("the app ended early");
            match (event["event"].as_str(), event["guest"].as_str()) {
                (Some("started"), Some("r0")) if kills < 2 => {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    let pid = event["pid"].as_i64().unwrap() as i32;
                    // SAFETY: kill(2) on a runner of the app this test started.
                    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
                    kills += 1;
                }
                (Some("output"), Some("s")) => report = event["line"].as_str().map(str::to_owned),
                _ => {}
            }
        }
        let report = report.unwrap();
        let fields: Vec<u64> = report.split(' ').filter_map(|w| w.parse().ok()).collect();
        let [taken, returned, duplicates, disorders] = fields[..] else {
            panic!("bad report `{report}`");
        };
        assert_eq!(taken + returned, 10_000, "{report}");
        assert_eq!((duplicates, disorders), (0, 0), "{report}");
        assert!(returned > 0, "the kills came too late to matter: {report}");
        assert_eq!(kills, 2);
        app.signal(libc::SIGTERM);
        let events = app.rest().await;
        assert!(
            events
                .iter()
                .map(brief)
                .any(|b| b == "exited s: exit code 0"),
            "{events:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn sigkill_to_the_host_leaves_no_runner_alive_a_second_later() {
    let _one_at_a_time = DEADLINES.lock().await;
    within(60, async {
        let path = manifest(
            "orphans",
            "[guests.idle]\nmodule = \"{crasher}\"\nargs = [\"idle\"]\nreplicas = 3\n",
        );
        let mut app = App::start(&path);
        let pids = app.started(3).await;
        for pid in &pids {
            assert!(alive(*pid), "runner {pid} is not running");
        }
        app.signal(libc::SIGKILL);
        assert_eq!(app.exit_code().await, None);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let alive: Vec<i32> = pids.into_iter().filter(|pid| alive(*pid)).collect();
        assert!(alive.is_empty(), "runners still alive: {alive:?}");
    })
    .await;
}

/// Whether `pid` runs (a zombie waiting to be reaped does not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => false,
    }
}

#[test]
fn bad_manifests_are_refused_before_anything_starts_naming_line_and_key() {
    let cases = [
        (
            "[guests.a]\nmodule = \"{echo}\"\nreplica = 2\n",
            ":3: guests.a.replica: unknown field `replica`",
        ),
        (
            "[guests.a]\nmodule = \"{echo}\"\nreplicas = \"two\"\n",
            ":3: guests.a.replicas: invalid type: string \"two\", expected u32",
        ),
        (
            "[guests.a]\nmodule = \"missing.wasm\"\n",
            ":2: guests.a.module: module `missing.wasm` not found",
        ),
        (
            "[guests.a]\nmodule = \"{echo}\"\ntalks-to = [\"nobody\"]\n",
            ":3: guests.a.talks-to: `nobody` names no guest or group",
        ),
        (
            "[guests.a]\nmodule = \"{echo}\"\n\n[guests.a]\nmodule = \"{echo}\"\n",
            ":4: guests.a: duplicate key",
        ),
    ];
    for (i, (body, expected)) in cases.iter().enumerate() {
        let path = manifest(&format!("bad{i}"), body);
        let out =
            common::output_within(std::process::Command::new(cli()).arg("run").arg(&path), 60);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8(out.stderr).unwrap();
        let prefix = format!("wasmproc: {}{expected}", path.display());
        assert!(err.starts_with(&prefix), "expected `{prefix}`, got `{err}`");
        assert!(!err.contains("started"), "{err}");
    }
}

#[test]
fn an_app_with_more_guests_than_open_files_allow_is_refused_before_any_starts() {
    let path = manifest(
        "too-many",
        "[guests.a]\nmodule = \"{echo}\"\nreplicas = 300\n\n\
         [guests.b]\nmodule = \"{echo}\"\nreplicas = 300\n",
    );
    // `ulimit -n` sets the soft and the hard limit: the host cannot raise it.
    let out = common::output_within(
        std::process::Command::new("sh")
            .arg("-c")
            .arg("ulimit -n 2048 && exec \"$0\" run \"$1\"")
            .arg(cli())
            .arg(&path),
        60,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "wasmproc: the app has 600 guests, but this host can start at most 581 with a limit of \
         2048 open files (4 each in the first half of it, 3 in the second): raise the limit \
         with `ulimit -n` or run fewer replicas\n"
    );
}

#[test]
fn the_demo_app_counts_primes_and_ends_cleanly() {
    let out = common::output_within(
        std::process::Command::new(cli())
            .arg("run")
            .arg(common::root().join("examples/primes-app/app.toml")),
        60,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with("coordinator | primes in 2..3000000: 216816\n"),
        "{stdout}"
    );
    assert!(stdout.contains("coordinator | speedup:"), "{stdout}");
}

#[test]
fn guests_start_together_so_none_finds_another_missing_however_long_it_compiles() {
    // The coordinator's module is compiled already, the workers' is not: had
    // the coordinator started first, its first send would find no `work.1`.
    let cache = common::scratch_dir("app-start-together-cache");
    let precompile = common::output_within(
        std::process::Command::new(cli())
            .env("WASMPROC_CACHE_DIR", &cache)
            .arg("run")
            .arg(guest("coordinator")),
        60,
    );
    assert_eq!(precompile.status.code(), Some(2), "usage error expected");
    let artifacts = || {
        std::fs::read_dir(&cache)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
            .count()
    };
    assert_eq!(artifacts(), 1);

    let path = manifest(
        "start-together",
        "[guests.coordinator]\nmodule = \"{coordinator}\"\n\
         args = [\"--compare\", \"--stop\", \"2\", \"100000\", \"4\", \"work.1\", \"work.2\"]\n\
         talks-to = [\"work\"]\n\n\
         [guests.work]\nmodule = \"{primes}\"\nreplicas = 2\n",
    );
    let out = common::output_within(
        std::process::Command::new(cli())
            .env("WASMPROC_CACHE_DIR", &cache)
            .arg("run")
            .arg(&path),
        60,
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("coordinator | primes in 2..100000: 9592\n"),
        "{stdout}"
    );
    assert_eq!(artifacts(), 2);
}

#[test]
fn a_module_that_is_not_wasm_stops_the_app_before_any_guest_starts() {
    let path = manifest(
        "not-wasm",
        "[guests.good]\nmodule = \"{echo}\"\n\n[guests.bad]\nmodule = \"bad.wasm\"\nreplicas = 2\n",
    );
    let bad = path.with_file_name("bad.wasm");
    std::fs::write(&bad, "not wasm").unwrap();
    let out = common::output_within(std::process::Command::new(cli()).arg("run").arg(&path), 60);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "wasmproc: bad.1 ended: failed to start: {} is not a WebAssembly file (no `\\0asm` header)\n",
            bad.display()
        )
    );
}
