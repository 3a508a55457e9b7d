//! A test guest for calls, on either side of one.
//!
//! As a callee, `rpc serve MODE` answers each call it takes:
//! - `echo`: with the request's payload;
//! - `name`: with its own name;
//! - `late MS`: with the payload after MS milliseconds, then tells the
//!   parent what `reply` said (`reply: ok`, `reply: the call has expired`);
//! - `twice`: twice, and tells the parent both results;
//! - `never`: not at all (it tells the parent `took PAYLOAD`);
//! - `trap`: it tells the parent `took PAYLOAD`, then traps;
//! - `gather N`: takes N requests before answering any, then answers them
//!   newest first (a caller that does not keep N calls in flight waits
//!   for ever);
//! - `forge`: first replies to a request id it was never given and tells
//!   the parent the result, then answers with the payload.
//!
//! As a caller it tells the parent how its calls ended:
//! - `rpc call TARGET PAYLOAD TIMEOUT_MS [LISTEN_MS]`: one call: `ok REPLY`
//!   or `error: WHY`; with LISTEN_MS, it then waits that long for inbox
//!   items and tells `inbox: N items`;
//! - `rpc fan N TARGET`: N calls in flight at once, payloads `0` to `N-1`,
//!   then `matched M of N` (how many replies equal their request);
//! - `rpc poll TARGET PAYLOAD`: call TARGET every 50 ms until a call is
//!   answered (TARGET may not exist yet), then print `ok REPLY` on stdout.

use std::process::ExitCode;
use std::time::Duration;

use wasmproc_guest::{self as ipc, Address, CallSet, InboxItem, Message};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["serve", mode @ ..] => serve(mode),
        ["call", target, payload, timeout_ms, listen @ ..] => {
            let (Ok(ms), Ok(listen)) = (
                timeout_ms.parse(),
                listen.first().map_or(Ok(0), |l| l.parse::<u64>()),
            ) else {
                return usage();
            };
            let to = Address::parse(target);
            tell(
                &match ipc::call(to, payload.as_bytes(), Duration::from_millis(ms)) {
                    Ok(reply) => format!("ok {}", String::from_utf8_lossy(&reply)),
                    Err(error) => format!("error: {}", error.describe()),
                },
            );
            if listen > 0 {
                let until = std::time::Instant::now() + Duration::from_millis(listen);
                let mut items = 0;
                while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
                    if ipc::recv_timeout(left).is_some() {
                        items += 1;
                    }
                }
                tell(&format!("inbox: {items} items"));
            }
            ExitCode::SUCCESS
        }
        ["poll", target, payload] => {
            let to = Address::parse(target);
            loop {
                if let Ok(reply) = ipc::call(to.clone(), payload.as_bytes(), Duration::from_secs(5))
                {
                    println!("ok {}", String::from_utf8_lossy(&reply));
                    return ExitCode::SUCCESS;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        ["fan", n, target] => {
            let Ok(n) = n.parse::<u32>() else {
                return usage();
            };
            tell(&fan(n, &Address::parse(target)));
            ExitCode::SUCCESS
        }
        _ => usage(),
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: rpc serve echo|name|late MS|twice|never|trap|gather N|forge \
         | rpc call TARGET PAYLOAD TIMEOUT_MS [LISTEN_MS] | rpc fan N TARGET \
         | rpc poll TARGET PAYLOAD"
    );
    ExitCode::from(2)
}

/// Send `text` to the parent.
fn tell(text: &str) {
    let _ = ipc::send(Address::Parent, text.as_bytes());
}

fn outcome(result: Result<(), ipc::ReplyError>) -> String {
    match result {
        Ok(()) => "ok".to_owned(),
        Err(error) => error.describe().to_owned(),
    }
}

/// The next call this guest is asked; `None` at `shutdown`.
fn next_request() -> Option<Message> {
    for item in ipc::inbox() {
        match item {
            InboxItem::Message(msg) if msg.request.is_some() => return Some(msg),
            InboxItem::Shutdown => return None,
            _ => {}
        }
    }
    None
}

fn serve(mode: &[&str]) -> ExitCode {
    let gather = match mode {
        ["gather", n] => n.parse::<usize>().ok(),
        _ => None,
    };
    let mut gathered = Vec::new();
    while let Some(msg) = next_request() {
        let took = || tell(&format!("took {}", String::from_utf8_lossy(&msg.payload)));
        match mode {
            ["echo"] => {
                let _ = msg.reply(&msg.payload);
            }
            ["name"] => {
                let _ = msg.reply(ipc::self_name().unwrap_or_default().as_bytes());
            }
            ["late", ms] => {
                std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
                tell(&format!("reply: {}", outcome(msg.reply(&msg.payload))));
            }
            ["twice"] => {
                let first = outcome(msg.reply(b"first"));
                let second = outcome(msg.reply(b"second"));
                tell(&format!("first: {first}, second: {second}"));
            }
            ["never"] => took(),
            ["trap"] => {
                took();
                crash_mid_call();
            }
            ["forge"] => {
                let forged = msg.request.unwrap_or(0) + 1_000_000;
                tell(&format!(
                    "forged: {}",
                    outcome(ipc::reply(forged, b"from a forger"))
                ));
                let _ = msg.reply(&msg.payload);
            }
            ["gather", _] if gather.is_some() => {
                gathered.push(msg);
                if Some(gathered.len()) == gather {
                    for msg in gathered.drain(..).rev() {
                        let _ = msg.reply(&msg.payload);
                    }
                }
            }
            _ => return usage(),
        }
    }
    ExitCode::SUCCESS
}

#[inline(never)]
fn crash_mid_call() -> ! {
    core::arch::wasm32::unreachable()
}

/// Keep `n` calls to `to` in flight and count the replies that match.
fn fan(n: u32, to: &Address) -> String {
    let mut calls = CallSet::new();
    for i in 0..n {
        let payload = i.to_string();
        if let Err(error) = calls.start(to.clone(), payload.as_bytes(), Duration::from_secs(30), i)
        {
            return format!("call {i} did not start: {}", error.describe());
        }
    }
    let mut matched = 0;
    for (i, answer) in calls.by_ref() {
        match answer {
            Ok(reply) if reply == i.to_string().as_bytes() => matched += 1,
            Ok(reply) => {
                return format!("call {i} got the reply {}", String::from_utf8_lossy(&reply));
            }
            Err(error) => return format!("call {i} failed: {}", error.describe()),
        }
    }
    format!("matched {matched} of {n}")
}
