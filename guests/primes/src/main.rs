//! A prime-counting worker: every call is a range `(lo, hi)`; the reply is
//! how many primes are in `lo..hi` (a postcard `u64`). An empty message
//! asks it to stop (exit 0), as does `shutdown`.

use wasmproc_guest::{self as ipc, InboxItem};

fn main() {
    for item in ipc::inbox() {
        match item {
            InboxItem::Message(msg) if msg.payload.is_empty() => return,
            InboxItem::Message(msg) => match msg.into_request::<(u64, u64)>() {
                Ok(request) => {
                    let (lo, hi) = request.value;
                    if let Err(err) = request.reply_value(&count_primes(lo, hi)) {
                        eprintln!("primes: answer to {lo}..{hi} failed: {err}");
                    }
                }
                Err(err) => eprintln!("primes: {err}"),
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
