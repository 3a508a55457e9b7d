//! A prime-counting worker: every message is a range `(lo, hi)`; the answer,
//! sent back to the sender, is `(lo, hi, count)`: how many primes are in
//! `lo..hi`. An empty message asks it to stop (exit 0), as does `shutdown`.

use wasmproc_guest::{self as ipc, InboxItem};

fn main() {
    for item in ipc::inbox() {
        match item {
            InboxItem::Message(msg) if msg.payload.is_empty() => return,
            InboxItem::Message(msg) => match msg.decode::<(u64, u64)>() {
                Ok((lo, hi)) => {
                    let count = count_primes(lo, hi);
                    if let Err(err) = ipc::send_value(msg.reply_to(), &(lo, hi, count)) {
                        eprintln!("primes: answer failed: {err}");
                    }
                }
                Err(err) => eprintln!("primes: not a range from {}: {err}", msg.reply_to()),
            },
            InboxItem::Shutdown => return,
            _ => {}
        }
    }
}

/// Count the primes in `lo..hi` by trial division: the CPU-bound kernel.
fn count_primes(lo: u64, hi: u64) -> u64 {
    (lo..hi).filter(|&n| is_prime(n)).count() as u64
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}
