//! Sends `hi` to every address on its command line, then tells the parent,
//! one text message per address, what became of it:
//! `ADDRESS: reply` when the recipient answered, or
//! `ADDRESS: REASON` when the host sent it back as undeliverable.
//!
//! Addresses are read by `Address::parse`: a number is a guest id,
//! `group:G` a group, `all:G` a broadcast, anything else a name. An
//! argument `monitor:NAME` sends nothing but monitors NAME; what arrives for
//! it is reported as `down NAME: REASON`. An argument `expect:N` makes it
//! wait for N items in all instead of one per address (a broadcast's
//! members each answer).

use wasmproc_guest::{self as ipc, Address, InboxItem};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let expect: Option<usize> = args
        .iter()
        .find_map(|a| a.strip_prefix("expect:").and_then(|n| n.parse().ok()));
    args.retain(|a| !a.starts_with("expect:"));
    let (watch, send): (Vec<&String>, Vec<&String>) =
        args.iter().partition(|a| a.starts_with("monitor:"));
    for name in &watch {
        ipc::monitor(&name["monitor:".len()..]);
    }
    let targets: Vec<Address> = send.iter().map(|a| Address::parse(a)).collect();
    for target in &targets {
        if let Err(err) = ipc::send(target.clone(), b"hi") {
            report(&format!("{target}: send failed: {err}"));
        }
    }
    for _ in 0..expect.unwrap_or(targets.len() + watch.len()) {
        let line = match ipc::recv() {
            InboxItem::Message(msg) => {
                let from = msg
                    .from_name
                    .clone()
                    .unwrap_or_else(|| msg.reply_to().to_string());
                format!("{from}: reply")
            }
            InboxItem::Undeliverable(notice) => format!("{}: {}", notice.to, notice.reason),
            InboxItem::Down(down) => format!(
                "down {}: {}",
                down.name.unwrap_or_else(|| down.id.to_string()),
                down.reason
            ),
            InboxItem::Shutdown => return,
        };
        report(&line);
    }
}

fn report(line: &str) {
    if let Err(err) = ipc::send(Address::Parent, line.as_bytes()) {
        eprintln!("postman: cannot report `{line}`: {err}");
    }
}
