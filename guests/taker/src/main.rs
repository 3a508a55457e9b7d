//! Takes messages and echoes each back to its sender, then ends as told:
//!
//! `taker N exit|trap|hang [PAUSE_US]`: after taking N messages (`all`: no
//! limit), exit with code 0, trap, or sleep without ever reading again.
//! With PAUSE_US it waits that long after each message, so that a test can
//! kill or stop it in the middle of a stream. A message `trap` (from
//! anyone) makes it trap at once.

use std::time::Duration;

use wasmproc_guest::{self as ipc, InboxItem};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let limit: Option<u64> = args.first().and_then(|n| n.parse().ok());
    let end = args.get(1).map(String::as_str).unwrap_or("exit");
    let pause = args
        .get(2)
        .and_then(|us| us.parse().ok())
        .map(Duration::from_micros);
    let mut taken = 0u64;
    while limit.is_none_or(|n| taken < n) {
        match ipc::recv() {
            InboxItem::Message(msg) if msg.payload == b"trap" => trap_on_purpose(),
            InboxItem::Message(msg) => {
                taken += 1;
                if let Err(err) = ipc::send(msg.reply_to(), &msg.payload) {
                    eprintln!("taker: echo failed: {err}");
                }
                if let Some(pause) = pause {
                    std::thread::sleep(pause);
                }
            }
            InboxItem::Shutdown => return,
            _ => {}
        }
    }
    match end {
        "trap" => trap_on_purpose(),
        "hang" => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        _ => {}
    }
}

#[inline(never)]
fn trap_on_purpose() -> ! {
    core::arch::wasm32::unreachable()
}
