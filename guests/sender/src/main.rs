//! Sends numbered messages and accounts for each one, for delivery tests:
//!
//! `sender PREFIX RECEIVERS COUNT WINDOW` sends the numbers `0..COUNT`
//! (4 bytes, little-endian) to the guests named `PREFIX0` ..
//! `PREFIX{RECEIVERS-1}` in turn, with at most WINDOW without an outcome.
//! Each message must come back exactly once: echoed by a receiver that took
//! it, or as an `undeliverable` notice. When all have (and nothing more came
//! within 300 ms: a further item would be a second outcome, counted as a
//! duplicate), it prints
//! `taken T returned R duplicates D disorders O` (a disorder: a receiver
//! instance echoed a number lower than one it echoed before) and exits 0.
//! After 30 s without hearing anything it says on stderr which messages are
//! still out, and goes on waiting.

use std::collections::HashMap;
use std::time::Duration;

use wasmproc_guest::{self as ipc, Address, InboxItem};

/// How long the sender waits without hearing anything before it says
/// which messages are still out (and goes on waiting).
const QUIET: Duration = Duration::from_secs(30);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let prefix = args.first().cloned().unwrap_or_else(|| "r".to_owned());
    let receivers: u32 = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(1);
    let count: u32 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(1000);
    let window: u32 = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(100);

    let mut echoed = vec![false; count as usize];
    let mut last_from: HashMap<u64, u32> = HashMap::new();
    let (mut taken, mut returned, mut duplicates, mut disorders) = (0u32, 0u32, 0u32, 0u32);
    let mut next = 0u32;
    while taken + returned < count {
        while next < count && next - (taken + returned) < window {
            let to = Address::Name(format!("{prefix}{}", next % receivers));
            if ipc::send(to, &next.to_le_bytes()).is_err() {
                // Refused at once (the host is gone): it has its outcome.
                returned += 1;
            }
            next += 1;
        }
        let Some(item) = ipc::recv_timeout(QUIET) else {
            // Nothing for a long while, with messages still out: say which,
            // so that a test that hangs names what has no outcome.
            let open: Vec<String> = (0..next)
                .filter(|&n| !echoed[n as usize])
                .take(8)
                .map(|n| n.to_string())
                .collect();
            eprintln!(
                "sender: nothing came for {} s, {} of {next} sent without an echo \
                 ({returned} returned); the first not echoed: {}",
                QUIET.as_secs(),
                next - taken,
                open.join(" ")
            );
            continue;
        };
        match item {
            InboxItem::Message(msg) if msg.payload.len() == 4 => {
                let n = u32::from_le_bytes([
                    msg.payload[0],
                    msg.payload[1],
                    msg.payload[2],
                    msg.payload[3],
                ]);
                let Some(seen) = echoed.get_mut(n as usize) else {
                    continue;
                };
                if *seen {
                    duplicates += 1;
                    continue;
                }
                *seen = true;
                taken += 1;
                let last = last_from.entry(msg.from_id).or_insert(n);
                if n < *last {
                    disorders += 1;
                }
                *last = n;
            }
            InboxItem::Undeliverable(_) => returned += 1,
            InboxItem::Shutdown => break,
            _ => {}
        }
    }
    // Every message has had one outcome: anything more that comes is a
    // second outcome for one of them.
    while let Some(item) = ipc::recv_timeout(Duration::from_millis(300)) {
        if matches!(item, InboxItem::Message(_) | InboxItem::Undeliverable(_)) {
            duplicates += 1;
        }
    }
    println!("taken {taken} returned {returned} duplicates {duplicates} disorders {disorders}");
    let _ = ipc::send(
        Address::Parent,
        format!("{taken} {returned} {duplicates} {disorders}").as_bytes(),
    );
}
