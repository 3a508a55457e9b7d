//! Splits a range over prime workers and sums their answers.
//!
//! `coordinator [--compare] [--stop] LO HI CHUNKS WORKER...` counts the
//! primes in `LO..HI` by calling the workers with `CHUNKS` slices, then
//! sends the total to the parent as a postcard `u64`. Each worker has two
//! calls in flight at a time and gets a new one as soon as it answers: it
//! never waits for work, and a fast worker does more. A worker that ends
//! mid-slice fails its call at once, with the reason.
//!
//! With `--compare` it counts twice, first with the first worker alone and
//! then with all of them, and prints the total, both times and the speedup.
//! With `--stop` it then sends each worker an empty message (stop) so that
//! the whole app ends, also when counting failed.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use wasmproc_guest::{self as ipc, Address, CallSet};

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

/// The longest one slice may take.
const SLICE_TIMEOUT: Duration = Duration::from_secs(60);

/// Count the primes in `lo..hi` with `workers`; `None` if a call failed.
fn count(lo: u64, hi: u64, chunks: u64, workers: &[Address]) -> Option<u64> {
    let step = (hi - lo).div_ceil(chunks).max(1);
    let mut slices = (0..chunks)
        .map(|i| (lo + i * step, (lo + (i + 1) * step).min(hi)))
        .filter(|(a, b)| a < b);
    // Each call is tagged with its worker; the second slice waits in the
    // worker's inbox while it counts the first.
    let mut calls = CallSet::new();
    let mut ask = |calls: &mut CallSet<Address>, worker: &Address| match slices.next() {
        Some(slice) => calls.start_value(worker.clone(), &slice, SLICE_TIMEOUT, worker.clone()),
        None => Ok(()),
    };
    for _ in 0..SLICES_AHEAD {
        for worker in workers {
            ask(&mut calls, worker).ok()?;
        }
    }
    let mut total = 0u64;
    while let Some((worker, answer)) = calls.next() {
        let counted = answer
            .map_err(|err| err.describe())
            .and_then(|reply| ipc::decode::<u64>(&reply).map_err(|e| e.to_string()));
        match counted {
            Ok(count) => total += count,
            Err(err) => {
                eprintln!("coordinator: worker {worker} failed: {err}");
                return None;
            }
        }
        ask(&mut calls, &worker).ok()?;
    }
    Some(total)
}

fn send_or_die<T: serde::Serialize>(to: Address, value: &T) {
    if let Err(err) = ipc::send_value(to, value) {
        eprintln!("coordinator: send failed: {err}");
        std::process::exit(5);
    }
}
