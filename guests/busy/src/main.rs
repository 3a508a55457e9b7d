//! Computes without waiting, to show that a computing guest still talks:
//!
//! - `busy send`: sends `before` to the parent, then computes forever
//!   without calling the host again (so the message can only leave while
//!   it computes);
//! - `busy poll`: computes in slices of about a millisecond, looking at its
//!   inbox with `try_recv` between slices and never waiting on it; it
//!   answers each message with the same bytes, and exits 0 at `stop`;
//! - `busy take N`: takes N messages without answering any, prints
//!   `took N` on stdout, then computes forever (it never sends, and never
//!   waits on its inbox again).

use std::hint::black_box;

use wasmproc_guest::{self as ipc, Address, InboxItem};

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("send") => {
            if let Err(err) = ipc::send(Address::Parent, b"before") {
                eprintln!("busy: send failed: {err}");
                std::process::exit(1);
            }
            let mut x = 1u64;
            loop {
                x = compute(x);
            }
        }
        Some("poll") => {
            let mut x = 1u64;
            loop {
                x = compute(x);
                match ipc::try_recv() {
                    Some(InboxItem::Message(msg)) if msg.payload == b"stop" => return,
                    Some(InboxItem::Message(msg)) => {
                        if let Err(err) = ipc::send(msg.reply_to(), &msg.payload) {
                            eprintln!("busy: reply failed: {err}");
                        }
                    }
                    Some(InboxItem::Shutdown) => return,
                    Some(_) | None => {}
                }
            }
        }
        Some("take") => {
            let n: usize = std::env::args()
                .nth(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            let mut took = 0;
            while took < n {
                if let InboxItem::Message(_) = ipc::recv() {
                    took += 1;
                }
            }
            println!("took {took}");
            let mut x = 1u64;
            loop {
                x = compute(x);
            }
        }
        other => {
            eprintln!("usage: busy send|poll|take N (got {other:?})");
            std::process::exit(2);
        }
    }
}

/// About a millisecond of arithmetic that the compiler cannot skip.
fn compute(mut x: u64) -> u64 {
    for i in 0..200_000u64 {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}
