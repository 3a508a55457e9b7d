//! The cluster rows: two wasmproc hosts joined over a NATS server the
//! bench starts (host B a `wasmproc up` process, host A this process),
//! against plain async-nats processes on the same server in the same run.
//!
//! - round trip: a guest on A sends numbered 8 B messages to a guest on B
//!   and waits for each back (`pingpong ping`/`pong`), against async-nats
//!   request/reply of 8 B between two processes; and the same again with
//!   every process of both on CPU 0;
//! - stream: a guest on A sends 64 B messages to a guest on B without
//!   waiting, each acknowledged by B's relay, until B's guest answers that
//!   all came (`pingpong stream`/`sink`), against async-nats pub→sub with
//!   no acks.
//!
//! The guests' times are their run times as the host reports them (they
//! include the guest's start, a few ms).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use wasmproc::app::{CancellationToken, Event};
use wasmproc::cluster::ClusterConfig;

use super::{Row, guest};

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start a nats-server on a port of its choosing; its URL.
fn nats_server(dir: &Path) -> anyhow::Result<(Killed, String)> {
    let child = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", "-1", "--ports_file_dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start nats-server (apt-get install nats-server)")?;
    let ports = dir.join(format!("nats-server_{}.ports", child.id()));
    let child = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ports)
            && let Ok(value) = serde_json::from_str::<Value>(&text)
            && let Some(url) = value["nats"][0].as_str()
        {
            return Ok((child, url.to_owned()));
        }
        if Instant::now() > deadline {
            bail!("nats-server wrote no ports file in 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn floor_exe() -> anyhow::Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name("nats-floor"))
}

/// A floor process that serves until dropped, once it says `ready`.
fn floor_server(args: &[&str]) -> anyhow::Result<Killed> {
    use std::io::BufRead;
    let mut child = Command::new(floor_exe()?)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start nats-floor")?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("its stdout")?).read_line(&mut line)?;
    anyhow::ensure!(line.trim() == "ready", "nats-floor said `{line}`");
    Ok(Killed(child))
}

/// Run a floor process to its end; the JSON it prints.
fn floor_run(args: &[&str]) -> anyhow::Result<Value> {
    let out = Command::new(floor_exe()?).args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "nats-floor {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(
        text.lines().last().unwrap_or_default(),
    )?)
}

/// Start the guest `name` of `manifest` on the live host, and wait for its
/// end: how long it ran.
async fn run_guest(
    live: &std::sync::Arc<wasmproc::app::Live>,
    manifest: &wasmproc::manifest::Manifest,
    name: &str,
    ended: &mut tokio::sync::mpsc::Receiver<(String, String, Duration)>,
) -> anyhow::Result<Duration> {
    let def = manifest
        .guests
        .iter()
        .find(|g| g.name == name)
        .cloned()
        .context("no such guest")?;
    live.start(def).await.map_err(anyhow::Error::msg)?;
    loop {
        let (guest, status, uptime) = tokio::time::timeout(Duration::from_secs(300), ended.recv())
            .await
            .context("the guest did not end within 300 s")?
            .context("the app ended")?;
        if guest == name {
            anyhow::ensure!(status == "exit code 0", "{name} ended: {status}");
            return Ok(uptime);
        }
    }
}

/// The figures of one run of the cluster scenarios.
struct Measured {
    rtt_us: f64,
    raw_rtt_us: f64,
    /// The acked stream and its floor (msg/s), when asked for.
    stream: Option<(f64, f64)>,
}

pub(super) async fn rows(quick: bool, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    eprintln!("bench: cluster");
    let (trips, messages) = if quick {
        (2_000, 20_000)
    } else {
        (10_000, 100_000)
    };
    let measured = measure(trips, Some(messages)).await?;
    // The round trip again with every process on CPU 0 (a bench process of
    // its own under `taskset`, which its children inherit): placement
    // moves the unpinned figure more than any change does.
    let me = std::env::current_exe()?;
    let pinned = super::external(
        &me.to_string_lossy(),
        &["cluster-rtt".to_owned(), trips.to_string()],
        true,
    )?;
    let (stream, raw_stream) = measured.stream.context("the stream was measured")?;
    rows.push(Row {
        scenario: "rtt guest↔guest across hosts over NATS (µs; floor = async-nats request/reply)"
            .to_owned(),
        unit: "µs",
        wasmproc: measured.rtt_us,
        node: None,
        floor: Some(measured.raw_rtt_us),
        higher_better: false,
    });
    rows.push(Row {
        scenario: "rtt guest↔guest across hosts over NATS, one CPU (µs; floor = async-nats request/reply, one CPU)"
            .to_owned(),
        unit: "µs",
        wasmproc: pinned["rtt_us"].as_f64().context("rtt_us")?,
        node: None,
        floor: pinned["raw_rtt_us"].as_f64(),
        higher_better: false,
    });
    rows.push(Row {
        scenario:
            "stream 64 B across hosts, each acked (msg/s; floor = async-nats pub→sub, no acks)"
                .to_owned(),
        unit: "msg/s",
        wasmproc: stream,
        node: None,
        floor: Some(raw_stream),
        higher_better: true,
    });
    Ok(())
}

