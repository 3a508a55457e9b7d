//! Two guests exchange numbered messages through the relay and check order.
//!
//! - `pingpong ping PEER N`: N round trips with PEER (a `pong`): send number
//!   i, wait for i back.
//! - `pingpong pong N`: answer N messages with the same bytes, checking that
//!   the numbers arrive as 0, 1, 2, ...
//! - `pingpong stream PEER N [SIZE]`: send N numbered messages of SIZE bytes
//!   (default 8) to PEER (a `sink`) without waiting, then wait for its answer.
//! - `pingpong sink N`: receive N messages, checking the numbers, then
//!   answer the sender.
//! - `pingpong count N`: like `sink`, without checking the numbers (for a
//!   group member, which sees every n-th message).
//! - `pingpong call PEER N`: N calls to PEER (a `serve`): call with number
//!   i, expect i back as the reply.
//! - `pingpong serve N`: answer N calls with their own bytes, checking that
//!   the numbers arrive as 0, 1, 2, ...
//! - `pingpong take VERSION`: take numbered messages until `shutdown`, then
//!   send the parent `(VERSION, first, last, count, in_order, first_ns,
//!   last_ns)` (one version of a guest that is swapped; `first` is
//!   `u64::MAX` if none came; the times are when it took its first and last
//!   message, in nanoseconds since the Unix epoch).
//! - `pingpong flood PEER N`: send N numbered messages to PEER, 500 per
//!   millisecond, then tell the parent `(N, 0)` and count the undeliverable
//!   notices that come back until the parent sends anything: then send it
//!   `(N, undeliverable)`.
//!
//! Every mode ends by sending `(count, in_order)` to the parent as postcard
//! and exits 0 when all arrived in order, 1 otherwise. A peer is an address
//! as `Address::parse` reads it: a number is a guest id, else a name.

use std::time::Duration;

use wasmproc_guest::{self as ipc, Address, InboxItem, Message};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> u64 {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| usage())
    };
    let (count, in_order) = match args.first().map(String::as_str) {
        Some("ping") => ping(
            Address::parse(args.get(1).unwrap_or_else(|| usage())),
            num(2),
        ),
        Some("pong") => pong(num(1)),
        Some("stream") => {
            let size = if args.len() > 3 { num(3) as usize } else { 8 };
            stream(
                Address::parse(args.get(1).unwrap_or_else(|| usage())),
                num(2),
                size,
            )
        }
        Some("sink") => sink(num(1), true),
        Some("count") => sink(num(1), false),
        Some("call") => call(
            Address::parse(args.get(1).unwrap_or_else(|| usage())),
            num(2),
        ),
        Some("serve") => serve(num(1)),
        Some("take") => take(num(1)),
        Some("flood") => flood(
            Address::parse(args.get(1).unwrap_or_else(|| usage())),
            num(2),
        ),
        _ => usage(),
    };
    if let Err(err) = ipc::send_value(Address::Parent, &(count, in_order)) {
        eprintln!("pingpong: report failed: {err}");
    }
    std::process::exit(if in_order { 0 } else { 1 });
}

fn usage() -> ! {
    eprintln!(
        "usage: pingpong ping PEER N | pong N | stream PEER N [SIZE] | sink N | count N \
         | call PEER N | serve N | take VERSION | flood PEER N"
    );
    std::process::exit(2)
}

fn numbered(i: u64, size: usize) -> Vec<u8> {
    let mut payload = i.to_le_bytes().to_vec();
    payload.resize(size.max(8), 0xab);
    payload
}

fn number_of(msg: &Message) -> Option<u64> {
    Some(u64::from_le_bytes(msg.payload.get(..8)?.try_into().ok()?))
}

/// The next message, or `None` after reporting anything else.
fn next_message() -> Option<Message> {
    match ipc::recv() {
        InboxItem::Message(msg) => Some(msg),
        InboxItem::Undeliverable(n) => {
            eprintln!("pingpong: message to {} undeliverable: {}", n.to, n.reason);
            None
        }
        other => {
            eprintln!("pingpong: unexpected {other:?}");
            None
        }
    }
}

