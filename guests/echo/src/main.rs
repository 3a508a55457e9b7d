//! Answers every message with the same bytes, to whoever sent it, until it
//! is asked to shut down.

use wasmproc_guest::{self as ipc, InboxItem};

fn main() {
    for item in ipc::inbox() {
        match item {
            InboxItem::Message(msg) => {
                if let Err(err) = ipc::send(msg.reply_to(), &msg.payload) {
                    eprintln!("echo: reply failed: {err}");
                }
            }
            InboxItem::Shutdown => return,
            InboxItem::Undeliverable(notice) => {
                eprintln!(
                    "echo: reply to {} undeliverable: {}",
                    notice.to, notice.reason
                );
            }
            InboxItem::Down(_) => {}
        }
    }
}
