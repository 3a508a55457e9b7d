//! The demo: a coordinator splits a range over prime-counting workers, each
//! guest in its own process, every message through the host's relay.
//!
//! Run with: `make run` (or `cargo run --example primes` after `make guests`).
//!
//! It counts the primes below `N` (default 3,000,000; first argument) once
//! with one worker and once with two (one per core here), and prints the
//! total, the time of each and the speedup.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use wasmproc::Host;

fn guest(name: &str) -> anyhow::Result<PathBuf> {
    wasmproc::testing::guest(name)
}

/// Count the primes in `2..limit` with `workers` prime guests and one coordinator.
async fn count(limit: u64, workers: usize) -> anyhow::Result<(u64, Duration)> {
    let host = Host::new();
    let mut names = Vec::new();
    let mut children = Vec::new();
    for i in 1..=workers {
        let name = format!("primes-{i}");
        children.push(host.command(guest("primes")?).name(&name).fork().await?);
        names.push(name);
    }
    let started = Instant::now();
    let coordinator = host
        .command(guest("coordinator")?)
        .args(["2".to_owned(), limit.to_string(), "64".to_owned()])
        .args(names)
        .fork()
        .await?;
    let total: u64 = coordinator
        .recv_value()
        .await
        .context("the coordinator did not answer")?;
    let elapsed = started.elapsed();
    let status = coordinator.wait().await;
    if !status.success() {
        bail!("the coordinator ended badly: {status}");
    }
    for child in &children {
        child.kill();
        child.wait().await;
    }
    Ok((total, elapsed))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let limit = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .context("the first argument is the range's end, a number")?,
        None => 3_000_000,
    };
    let (total, one) = count(limit, 1).await?;
    let (total2, two) = count(limit, 2).await?;
    if total != total2 {
        bail!("one worker counted {total} primes, two counted {total2}");
    }
    println!("primes below {limit}: {total}");
    println!("1 worker:  {:>8.1} ms", one.as_secs_f64() * 1e3);
    println!("2 workers: {:>8.1} ms", two.as_secs_f64() * 1e3);
    println!("speedup:   {:>8.2}x", one.as_secs_f64() / two.as_secs_f64());
    Ok(())
}
