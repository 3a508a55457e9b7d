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
//!
//! With `--json` the slices and answers are JSON (`[lo, hi]` → `N`), as
//! workers written in Python or JavaScript speak, and a worker's
//! `{"error": ...}` answer fails the count. `--by-worker` prints how many
//! slices each worker counted.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use wasmproc_guest::{self as ipc, Address, CallSet};

/// How slices and answers are encoded.
#[derive(Clone, Copy)]
enum Encoding {
    /// Between Rust guests.
    Postcard,
    /// With workers in any language.
    Json,
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut flag = |name: &str| {
        let found = args.iter().any(|a| a == name);
        args.retain(|a| a != name);
        found
    };
    let (compare, stop) = (flag("--compare"), flag("--stop"));
    let encoding = if flag("--json") {
        Encoding::Json
    } else {
        Encoding::Postcard
    };
    let by_worker = flag("--by-worker");
    let (Some(lo), Some(hi), Some(chunks)) = (
        args.first().and_then(|a| a.parse::<u64>().ok()),
        args.get(1).and_then(|a| a.parse::<u64>().ok()),
        args.get(2).and_then(|a| a.parse::<u64>().ok()),
    ) else {
        eprintln!(
            "usage: coordinator [--compare] [--stop] [--json] [--by-worker] LO HI CHUNKS WORKER..."
        );
        ipc::exit(2);
    };
    let workers: Vec<Address> = args[3..].iter().map(|w| Address::parse(w)).collect();
    if workers.is_empty() || chunks == 0 || hi < lo {
        eprintln!("usage: coordinator LO HI CHUNKS WORKER... (at least one worker, one chunk)");
        ipc::exit(2);
    }

    let job = Job {
        lo,
        hi,
        chunks,
        workers: &workers,
        encoding,
        by_worker,
    };
    let code = run(&job, compare);
    // Stop the workers whatever happened, so that the app ends either way.
    if stop {
        for worker in &workers {
            let _ = ipc::send(worker.clone(), &[]);
        }
    }
    match code {
        0 => ExitCode::SUCCESS,
        failed => ipc::exit(failed),
    }
}

/// What to count, with whom, and how.
struct Job<'a> {
    lo: u64,
    hi: u64,
    chunks: u64,
    workers: &'a [Address],
    encoding: Encoding,
    by_worker: bool,
}

/// Count (twice with `compare`), report, and send the total to the parent;
/// the exit code (3 when a count failed).
fn run(job: &Job, compare: bool) -> u8 {
    let (lo, hi, workers) = (job.lo, job.hi, job.workers);
    let total = if compare {
        let alone = Job {
            workers: &workers[..1],
            ..*job
        };
        let (Some(total), one) = timed(|| count(&alone)) else {
            return 3;
        };
        let (Some(again), all) = timed(|| count(job)) else {
            return 3;
        };
        if total != again {
            eprintln!("coordinator: one worker counted {total}, all counted {again}");
            return 3;
        }
        println!("primes in {lo}..{hi}: {total}");
        println!("1 worker:  {:>8.1} ms", ms(one));
        println!("{} workers: {:>8.1} ms", workers.len(), ms(all));
        println!("speedup:   {:>8.2}x", one.as_secs_f64() / all.as_secs_f64());
        total
    } else {
        match count(job) {
            Some(total) => total,
            None => return 3,
        }
    };
    if !compare {
        println!("primes in {lo}..{hi}: {total}");
    }
    send_or_die(Address::Parent, &total);
    0
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

/// Count the primes in `lo..hi` with the job's workers; `None` if a call failed.
fn count(job: &Job) -> Option<u64> {
    let (lo, hi) = (job.lo, job.hi);
    let step = (hi - lo).div_ceil(job.chunks).max(1);
    let mut slices = (0..job.chunks)
        .map(|i| (lo + i * step, (lo + (i + 1) * step).min(hi)))
        .filter(|(a, b)| a < b);
    // Each call is tagged with its worker's index; the second slice waits
    // in the worker's inbox while it counts the first.
    let mut calls = CallSet::new();
    let mut ask = |calls: &mut CallSet<usize>, worker: usize| {
        let Some(slice) = slices.next() else {
            return Ok(());
        };
        let to = job.workers[worker].clone();
        let started = match job.encoding {
            Encoding::Postcard => calls.start_value(to, &slice, SLICE_TIMEOUT, worker),
            Encoding::Json => calls.start_json(to, &slice, SLICE_TIMEOUT, worker),
        };
        started.inspect_err(|err| {
            eprintln!(
                "coordinator: cannot call {}: {}",
                job.workers[worker],
                err.describe()
            );
        })
    };
    for _ in 0..SLICES_AHEAD {
        for worker in 0..job.workers.len() {
            ask(&mut calls, worker).ok()?;
        }
    }
    let mut total = 0u64;
    let mut counted_by = vec![0u64; job.workers.len()];
    while let Some((worker, answer)) = calls.next() {
        let counted = answer
            .map_err(|err| err.describe())
            .and_then(|reply| decode(job.encoding, &reply));
        match counted {
            Ok(count) => total += count,
            Err(err) => {
                eprintln!("coordinator: worker {} failed: {err}", job.workers[worker]);
                return None;
            }
        }
        counted_by[worker] += 1;
        ask(&mut calls, worker).ok()?;
    }
    if job.by_worker {
        for (worker, slices) in job.workers.iter().zip(&counted_by) {
            println!("{worker}: {slices} slices");
        }
    }
    Some(total)
}

/// A worker's answer: a count, or why it is not one.
fn decode(encoding: Encoding, reply: &[u8]) -> Result<u64, String> {
    match encoding {
        Encoding::Postcard => ipc::decode::<u64>(reply).map_err(|e| e.to_string()),
        Encoding::Json => match ipc::decode_json::<serde_json::Value>(reply) {
            Ok(serde_json::Value::Number(n)) if n.is_u64() => Ok(n.as_u64().unwrap_or_default()),
            Ok(serde_json::Value::Object(map)) if map.contains_key("error") => {
                Err(format!("it answered: {}", map["error"]))
            }
            Ok(other) => Err(format!("it answered {other}, not a count")),
            Err(err) => Err(format!("its answer is not JSON: {err}")),
        },
    }
}

fn send_or_die<T: serde::Serialize>(to: Address, value: &T) {
    if let Err(err) = ipc::send_value(to, value) {
        eprintln!("coordinator: send failed: {err}");
        ipc::exit(5);
    }
}