fn ping(peer: Address, n: u64) -> (u64, bool) {
    for i in 0..n {
        if ipc::send(peer.clone(), &numbered(i, 8)).is_err() {
            return (i, false);
        }
        match next_message() {
            Some(msg) if number_of(&msg) == Some(i) => {}
            _ => return (i, false),
        }
    }
    (n, true)
}

fn pong(n: u64) -> (u64, bool) {
    for i in 0..n {
        let Some(msg) = next_message() else {
            return (i, false);
        };
        if ipc::send(msg.reply_to(), &msg.payload).is_err() || number_of(&msg) != Some(i) {
            return (i, false);
        }
    }
    (n, true)
}

/// The longest one call of the benchmark may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

fn call(peer: Address, n: u64) -> (u64, bool) {
    for i in 0..n {
        match ipc::call(peer.clone(), &numbered(i, 8), CALL_TIMEOUT) {
            Ok(reply) if reply == numbered(i, 8) => {}
            Ok(_) => return (i, false),
            Err(err) => {
                eprintln!("pingpong: call {i} failed: {}", err.describe());
                return (i, false);
            }
        }
    }
    (n, true)
}

fn serve(n: u64) -> (u64, bool) {
    for i in 0..n {
        let Some(msg) = next_message() else {
            return (i, false);
        };
        if msg.reply(&msg.payload).is_err() || number_of(&msg) != Some(i) {
            return (i, false);
        }
    }
    (n, true)
}

fn take(version: u64) -> ! {
    let (mut first, mut last, mut count, mut in_order) = (u64::MAX, 0u64, 0u64, true);
    let (mut first_ns, mut last_ns) = (0u64, 0u64);
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    };
    for item in ipc::inbox() {
        match item {
            InboxItem::Message(msg) => {
                let Some(n) = number_of(&msg) else { continue };
                last_ns = now();
                if count == 0 {
                    first = n;
                    first_ns = last_ns;
                } else {
                    in_order &= n == last + 1;
                }
                last = n;
                count += 1;
            }
            InboxItem::Shutdown => break,
            _ => {}
        }
    }
    let report = (version, first, last, count, in_order, first_ns, last_ns);
    let _ = ipc::send_value(Address::Parent, &report);
    std::process::exit(0)
}

fn flood(peer: Address, n: u64) -> ! {
    let mut undeliverable = 0u64;
    let mut count = |item: Option<InboxItem>| {
        if let Some(InboxItem::Undeliverable(_)) = item {
            undeliverable += 1;
        }
    };
    for i in 0..n {
        if ipc::send(peer.clone(), &numbered(i, 8)).is_err() {
            std::process::exit(1);
        }
        if i % 500 == 499 {
            std::thread::sleep(Duration::from_millis(1));
            while let Some(item) = ipc::try_recv() {
                count(Some(item));
            }
        }
    }
    let _ = ipc::send_value(Address::Parent, &(n, 0u64));
    loop {
        match ipc::recv() {
            InboxItem::Message(msg) if msg.from_id == ipc::PARENT_ID => break,
            item => count(Some(item)),
        }
    }
    let _ = ipc::send_value(Address::Parent, &(n, undeliverable));
    std::process::exit(0)
}

fn stream(peer: Address, n: u64, size: usize) -> (u64, bool) {
    // One buffer, renumbered in place for each message: a producer with its
    // data at hand, as the raw floor's.
    let mut payload = numbered(0, size);
    for i in 0..n {
        payload[..8].copy_from_slice(&i.to_le_bytes());
        if let Err(err) = ipc::send(peer.clone(), &payload) {
            eprintln!("pingpong: send {i} failed: {err}");
            return (i, false);
        }
    }
    match next_message() {
        Some(msg) => msg.decode::<(u64, bool)>().unwrap_or((0, false)),
        None => (n, false),
    }
}

fn sink(n: u64, check_order: bool) -> (u64, bool) {
    let mut in_order = true;
    let mut last_sender = None;
    for i in 0..n {
        let Some(msg) = next_message() else {
            return (i, false);
        };
        in_order &= !check_order || number_of(&msg) == Some(i);
        last_sender = Some(msg.reply_to());
    }
    if let Some(sender) = last_sender {
        let _ = ipc::send_value(sender, &(n, in_order));
    }
    (n, in_order)
}
