//! Ends badly on purpose, as its first argument says:
//!
//! - `trap`: executes `unreachable` inside `crash_on_purpose`;
//! - `exit N`: exits with code N;
//! - `stderr TEXT`: writes TEXT to stdout and `err:TEXT` to stderr, exits 0;
//! - `wait`: waits for one message, answers it, then traps;
//! - `idle`: sleeps forever and never reads its inbox;
//! - `big MB [TIMES]`: tries to send the parent a message of MB mebibytes
//!   (TIMES times, default once) and prints what each `send` said;
//! - `unknown N`: sends to N guest ids nobody has, then counts the
//!   undeliverable notices that come back and prints `N notices: REASON`;
//! - `flood [NAME]`: monitors NAME if given, then sends to guest ids nobody
//!   has, forever, and never reads its inbox (whose notices pile up);
//! - `longline N`: prints a line of N `x`, then `line 0` to `line 9`;
//! - `longname MB N`: sends N messages to a name of MB mebibytes, then
//!   prints `N notices: REASON, name of LEN bytes` for what came back, then
//!   `waiting`, and exits at the next message (so its runner can be
//!   measured while it holds what it got);
//! - `monitor NAME N`: monitors NAME N times, then prints `monitored N times`;
//! - `names N KIB`: sends one message to each of N distinct names of KIB
//!   kibibytes, reading the notices as they come, then prints
//!   `N notices: REASON` for each reason.

use wasmproc_guest::{self as ipc, InboxItem};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("trap") => crash_on_purpose(),
        Some("exit") => {
            let code = args.get(1).and_then(|c| c.parse().ok()).unwrap_or(1);
            std::process::exit(code);
        }
        Some("stderr") => {
            let text = args.get(1).cloned().unwrap_or_default();
            print!("{text}");
            eprint!("err:{text}");
        }
        Some("wait") => {
            if let InboxItem::Message(msg) = ipc::recv() {
                let _ = ipc::send(msg.reply_to(), b"about to trap");
            }
            crash_on_purpose();
        }
        Some("big") => {
            let mb: usize = args.get(1).and_then(|m| m.parse().ok()).unwrap_or(1024);
            let times: usize = args.get(2).and_then(|t| t.parse().ok()).unwrap_or(1);
            let payload = vec![7u8; mb * 1024 * 1024];
            for _ in 0..times {
                match ipc::send(ipc::Address::Parent, &payload) {
                    Ok(()) => println!("send: ok"),
                    Err(err) => println!("send: {err:?}"),
                }
            }
        }
        Some("unknown") => {
            let n: usize = args.get(1).and_then(|m| m.parse().ok()).unwrap_or(1000);
            let base = 1u64 << 40;
            send_and_count(n, |i| ipc::Address::Id(base + i as u64));
        }
        Some("flood") => {
            if let Some(name) = args.get(1) {
                ipc::monitor(name);
            }
            let base = 1u64 << 40;
            for i in 0.. {
                ipc::send(ipc::Address::Id(base + i), b"x").expect("send");
            }
        }
        Some("longname") => {
            let mb: usize = args.get(1).and_then(|m| m.parse().ok()).unwrap_or(1);
            let n: usize = args.get(2).and_then(|m| m.parse().ok()).unwrap_or(1);
            let name = "x".repeat(mb * 1024 * 1024);
            for _ in 0..n {
                ipc::send(ipc::Address::Name(name.clone()), b"x").expect("send");
            }
            let mut seen = std::collections::BTreeMap::new();
            for _ in 0..n {
                if let InboxItem::Undeliverable(notice) = ipc::recv() {
                    let len = match &notice.to {
                        ipc::Address::Name(name) => name.len(),
                        _ => 0,
                    };
                    *seen.entry((notice.reason.to_string(), len)).or_insert(0u64) += 1;
                }
            }
            for ((reason, len), count) in seen {
                println!("{count} notices: {reason}, name of {len} bytes");
            }
            println!("waiting");
            let _ = ipc::recv();
        }
        Some("monitor") => {
            let name = args.get(1).cloned().unwrap_or_default();
            let n: usize = args.get(2).and_then(|m| m.parse().ok()).unwrap_or(1);
            for _ in 0..n {
                ipc::monitor(&name);
            }
            println!("monitored {n} times");
        }
        Some("names") => {
            let n: usize = args.get(1).and_then(|m| m.parse().ok()).unwrap_or(1);
            let kib: usize = args.get(2).and_then(|m| m.parse().ok()).unwrap_or(1);
            let padding = "x".repeat((kib * 1024).saturating_sub(8));
            send_and_count(n, |i| ipc::Address::Name(format!("{i:08}{padding}")));
        }
        Some("longline") => {
            let n: usize = args.get(1).and_then(|m| m.parse().ok()).unwrap_or(1 << 17);
            println!("{}", "x".repeat(n));
            for i in 0..10 {
                println!("line {i}");
            }
        }
        Some("idle") => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        other => {
            eprintln!("crasher: unknown mode {other:?}");
            std::process::exit(2);
        }
    }
}

/// Send one message to each of `n` addresses nobody has, reading the
/// notices as they come (a guest that floods and never reads its own inbox
/// is slowed down by the host until it does), then print
/// `COUNT notices: REASON` for each reason.
fn send_and_count(n: usize, address: impl Fn(usize) -> ipc::Address) {
    let mut reasons = std::collections::BTreeMap::new();
    let mut count = |item| {
        if let InboxItem::Undeliverable(notice) = item {
            *reasons.entry(notice.reason.to_string()).or_insert(0u64) += 1;
        }
    };
    let mut seen = 0;
    for i in 0..n {
        ipc::send(address(i), b"x").expect("send");
        while let Some(item) = ipc::try_recv() {
            count(item);
            seen += 1;
        }
    }
    while seen < n {
        count(ipc::recv());
        seen += 1;
    }
    for (reason, count) in reasons {
        println!("{count} notices: {reason}");
    }
}

#[inline(never)]
fn crash_on_purpose() -> ! {
    core::arch::wasm32::unreachable()
}