/// `wasmproc-bench cluster-rtt N`: the round trip alone (run under
/// `taskset` by [`rows`]), printed as JSON.
pub(super) async fn rtt_alone(trips: u64) -> anyhow::Result<()> {
    let measured = measure(trips, None).await?;
    println!(
        "{}",
        serde_json::json!({"rtt_us": measured.rtt_us, "raw_rtt_us": measured.raw_rtt_us})
    );
    Ok(())
}

/// A NATS server, host B as a `wasmproc up` process and host A in this
/// process: `trips` round trips, then `messages` streamed if asked, then
/// the same against plain async-nats processes.
async fn measure(trips: u64, messages: Option<u64>) -> anyhow::Result<Measured> {
    let dir = std::env::temp_dir().join(format!("wasmproc-bench-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (_server, url) = nats_server(&dir)?;
    let pingpong = guest("pingpong")?;
    let text = format!(
        r#"
[guests.pong]
module = "{m}"
args = ["pong", "{trips}"]
node = "b"

[guests.sink]
module = "{m}"
args = ["sink", "{messages}"]
node = "b"

[guests.ping]
module = "{m}"
args = ["ping", "pong", "{trips}"]
node = "later"

[guests.stream]
module = "{m}"
args = ["stream", "sink", "{messages}", "64"]
node = "later"
"#,
        m = pingpong.display(),
        messages = messages.unwrap_or(1)
    );
    let path = dir.join("cluster.toml");
    std::fs::write(&path, text)?;
    let manifest = wasmproc::manifest::load(&path)?;

    // Host B: a `wasmproc up` process of its own.
    let runtime = dir.join("run-b");
    std::fs::create_dir_all(&runtime)?;
    let wasmproc = std::env::current_exe()?.with_file_name("wasmproc");
    let _b = Killed(
        Command::new(&wasmproc)
            .args(["up", "--app", "benchc", "--cluster", &url, "--node", "b"])
            .arg(&path)
            .env("XDG_RUNTIME_DIR", &runtime)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start host B")?,
    );

    // Host A: this process.
    let (events, mut printed) = tokio::sync::mpsc::channel(wasmproc::app::EVENT_CAPACITY);
    let (ended_tx, mut ended) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(event) = printed.recv().await {
            if let Event::Exited {
                guest,
                status,
                uptime,
            } = event
            {
                let _ = ended_tx.send((guest, status.to_string(), uptime)).await;
            }
        }
    });
    let shutdown = CancellationToken::new();
    let config = ClusterConfig {
        url: url.clone(),
        app: "benchc".to_owned(),
        node: "a".to_owned(),
    };
    let live = wasmproc::app::start_in(&manifest, events, shutdown.clone(), true, Some(config))
        .await?
        .context("host A did not start")?;
    let cluster = live.cluster().context("A is in the cluster")?.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster
        .directory()
        .iter()
        .filter(|(_, name, _)| matches!(name.as_deref(), Some("pong" | "sink")))
        .count()
        < 2
    {
        anyhow::ensure!(Instant::now() < deadline, "A never reached B's guests");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let rtt = run_guest(&live, &manifest, "ping", &mut ended).await?;
    let rtt_us = rtt.as_secs_f64() * 1e6 / trips as f64;
    let streamed = match messages {
        Some(messages) => {
            let streamed = run_guest(&live, &manifest, "stream", &mut ended).await?;
            Some(messages as f64 / streamed.as_secs_f64())
        }
        None => None,
    };
    shutdown.cancel();
    wasmproc::app::finish(&live).await;

    let raw_rtt_us = {
        let _serve = floor_server(&["serve", &url, "bench.rtt"])?;
        floor_run(&["request", &url, "bench.rtt", &trips.to_string(), "8"])?["rtt_us"]
            .as_f64()
            .context("rtt_us")?
    };
    let stream = match (streamed, messages) {
        (Some(streamed), Some(messages)) => {
            let n = messages.to_string();
            let _sink = floor_server(&["sink", &url, "bench.s", &n])?;
            let raw = floor_run(&["pub", &url, "bench.s", &n, "64"])?["msgs_per_s"]
                .as_f64()
                .context("msgs_per_s")?;
            Some((streamed, raw))
        }
        _ => None,
    };
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Measured {
        rtt_us,
        raw_rtt_us,
        stream,
    })
}
