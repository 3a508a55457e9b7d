//! A prime-counting worker: every call is a range `(lo, hi)`; the reply is
//! how many primes are in `lo..hi` (a postcard `u64`). An empty message
//! asks it to stop (exit 0), as does `shutdown`.
//!
//! `primes --json` speaks JSON instead, as the Python and JavaScript
//! workers do: a call `[lo, hi]`, a reply `N`, or `{"error": "..."}` for a
//! request that is not a range.

use wasmproc_guest::{self as ipc, InboxItem, Message};

fn main() {
    let json = std::env::args().skip(1).any(|arg| arg == "--json");
    for item in ipc::inbox() {
        match item {
            InboxItem::Message(msg) if msg.payload.is_empty() => return,
            InboxItem::Message(msg) if json => answer_json(&msg),
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

/// Answer a JSON call: the count, or why the request is not a range.
fn answer_json(msg: &Message) {
    let answered = match msg.json::<(u64, u64)>() {
        Ok((lo, hi)) => msg.reply_json(&count_primes(lo, hi)),
        Err(_) => {
            let head = String::from_utf8_lossy(&msg.payload[..msg.payload.len().min(64)]);
            let error = format!("{} is not a range [lo, hi]", serde_json::json!(head));
            eprintln!("primes: {error}");
            msg.reply_json(&serde_json::json!({ "error": error }))
        }
    };
    if let Err(err) = answered {
        eprintln!("primes: answer failed: {}", err.describe());
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
