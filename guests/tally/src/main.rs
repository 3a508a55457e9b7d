//! Numbered messages whose every outcome is written down, for the tests of
//! delivery across hosts:
//!
//! - `tally send TO COUNT PAUSE_US FILE [PAD]` sends the numbers
//!   `1..=COUNT` to the guest named TO, one every PAUSE_US microseconds.
//!   Message K is `K + 3 + PAD` bytes long (K, little-endian, then zeros),
//!   so the length in an `undeliverable` notice names the message: each
//!   notice is written to FILE as `K REASON`. Once all are sent and no notice has come for 8 s,
//!   it prints `tally sent N echoed E returned R (unknown outcome U)` (E:
//!   echoes of its messages, from the recipient) and goes on listening
//!   until `shutdown`.
//! - `tally take PAUSE_US FILE [shared]` takes messages, writes each one's
//!   number to FILE, then echoes it to its sender (that frame tells the
//!   host the message was taken) and waits PAUSE_US: a slow recipient.
//!   With `shared`, FILE is appended to and each line is `RUN K SENDER`
//!   (RUN: this instance's start time in nanoseconds; SENDER: the sender's
//!   name), so that the two instances of a guest that moved, the old one
//!   draining and the new one, can write one file and be told apart.
//!
//! The sender first waits until TO is reachable (monitoring it: a guest on
//! another host is known once that host's beat has named it).
//!
//! FILE is written line by line, unbuffered: what a line says happened
//! has happened, even if the host is killed the moment after.

use std::fs::File;
use std::io::Write;
use std::time::{Duration, Instant};

use wasmproc_guest::{self as ipc, Address, InboxItem, UndeliverableReason};

/// How long the sender waits for more notices once all are sent: longer
/// than a host waits for an ack (5 s) before it calls the outcome unknown.
const QUIET: Duration = Duration::from_secs(8);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    let number = |i: usize| arg(i).parse::<u64>().unwrap_or(0);
    let result = match arg(0) {
        "send" => send(arg(1), number(2), pause(number(3)), arg(4), number(5)),
        "take" => take(pause(number(1)), arg(2), arg(3) == "shared"),
        other => {
            eprintln!("tally: `{other}` is not `send` or `take`");
            ipc::exit(2)
        }
    };
    if let Err(err) = result {
        eprintln!("tally: {err}");
        ipc::exit(1)
    }
}

fn pause(us: u64) -> Duration {
    Duration::from_micros(us)
}

/// Wait until the guest called `to` is alive (and watch it from then on).
fn wait_for(to: &str) {
    loop {
        ipc::monitor(to);
        match ipc::recv_timeout(Duration::from_millis(200)) {
            Some(InboxItem::Down(_)) => std::thread::sleep(Duration::from_millis(200)),
            Some(InboxItem::Shutdown) => std::process::exit(0),
            _ => return,
        }
    }
}

/// What came back to the sender so far.
#[derive(Default)]
struct Counts {
    /// The bytes each message has beyond its number's own length.
    pad: u64,
    echoed: u64,
    returned: u64,
    unknown: u64,
}

impl Counts {
    /// Note `item`; whether it was a notice.
    fn note(&mut self, item: InboxItem, out: &mut File) -> std::io::Result<bool> {
        match item {
            InboxItem::Undeliverable(u) => {
                let k = u.payload_len.saturating_sub(3 + self.pad);
                writeln!(out, "{k} {}", u.reason)?;
                self.returned += 1;
                if matches!(u.reason, UndeliverableReason::UnknownOutcome) {
                    self.unknown += 1;
                }
                Ok(true)
            }
            InboxItem::Message(_) => {
                self.echoed += 1;
                Ok(false)
            }
            InboxItem::Shutdown => std::process::exit(0),
            InboxItem::Down(_) => Ok(false),
        }
    }
}

fn send(to: &str, count: u64, pause: Duration, file: &str, pad: u64) -> std::io::Result<()> {
    let mut out = File::create(file)?;
    wait_for(to);
    let mut counts = Counts {
        pad,
        ..Counts::default()
    };
    for k in 1..=count {
        let mut payload = vec![0u8; (k + 3 + pad) as usize];
        payload[..4].copy_from_slice(&(k as u32).to_le_bytes());
        if let Err(err) = ipc::send(Address::Name(to.to_owned()), &payload) {
            writeln!(out, "{k} refused: {err:?}")?;
            counts.returned += 1;
        }
        while let Some(item) = ipc::try_recv() {
            counts.note(item, &mut out)?;
        }
        std::thread::sleep(pause);
    }
    let mut last = Instant::now();
    while last.elapsed() < QUIET {
        if let Some(item) = ipc::recv_timeout(QUIET.saturating_sub(last.elapsed()))
            && counts.note(item, &mut out)?
        {
            last = Instant::now();
        }
    }
    let Counts {
        echoed,
        returned,
        unknown,
        ..
    } = counts;
    println!("tally sent {count} echoed {echoed} returned {returned} (unknown outcome {unknown})");
    loop {
        if let InboxItem::Shutdown = ipc::recv() {
            return Ok(());
        }
    }
}

fn take(pause: Duration, file: &str, shared: bool) -> std::io::Result<()> {
    let mut out = if shared {
        File::options().create(true).append(true).open(file)?
    } else {
        File::create(file)?
    };
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    loop {
        match ipc::recv() {
            InboxItem::Message(msg) if msg.payload.len() >= 4 => {
                let k = u32::from_le_bytes([
                    msg.payload[0],
                    msg.payload[1],
                    msg.payload[2],
                    msg.payload[3],
                ]);
                if shared {
                    // One write per line: the other instance appends too.
                    let sender = msg.from_name.as_deref().unwrap_or("-");
                    out.write_all(format!("{run} {k} {sender}\n").as_bytes())?;
                } else {
                    writeln!(out, "{k}")?;
                }
                if let Err(err) = ipc::send(msg.reply_to(), &msg.payload[..4]) {
                    eprintln!(
                        "tally: the echo of {k} to {} was refused: {err:?}",
                        msg.from_id
                    );
                }
                std::thread::sleep(pause);
            }
            // An echo that could not be delivered: said, so that a test
            // that counts echoes can tell why one is missing.
            InboxItem::Undeliverable(u) => {
                eprintln!("tally: an echo to {:?} came back: {}", u.to, u.reason);
            }
            InboxItem::Shutdown => return Ok(()),
            _ => {}
        }
    }
}
