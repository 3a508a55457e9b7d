//! Splits a range over prime workers and sums their answers.
//!
//! `coordinator LO HI CHUNKS WORKER...`: counts the primes in `LO..HI` by
//! handing `CHUNKS` slices to the workers (each worker gets a new slice as
//! soon as it answers, so a fast worker does more), then sends the total to
//! the parent as a postcard `u64` and exits.

use std::collections::VecDeque;
use std::process::ExitCode;

use wasmproc_guest::{self as ipc, Address, InboxItem};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(lo), Some(hi), Some(chunks)) = (
        args.first().and_then(|a| a.parse::<u64>().ok()),
        args.get(1).and_then(|a| a.parse::<u64>().ok()),
        args.get(2).and_then(|a| a.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: coordinator LO HI CHUNKS WORKER...");
        return ExitCode::from(2);
    };
    let workers: Vec<Address> = args[3..].iter().map(|w| Address::parse(w)).collect();
    if workers.is_empty() || chunks == 0 || hi < lo {
        eprintln!("usage: coordinator LO HI CHUNKS WORKER... (at least one worker, one chunk)");
        return ExitCode::from(2);
    }

    let step = (hi - lo).div_ceil(chunks).max(1);
    let mut pending: VecDeque<(u64, u64)> = (0..chunks)
        .map(|i| (lo + i * step, (lo + (i + 1) * step).min(hi)))
        .filter(|(a, b)| a < b)
        .collect();
    let mut outstanding = 0usize;
    for worker in &workers {
        if let Some(range) = pending.pop_front() {
            send_or_die(worker.clone(), &range);
            outstanding += 1;
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
                return ExitCode::from(3);
            }
            InboxItem::Shutdown => return ExitCode::from(4),
            InboxItem::Down(_) => {}
        }
    }
    send_or_die(Address::Parent, &total);
    ExitCode::SUCCESS
}

fn send_or_die<T: serde::Serialize>(to: Address, value: &T) {
    if let Err(err) = ipc::send_value(to, value) {
        eprintln!("coordinator: send failed: {err}");
        std::process::exit(5);
    }
}
