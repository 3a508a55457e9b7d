//! Splits a range over prime workers and sums their answers.
//!
//! `coordinator [--compare] [--stop] LO HI CHUNKS WORKER...` counts the
//! primes in `LO..HI` by handing `CHUNKS` slices to the workers, then sends
//! the total to the parent as a postcard `u64`. Each worker holds two slices
//! at a time and gets a new one as soon as it answers: it never waits for
//! work, and a fast worker does more.
//!
//! With `--compare` it counts twice, first with the first worker alone and
//! then with all of them, and prints the total, both times and the speedup.
//! With `--stop` it then sends each worker an empty message (stop) so that
//! the whole app ends, also when counting failed.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use wasmproc_guest::{self as ipc, Address, InboxItem};

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut flag = |name: &str| {
        let found = args.iter().any(|a| a == name);
        args.retain(|a| a != name);
        found
    };
    let (compare, stop) = (flag("--compare"), flag("--stop"));
    let (Some(lo), Some(hi), Some(chunks)) = (
        args.first().and_then(|a| a.parse::<u64>().ok()),
        args.get(1).and_then(|a| a.parse::<u64>().ok()),
        args.get(2).and_then(|a| a.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: coordinator [--compare] [--stop] LO HI CHUNKS WORKER...");
        return ExitCode::from(2);
    };
    let workers: Vec<Address> = args[3..].iter().map(|w| Address::parse(w)).collect();
    if workers.is_empty() || chunks == 0 || hi < lo {
        eprintln!("usage: coordinator LO HI CHUNKS WORKER... (at least one worker, one chunk)");
        return ExitCode::from(2);
    }

    let code = run(lo, hi, chunks, &workers, compare);
    // Stop the workers whatever happened, so that the app ends either way.
    if stop {
        for worker in &workers {
            let _ = ipc::send(worker.clone(), &[]);
        }
    }
    code
}

/// Count (twice with `compare`), report, and send the total to the parent.
fn run(lo: u64, hi: u64, chunks: u64, workers: &[Address], compare: bool) -> ExitCode {
    let total = if compare {
        let (Some(total), one) = timed(|| count(lo, hi, chunks, &workers[..1])) else {
            return ExitCode::from(3);
        };
        let (Some(again), all) = timed(|| count(lo, hi, chunks, workers)) else {
            return ExitCode::from(3);
        };
        if total != again {
            eprintln!("coordinator: one worker counted {total}, all counted {again}");
            return ExitCode::from(3);
        }
        println!("primes in {lo}..{hi}: {total}");
        println!("1 worker:  {:>8.1} ms", ms(one));
        println!("{} workers: {:>8.1} ms", workers.len(), ms(all));
        println!("speedup:   {:>8.2}x", one.as_secs_f64() / all.as_secs_f64());
        total
    } else {
        match count(lo, hi, chunks, workers) {
            Some(total) => total,
            None => return ExitCode::from(3),
        }
    };
    send_or_die(Address::Parent, &total);
    ExitCode::SUCCESS
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let value = f();
    (value, started.elapsed())
}

/// How many slices each worker holds at a time.
const SLICES_AHEAD: usize = 2;

/// Count the primes in `lo..hi` with `workers`; `None` if a worker is unreachable.
fn count(lo: u64, hi: u64, chunks: u64, workers: &[Address]) -> Option<u64> {
    let step = (hi - lo).div_ceil(chunks).max(1);
    let mut pending: VecDeque<(u64, u64)> = (0..chunks)
        .map(|i| (lo + i * step, (lo + (i + 1) * step).min(hi)))
        .filter(|(a, b)| a < b)
        .collect();
    let mut outstanding = 0usize;
    // The second slice waits in the worker's inbox while it counts the first.
    for _ in 0..SLICES_AHEAD {
        for worker in workers {
            if let Some(range) = pending.pop_front() {
                send_or_die(worker.clone(), &range);
                outstanding += 1;
            }
        }
    }
    let mut total = 0u64;
    while outstanding > 0 {
        match ipc::recv() {
            InboxItem::Message(msg) => {
                let Ok((_, _, count)) = msg.decode::<(u64, u64, u64)>() else {
                    eprintln!("coordinator: unexpected message from {}", msg.reply_to());
                    continue;
                };
                total += count;
                outstanding -= 1;
                if let Some(range) = pending.pop_front() {
                    send_or_die(msg.reply_to(), &range);
                    outstanding += 1;
                }
            }
            InboxItem::Undeliverable(notice) => {
                eprintln!(
                    "coordinator: worker {} unreachable: {}",
                    notice.to, notice.reason
                );
                return None;
            }
            InboxItem::Shutdown => std::process::exit(4),
            InboxItem::Down(_) => {}
        }
    }
    Some(total)
}

fn send_or_die<T: serde::Serialize>(to: Address, value: &T) {
    if let Err(err) = ipc::send_value(to, value) {
        eprintln!("coordinator: send failed: {err}");
        std::process::exit(5);
    }
}
