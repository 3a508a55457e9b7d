//! Live apps through the real CLI against a real `wasmproc up -d`: the
//! control verbs, plugging a module in, logs, a swap, the socket's walls.

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::{cli, guest, output_within, scrape, scratch_dir};

/// One app under `up -d`, with its own socket folder; `down` when dropped.
struct App {
    name: String,
    runtime: PathBuf,
    dir: PathBuf,
}

impl App {
    /// Write `manifest` and bring it up in the background.
    fn up(tag: &str, manifest: &str) -> App {
        let app = App::new(tag);
        app.start(manifest);
        app
    }

    /// An app's folders, before it is up.
    fn new(tag: &str) -> App {
        let dir = scratch_dir(tag);
        let runtime = dir.join("run");
        std::fs::create_dir_all(&runtime).unwrap();
        App {
            name: tag.to_owned(),
            runtime,
            dir,
        }
    }

    /// Bring `manifest` up in the background as this app.
    fn start(&self, manifest: &str) {
        let tag = &self.name;
        let path = self.dir.join(format!("{tag}.toml"));
        std::fs::write(&path, manifest).unwrap();
        let app = self;
        let out = app.run(&["up", "-d", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let log = app.log_path();
        assert_eq!(
            text(&out.stdout).split(" (pid").next().unwrap(),
            format!("app `{tag}` is up")
        );
        assert!(text(&out.stdout).ends_with(&format!("; its log is {}\n", log.display())));
    }

    fn log_path(&self) -> PathBuf {
        self.runtime
            .join("wasmproc")
            .join(format!("{}.log", self.name))
    }

    /// `wasmproc ARGS` against this app's socket folder.
    fn run(&self, args: &[&str]) -> Output {
        let mut command = std::process::Command::new(cli());
        command.args(args).env("XDG_RUNTIME_DIR", &self.runtime);
        output_within(&mut command, 60)
    }

    /// `wasmproc ARGS`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// `ps --json`, parsed.
    fn ps(&self) -> Vec<serde_json::Value> {
        let out = self.ok(&["ps", "--json"]);
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    fn state_of(&self, name: &str) -> serde_json::Value {
        self.ps()
            .into_iter()
            .find(|g| g["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in ps"))
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
        // Wait for the host to finish (its socket goes away).
        let socket = self
            .runtime
            .join("wasmproc")
            .join(format!("{}.sock", self.name));
        for _ in 0..500 {
            if !socket.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn module(name: &str) -> String {
    guest(name).display().to_string()
}

/// Wait until `check` holds, polling; fail with `what` after 20 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if check() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{what} did not happen within 20 s");
}

#[test]
fn up_then_ps_stop_restart_and_down() {
    let app = App::up(
        "basic",
        &format!(
            "[guests.kv]\nmodule = \"{}\"\n\n[guests.echo]\nmodule = \"{}\"\nargs = [\"serve\", \"echo\"]\nreplicas = 2\n",
            module("kv"),
            module("rpc")
        ),
    );
    let ps = app.ok(&["ps"]);
    let lines: Vec<&str> = ps.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "NAME", "ID", "PID", "STATE", "UPTIME", "RESTARTS", "LAST", "EXIT", "MODULE"
        ]
    );
    let names: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["echo.1", "echo.2", "kv"]);
    for line in &lines[1..] {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[3], "running", "{line}");
        assert_eq!(cells[5], "0", "{line}");
    }
    let kv = app.state_of("kv");
    assert_eq!(kv["module"], module("kv"));
    assert_eq!(kv["artifact"].as_str().unwrap().len(), 12);

    assert_eq!(app.ok(&["call", "kv", "put colour blue"]), "ok");
    assert_eq!(app.ok(&["call", "kv", "get colour"]), "value blue");
    assert_eq!(app.ok(&["call", "echo", "hello"]), "hello");
    assert_eq!(app.ok(&["send", "kv", "a plain message"]), "sent\n");

    assert_eq!(app.ok(&["stop", "echo.1"]), "stopped echo.1: exit code 0\n");
    let stopped = app.state_of("echo.1");
    assert_eq!(
        (
            stopped["state"].as_str(),
            stopped["pid"].is_null(),
            stopped["last_exit"].as_str()
        ),
        (Some("stopped"), true, Some("exit code 0"))
    );
    // The group's other member still answers.
    assert_eq!(app.ok(&["call", "echo", "still"]), "still");
    assert_eq!(
        app.ok(&["restart", "echo"]),
        "restarted echo.1\nrestarted echo.2\n"
    );
    for name in ["echo.1", "echo.2"] {
        let g = app.state_of(name);
        assert_eq!(
            (g["state"].as_str(), g["restarts"].as_u64()),
            (Some("running"), Some(1))
        );
    }
    // Unknown targets and verbs are named.
    let out = app.run(&["stop", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "wasmproc: no guest or group `ghost` in this app\n"
    );
    let out = app.run(&["call", "ghost", "x"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        text(&out.stderr),
        "wasmproc: call to ghost failed: the call failed: unknown recipient\n"
    );

    assert_eq!(app.ok(&["down"]), "shutting down\n");
    eventually("the host ending", || {
        app.run(&["ps"]).status.code() == Some(1)
    });
    let log = std::fs::read_to_string(app.log_path()).unwrap();
    assert!(log.contains("wasmproc: request: stop echo.1\n"), "{log}");
    assert!(log.contains("wasmproc: shutting down\n"), "{log}");
    assert!(log.contains("wasmproc: kv ended: exit code 0\n"), "{log}");
}

#[test]
fn a_module_started_into_a_running_app_takes_calls_from_a_guest_already_there() {
    let app = App::up(
        "plug",
        &format!(
            "[guests.asker]\nmodule = \"{}\"\nargs = [\"poll\", \"fresh\", \"hello\"]\n",
            module("rpc")
        ),
    );
    assert_eq!(
        app.ok(&[
            "start",
            "fresh",
            "--module",
            &module("rpc"),
            "--",
            "serve",
            "echo"
        ]),
        "started fresh\n"
    );
    eventually("the asker's answer in its log", || {
        app.ok(&["logs", "asker"]) == "asker | ok hello\n"
    });
    assert_eq!(app.ok(&["logs", "-n", "1"]), "asker | ok hello\n");
    assert_eq!(app.state_of("fresh")["state"], "running");
    // A started guest may join a group; a call to the group reaches it.
    app.ok(&[
        "start",
        "extra",
        "--module",
        &module("rpc"),
        "--group",
        "helpers",
        "--",
        "serve",
        "name",
    ]);
    assert_eq!(app.state_of("extra")["group"], "helpers");
    assert_eq!(app.ok(&["call", "helpers", "who"]), "extra");
    // The same checks as a manifest's.
    let out = app.run(&["start", "fresh", "--module", &module("rpc")]);
    assert_eq!(
        text(&out.stderr),
        "wasmproc: `fresh` is in the app already\n"
    );
    let out = app.run(&[
        "start",
        "other",
        "--module",
        &module("rpc"),
        "--talks-to",
        "nobody",
    ]);
    assert_eq!(
        text(&out.stderr),
        "wasmproc: talks-to: `nobody` names no guest or group\n"
    );
}

#[test]
fn a_swap_through_the_cli_keeps_the_name_and_a_broken_module_rolls_back() {
    let app = App::up(
        "swapcli",
        &format!(
            "[guests.w]\nmodule = \"{}\"\nargs = [\"serve\", \"echo\"]\n",
            module("rpc")
        ),
    );
    assert_eq!(app.ok(&["call", "w", "before"]), "before");
    let old_id = app.state_of("w")["id"].clone();
    let out = app.ok(&["swap", "w", &module("kv")]);
    assert_eq!(
        out,
        "swapped w: 0 moved, 0 drained, 0 returned (the old one: exit code 0)\n"
    );
    // The name now leads to the kv module.
    assert_eq!(app.ok(&["call", "w", "get x"]), "missing");
    let w = app.state_of("w");
    assert_ne!(w["id"], old_id);
    assert_eq!(w["module"], module("kv"));

    let out = app.run(&["swap", "w", &module("crasher")]);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stderr);
    assert!(
        said.starts_with("wasmproc: the new instance ended before it was ready: "),
        "{said}"
    );
    assert_eq!(app.ok(&["call", "w", "put k v"]), "ok");
    assert_eq!(app.state_of("w")["module"], module("kv"));
}

#[test]
fn a_stale_socket_is_replaced_and_named() {
    let app = App::new("stale");
    let runtime = app.runtime.clone();
    let sockets = runtime.join("wasmproc");
    std::fs::create_dir_all(&sockets).unwrap();
    std::fs::set_permissions(
        &sockets,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    // A socket whose listener is gone, as a killed host leaves it.
    let socket = sockets.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let ps = output_within(
        std::process::Command::new(cli())
            .args(["ps", "--app", "stale"])
            .env("XDG_RUNTIME_DIR", &runtime),
        60,
    );
    assert_eq!(
        text(&ps.stderr),
        format!(
            "wasmproc: no app named `stale` is running: its socket {} is stale (the host that made it has died)\n",
            socket.display()
        )
    );
    // `up` replaces it, and says so.
    app.start(&format!("[guests.kv]\nmodule = \"{}\"\n", module("kv")));
    assert_eq!(app.ok(&["call", "kv", "len"]), "0");
    let log = std::fs::read_to_string(app.log_path()).unwrap();
    assert!(
        log.contains(&format!("replacing the stale socket {}", socket.display())),
        "{log}"
    );
    // A second `up` of the same name is refused: that one is alive.
    let path = app.dir.join("stale.toml");
    let out = app.run(&["up", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "wasmproc: an app named `stale` is running already (its socket is {})\n",
            socket.display()
        )
    );
}

#[test]
fn another_user_is_kept_out_by_the_folder_and_by_the_peer_check() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to run a client as another user");
        return;
    }
    let app = App::up(
        "walls",
        &format!("[guests.kv]\nmodule = \"{}\"\n", module("kv")),
    );
    let as_nobody = |extra: &[&str]| {
        let mut command = std::process::Command::new("setpriv");
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(extra)
            .arg(cli())
            .args(["ps", "--app", "walls"])
            .env("XDG_RUNTIME_DIR", &app.runtime);
        output_within(&mut command, 60)
    };
    // The 0700 folder alone keeps it out.
    let out = as_nobody(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
    // Past the folder (CAP_DAC_OVERRIDE), the peer check refuses it.
    let out = as_nobody(&["--inh-caps=+dac_override", "--ambient-caps=+dac_override"]);
    assert_eq!(
        text(&out.stderr),
        "wasmproc: the app closed the connection before it answered\n"
    );
    eventually("the refusal in the host's log", || {
        std::fs::read_to_string(app.log_path())
            .unwrap()
            .contains("refused a control connection from uid 65534")
    });
    // The owner still gets in.
    assert_eq!(app.ok(&["call", "kv", "len"]), "0");
}

/// The address `up --metrics` says it serves, from its log.
fn metrics_address(app: &App) -> String {
    let mut address = None;
    eventually("the metrics address in the log", || {
        let log = std::fs::read_to_string(app.log_path()).unwrap_or_default();
        address = log
            .lines()
            .find_map(|l| l.strip_prefix("wasmproc: metrics on http://"))
            .and_then(|rest| rest.strip_suffix("/metrics"))
            .map(str::to_owned);
        address.is_some()
    });
    address.unwrap()
}

#[test]
fn top_counts_a_known_load_and_the_metrics_endpoint_says_the_same() {
    let app = App::new("load");
    let manifest = format!(
        "[guests.kv]\nmodule = \"{}\"\n\n[guests.flood]\nmodule = \"{}\"\nargs = [\"flood\", \"kv\", \"1000\"]\n",
        module("kv"),
        module("pingpong")
    );
    let path = app.dir.join("load.toml");
    std::fs::write(&path, manifest).unwrap();
    app.ok(&[
        "up",
        "-d",
        "--metrics",
        "127.0.0.1:0",
        path.to_str().unwrap(),
    ]);
    let top = |name: &str| {
        let out = app.ok(&["top", "--json"]);
        let top: serde_json::Value = serde_json::from_str(&out).unwrap();
        top["guests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .cloned()
            .unwrap()
    };
    eventually("1,000 messages at kv", || top("kv")["msgs_in"] == 1000);
    let kv = top("kv");
    assert_eq!(
        (
            &kv["msgs_in"],
            &kv["bytes_in"],
            &kv["msgs_out"],
            &kv["undeliverable"]
        ),
        (
            &serde_json::json!(1000),
            &serde_json::json!(8000),
            &serde_json::json!(0),
            &serde_json::json!(0)
        )
    );
    assert_eq!(kv["state"], "running");
    assert!(kv["rss_bytes"].as_u64().unwrap() > 1 << 20, "{kv}");
    // Its linear memory, as its runner says once it takes its first item
    // (the counters above are the host's, at delivery): whole 64 KiB pages.
    eventually("kv's memory", || {
        top("kv")["memory_bytes"].as_u64() > Some(0)
    });
    let memory = top("kv")["memory_bytes"].as_u64().unwrap();
    assert!(memory >= 1 << 16 && memory % (1 << 16) == 0, "{kv}");
    // The 1,000 and its report to the app: (1000, 0) is 3 bytes of postcard.
    eventually("the flood's report", || top("flood")["msgs_out"] == 1001);
    assert_eq!(top("flood")["bytes_out"], 8003);
    let log = std::fs::read_to_string(app.log_path()).unwrap();
    assert!(
        log.contains("wasmproc: message to the parent from flood: hex:e80700\n"),
        "{log}"
    );

    let (status, text) = scrape(&metrics_address(&app));
    assert_eq!(status, 200);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        assert!(series.ends_with("\"}") || !series.contains('{'), "{line}");
    }
    for expected in [
        "wasmproc_messages_in_total{guest=\"kv\"} 1000",
        "wasmproc_message_bytes_in_total{guest=\"kv\"} 8000",
        "wasmproc_messages_out_total{guest=\"flood\"} 1001",
        "wasmproc_up{guest=\"kv\"} 1",
        "# TYPE wasmproc_messages_in_total counter",
    ] {
        assert!(
            text.lines().any(|l| l == expected),
            "no `{expected}` in\n{text}"
        );
    }
}

#[test]
fn logs_follow_sees_a_new_guests_lines() {
    use std::io::BufRead;
    let app = App::up(
        "follow",
        &format!("[guests.kv]\nmodule = \"{}\"\n", module("kv")),
    );
    let mut follow = std::process::Command::new(cli())
        .args(["logs", "-f", "printer"])
        .env("XDG_RUNTIME_DIR", &app.runtime)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // `logs -f` is subscribed once the app has seen its request.
    eventually("the follower's subscription", || {
        std::fs::read_to_string(app.log_path())
            .unwrap()
            .contains("wasmproc: request: subscribe")
    });
    app.ok(&[
        "start",
        "printer",
        "--module",
        &module("crasher"),
        "--",
        "stderr",
        "hello",
    ]);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match lines.recv_timeout(std::time::Duration::from_secs(20)) {
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    seen.sort();
    assert_eq!(seen, ["printer | err:hello", "printer | hello"]);
    assert_eq!(app.ok(&["logs", "-n", "1", "printer"]).lines().count(), 1);
    // Both lines are from the last minute; none from the future.
    assert_eq!(
        app.ok(&["logs", "--since", "1m", "printer"])
            .lines()
            .count(),
        2
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(app.ok(&["logs", "--since", "1s", "printer"]), "");
}

#[test]
fn a_message_to_the_parent_of_a_run_is_printed() {
    let out = output_within(
        std::process::Command::new(cli())
            .arg("run")
            .arg(guest("postman"))
            .args(["--", "nobody"]),
        60,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stderr),
        "wasmproc: message to the parent: nobody: unknown recipient\n"
    );
}

#[test]
fn reload_adds_removes_swaps_and_restarts_what_the_manifest_changed() {
    let table = |name: &str, module_name: &str, args: &str| {
        format!(
            "[guests.{name}]\nmodule = \"{}\"\nargs = [{args}]\n\n",
            module(module_name)
        )
    };
    let app = App::up(
        "reload",
        &[
            table("a", "rpc", "\"serve\", \"echo\""),
            table("b", "kv", ""),
            table("c", "rpc", "\"serve\", \"echo\""),
            table("e", "kv", ""),
        ]
        .concat(),
    );
    let changed = app.dir.join("changed.toml");
    std::fs::write(
        &changed,
        [
            // a: another module; b: gone; c: other arguments; d: new; e: as it was.
            table("a", "kv", "\"serve\", \"echo\""),
            table("c", "rpc", "\"serve\", \"name\""),
            table("d", "kv", ""),
            table("e", "kv", ""),
        ]
        .concat(),
    )
    .unwrap();
    assert_eq!(
        app.ok(&["reload", changed.to_str().unwrap()]),
        "swapped a (0 moved, 0 drained, 0 returned)\n\
         restarted c with its new settings\n\
         added d\n\
         unchanged e\n\
         removed b\n"
    );
    let names: Vec<String> = app
        .ps()
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["a", "c", "d", "e"]);
    assert_eq!(app.ok(&["call", "a", "get x"]), "missing");
    assert_eq!(app.ok(&["call", "c", "anything"]), "c");
    assert_eq!(app.ok(&["call", "d", "len"]), "0");
    let out = app.run(&["call", "b", "len"]);
    assert_eq!(
        text(&out.stderr),
        "wasmproc: call to b failed: the call failed: the callee exited: exit code 0\n"
    );
    // A manifest with a mistake changes nothing.
    std::fs::write(&changed, "[guests.a]\nmodul = \"x\"\n").unwrap();
    let out = app.run(&["reload", changed.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unknown field `modul`"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(app.ps().len(), 4);
}

#[test]
fn the_app_table_gives_a_rotated_log_file_and_the_metrics_address() {
    let app = App::new("table");
    let log = app.dir.join("logs/out.log");
    app.start(&format!(
        "[app]\nlog-file = \"logs/out.log\"\nlog-size = \"400B\"\nmetrics = \"127.0.0.1:0\"\n\n\
         [guests.chatty]\nmodule = \"{}\"\nargs = [\"stderr\", \"hello\"]\n\
         restart = \"always\"\nmin-uptime = \"0s\"\nbackoff = \"10ms\"\nbackoff-max = \"10ms\"\n",
        module("crasher")
    ));
    let rotated = app.dir.join("logs/out.log.1");
    eventually("the log file rotated", || rotated.exists());
    let lines = std::fs::read_to_string(&rotated).unwrap();
    assert!(lines.len() <= 400, "{} bytes", lines.len());
    for line in lines.lines() {
        // `2026-12-01T18:00:00.123Z chatty | hello` or `... chatty ! err:hello`
        let (stamp, rest) = line.split_once(' ').unwrap();
        assert!(humantime::parse_rfc3339(stamp).is_ok(), "{line}");
        assert!(
            rest == "chatty | hello" || rest == "chatty ! err:hello",
            "{line}"
        );
    }
    assert!(log.exists());
    let (status, text) = scrape(&metrics_address(&app));
    assert_eq!(status, 200);
    assert!(text.contains("wasmproc_up{guest=\"chatty\"}"), "{text}");
}

/// The to-parent messages of `guest` in an app's log, decoded.
fn reports_of<T: serde::de::DeserializeOwned>(log: &str, guest: &str) -> Vec<T> {
    let prefix = format!("wasmproc: message to the parent from {guest}: hex:");
    log.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|hex| {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            postcard::from_bytes(&bytes).unwrap()
        })
        .collect()
}

#[test]
fn swapping_a_guest_three_times_under_a_stream_through_the_cli_loses_nothing() {
    const STREAM: u64 = 300_000;
    let app = App::up(
        "stream",
        &format!(
            "[guests.w]\nmodule = \"{pingpong}\"\nargs = [\"take\", \"1\"]\n\n\
             [guests.flood]\nmodule = \"{pingpong}\"\nargs = [\"flood\", \"w\", \"{STREAM}\"]\n",
            pingpong = module("pingpong")
        ),
    );
    for _ in 0..3 {
        let out = app.ok(&["swap", "w", &module("pingpong")]);
        assert!(out.starts_with("swapped w: "), "{out}");
        assert!(
            out.ends_with(" 0 returned (the old one: exit code 0)\n"),
            "{out}"
        );
    }
    // A module that traps at start is rolled back; the stream goes on.
    let out = app.run(&["swap", "w", &module("crasher")]);
    assert_eq!(out.status.code(), Some(1));
    let log = || std::fs::read_to_string(app.log_path()).unwrap();
    eventually("the whole stream sent", || {
        reports_of::<(u64, u64)>(&log(), "flood").len() == 1
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    app.ok(&["stop", "w"]);
    app.ok(&["send", "flood", "done"]);
    eventually("the flood's last report", || {
        reports_of::<(u64, u64)>(&log(), "flood").len() == 2
    });
    assert_eq!(reports_of::<(u64, u64)>(&log(), "flood")[1], (STREAM, 0));
    type Taken = (u64, u64, u64, u64, bool, u64, u64);
    let versions: Vec<Taken> = reports_of(&log(), "w");
    assert_eq!(versions.len(), 4, "{versions:?}\n{}", log());
    let mut next = 0;
    for (i, (_, first, last, count, in_order, ..)) in versions.iter().enumerate() {
        println!("version {}: took {count} ({first}..={last})", i + 1);
        assert!(in_order, "version {} out of order", i + 1);
        if *count == 0 {
            continue;
        }
        assert_eq!(
            *first,
            next,
            "version {} did not take up where the last left off",
            i + 1
        );
        assert_eq!(last - first + 1, *count);
        next = last + 1;
    }
    assert_eq!(next, STREAM, "every message taken once");
}

#[test]
fn a_closed_output_pipe_ends_nothing_badly() {
    use std::io::BufRead;
    // `wasmproc run app.toml 2>&1 | head -2`: the reader goes away early.
    let (reader, writer) = std::io::pipe().unwrap();
    let mut child = std::process::Command::new(cli())
        .arg("run")
        .arg(common::root().join("examples/primes-app/app.toml"))
        .stdin(std::process::Stdio::null())
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(reader).lines();
    for _ in 0..2 {
        lines.next().unwrap().unwrap();
    }
    drop(lines);
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "no panic (101), the app ran to its end"
    );
}

#[test]
fn run_takes_guest_arguments_after_the_module_and_env_names_alone() {
    let tool = common::tool_p1();
    let out = output_within(
        std::process::Command::new(cli())
            .arg("run")
            .arg(&tool)
            .args(["echo", "hi", "--there"]),
        60,
    );
    assert_eq!(text(&out.stdout), "hi --there\n");
    let out = output_within(
        std::process::Command::new(cli())
            .args(["run", "--env", "WASMPROC_TEST_VALUE"])
            .arg(&tool)
            .arg("env")
            .env("WASMPROC_TEST_VALUE", "passed on"),
        60,
    );
    assert_eq!(text(&out.stdout), "WASMPROC_TEST_VALUE=passed on\n");
    let out = output_within(
        std::process::Command::new(cli())
            .args(["run", "--env", "WASMPROC_TEST_UNSET"])
            .arg(&tool)
            .env_remove("WASMPROC_TEST_UNSET"),
        60,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(
            "`WASMPROC_TEST_UNSET` is not set here, so there is no value to pass on: give K=V"
        ),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn each_way_a_run_ends_has_its_own_exit_code() {
    let crasher = guest("crasher");
    let run = |args: &[&str]| {
        let mut command = std::process::Command::new(cli());
        command.arg("run");
        command.args(args);
        output_within(&mut command, 60)
    };
    let timed_out = run(&["--timeout", "200ms", crasher.to_str().unwrap(), "idle"]);
    assert_eq!(timed_out.status.code(), Some(124));
    assert_eq!(
        text(&timed_out.stderr),
        format!("wasmproc: {}: timed out after 200ms\n", crasher.display())
    );
    let trapped = run(&[crasher.to_str().unwrap(), "trap"]);
    assert_eq!(trapped.status.code(), Some(134));
    let missing = run(&["nothing-here.wasm"]);
    assert_eq!(missing.status.code(), Some(125));
    assert_eq!(
        text(&missing.stderr),
        "wasmproc: cannot run nothing-here.wasm: module nothing-here.wasm not found\n"
    );
    let exited = run(&[common::tool_p1().to_str().unwrap(), "exit", "7"]);
    assert_eq!(exited.status.code(), Some(7));
}

#[test]
fn a_guest_flag_given_to_an_app_is_refused_by_name() {
    let app = common::root().join("examples/primes-app/app.toml");
    let out = output_within(
        std::process::Command::new(cli())
            .args(["run", "--timeout", "5s"])
            .arg(&app),
        60,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "wasmproc: `--timeout` does not apply to an app: give each guest its settings in the manifest\n"
    );
}

#[test]
fn a_second_interrupt_stops_every_guest_at_once() {
    let dir = scratch_dir("interrupt");
    let manifest = dir.join("stubborn.toml");
    // `idle` ignores `shutdown`: the first interrupt waits out its grace.
    std::fs::write(
        &manifest,
        format!(
            "[guests.stubborn]\nmodule = \"{}\"\nargs = [\"idle\"]\ngrace = \"60s\"\n",
            module("crasher")
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(cli())
        .arg("run")
        .arg(&manifest)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let wait_for = |what: &str| loop {
        let line = lines
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no `{what}` line"));
        if line.contains(what) {
            break;
        }
    };
    wait_for("started stubborn");
    // SAFETY: kill(2) on the child this test started and has not reaped.
    unsafe { libc::kill(pid, libc::SIGINT) };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGINT) };
    wait_for("wasmproc: interrupted again: stopping every guest at once");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn completions_and_the_manual_page_come_from_the_command_line_itself() {
    let out = output_within(
        std::process::Command::new(cli()).args(["completions", "bash"]),
        60,
    );
    assert_eq!(out.status.code(), Some(0));
    let script = text(&out.stdout);
    assert!(script.starts_with("_wasmproc() {"), "{script}");
    for verb in ["run", "call", "up", "swap", "reload"] {
        assert!(
            script.contains(&format!("wasmproc,{verb})")),
            "no {verb} in the script"
        );
    }
    let out = output_within(std::process::Command::new(cli()).arg("man"), 60);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains(".TH wasmproc 1"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn compile_warms_the_cache_once_for_two_at_once_and_cache_lists_and_empties_it() {
    let cache = scratch_dir("cache");
    let kv = guest("kv");
    let command = |args: &[&str]| {
        let mut command = std::process::Command::new(cli());
        command
            .args(args)
            .env("WASMPROC_CACHE_DIR", &cache)
            .env("WASMPROC_LOG", "info");
        command
    };
    let compile = || {
        command(&["compile", kv.to_str().unwrap()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (compile(), compile());
    let outs = [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ];
    let compiled = outs
        .iter()
        .filter(|o| text(&o.stderr).contains("compiling"))
        .count();
    assert_eq!(
        compiled, 1,
        "one of the two compiles, the other waits for it"
    );
    for out in &outs {
        assert_eq!(out.status.code(), Some(0));
        let line = text(&out.stdout);
        assert!(
            line.starts_with(&format!("{} → {}/", kv.display(), cache.display())),
            "{line}"
        );
    }
    let listed = text(&output_within(&mut command(&["cache"]), 60).stdout);
    assert!(
        listed.ends_with(&format!(" in {}\n", cache.display())),
        "{listed}"
    );
    assert!(
        listed.lines().last().unwrap().starts_with("1 artifacts, "),
        "{listed}"
    );
    // A run finds it without compiling, or even hashing the file again.
    let call = output_within(&mut command(&["call", kv.to_str().unwrap(), "len"]), 60);
    assert_eq!(text(&call.stdout), "0");
    assert!(
        !text(&call.stderr).contains("compiling"),
        "{}",
        text(&call.stderr)
    );
    let cleaned = text(&output_within(&mut command(&["cache", "clean"]), 60).stdout);
    assert!(cleaned.starts_with("removed 1 artifacts ("), "{cleaned}");
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn run_takes_the_text_format_as_wasmtime_does() {
    let dir = scratch_dir("wat");
    let module = dir.join("exit3.wat");
    std::fs::write(
        &module,
        ";; exits with code 3\n\
         (module\n\
           (import \"wasi_snapshot_preview1\" \"proc_exit\" (func $exit (param i32)))\n\
           (memory (export \"memory\") 1)\n\
           (func (export \"_start\") (call $exit (i32.const 3))))\n",
    )
    .unwrap();
    let out = output_within(
        std::process::Command::new(cli()).arg("run").arg(&module),
        60,
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let broken = dir.join("broken.wat");
    std::fs::write(&broken, "(module (func (export \"_start\") (i32.bogus)))\n").unwrap();
    let out = output_within(
        std::process::Command::new(cli()).arg("run").arg(&broken),
        60,
    );
    assert_eq!(out.status.code(), Some(125));
    let said = text(&out.stderr);
    assert!(
        said.starts_with(&format!("wasmproc: cannot run {}: ", broken.display())),
        "{said}"
    );
    assert!(
        said.contains("--> "),
        "the error points into the file: {said}"
    );
    // Its imports are checked before it is compiled.
    let foreign = dir.join("foreign.wat");
    std::fs::write(
        &foreign,
        "(module (import \"env\" \"now\" (func)) (func (export \"_start\")))\n",
    )
    .unwrap();
    let out = output_within(
        std::process::Command::new(cli()).arg("run").arg(&foreign),
        60,
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("imports `env::now`, which this host does not provide"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
