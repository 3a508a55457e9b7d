//! `make soak`: guests relaying tokens in a ring for minutes, to see that
//! the host neither grows nor loses anything.
//!
//! Usage: `soak [--guests N] [--tokens T] [--minutes M]` (default 1,000
//! guests, 1,000 tokens, 10 minutes). Each token is a numbered message that
//! the links of the ring forward to the next, forever. The host's RSS is
//! sampled every 10 s; at the end the parent halts every link, after which
//! the links hand every token they get to the parent, and the parent checks
//! that each of the T tokens is still there exactly once (or came back as
//! undeliverable). Prints the RSS at minute 1 and at the end, their ratio,
//! and the tally.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use wasmproc::{Host, InboxItem};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn flag(args: &[String], name: &str, default: u64) -> anyhow::Result<u64> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .with_context(|| format!("{name} needs a number"))?
            .parse()
            .with_context(|| format!("{name} needs a number")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wasmproc::keep_large_buffers_in_heap();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let guests = flag(&args, "--guests", 1000)?;
    let tokens = flag(&args, "--tokens", 1000)?;
    let minutes = flag(&args, "--minutes", 10)?;
    let ring = wasmproc::testing::guest("ring")?;

    let host = Host::new();
    let mut commands: Vec<wasmproc::Command> = (0..guests)
        .map(|i| {
            let mut command = host.command(&ring);
            command
                .args([format!("l{}", (i + 1) % guests), "relay".to_owned()])
                .name(format!("l{i}"));
            command
        })
        .collect();
    let started = Instant::now();
    let links = host.fork_all(&mut commands).await?;
    println!(
        "{guests} links started in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for t in 0..tokens {
        let link = &links[(t % guests) as usize];
        link.send(t.to_le_bytes().to_vec())?;
    }

    let run = Duration::from_secs(minutes * 60);
    let began = Instant::now();
    let mut at_minute_one = None;
    while began.elapsed() < run {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let rss = rss_kib();
        let minute = began.elapsed().as_secs_f64() / 60.0;
        println!("minute {minute:.1}: host rss {rss} KiB");
        if at_minute_one.is_none() && minute >= 1.0 {
            at_minute_one = Some(rss);
        }
    }
    let at_end = rss_kib();

    for link in &links {
        link.send(b"halt".to_vec())?;
    }
    let mut seen = vec![false; tokens as usize];
    let (mut back, mut returned, mut twice) = (0u64, 0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    'collect: while back + returned < tokens {
        for link in &links {
            while let Some(item) = link.try_recv() {
                match item {
                    InboxItem::Message { payload, .. } if payload.len() == 8 => {
                        let t = u64::from_le_bytes(payload[..8].try_into()?) as usize;
                        match seen.get_mut(t) {
                            Some(slot) if !*slot => {
                                *slot = true;
                                back += 1;
                            }
                            _ => twice += 1,
                        }
                    }
                    InboxItem::Message { payload, .. } if payload.starts_with(b"returned") => {
                        returned += 1;
                    }
                    _ => {}
                }
            }
        }
        if Instant::now() > deadline {
            break 'collect;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for link in &links {
        link.kill();
    }
    for link in &links {
        link.wait().await;
    }
    let first = at_minute_one.unwrap_or(at_end);
    println!(
        "host rss: minute 1 {first} KiB, minute {minutes} {at_end} KiB ({:+.1}%)",
        (at_end as f64 / first.max(1) as f64 - 1.0) * 100.0
    );
    println!(
        "tokens: {tokens} sent, {back} back at the parent, {returned} returned, {twice} twice"
    );
    if back + returned != tokens || twice > 0 {
        bail!("tokens were lost or duplicated");
    }
    Ok(())
}
