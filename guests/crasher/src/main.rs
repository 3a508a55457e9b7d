//! Ends badly on purpose, as its first argument says:
//!
//! - `trap`: executes `unreachable` inside `crash_on_purpose`;
//! - `exit N`: exits with code N;
//! - `stderr TEXT`: writes TEXT to stdout and `err:TEXT` to stderr, exits 0;
//! - `wait`: waits for one message, answers it, then traps;
//! - `idle`: sleeps forever and never reads its inbox.

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
        Some("idle") => loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        },
        other => {
            eprintln!("crasher: unknown mode {other:?}");
            std::process::exit(2);
        }
    }
}

#[inline(never)]
fn crash_on_purpose() -> ! {
    core::arch::wasm32::unreachable()
}
