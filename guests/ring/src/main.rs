//! One link of a ring.
//!
//! - `ring NEXT`: on the parent's go it sends its own name to `NEXT`; when
//!   the message from the previous link arrives it tells the parent whose
//!   it was (`"NAME<-PREV"`) and exits.
//! - `ring NEXT relay`: forwards every message from another link to `NEXT`,
//!   and every message from the parent too (that is how tokens enter the
//!   ring), until the parent sends `halt`; from then on it sends every
//!   message it gets to the parent instead, so the parent can count that
//!   every token is still there. A token that comes back undeliverable is
//!   passed to the parent as well.

use wasmproc_guest::{self as ipc, Address, InboxItem};

fn main() {
    let mut args = std::env::args().skip(1);
    let next = args.next().expect("usage: ring NEXT [relay]");
    if args.next().as_deref() == Some("relay") {
        relay(&next);
    } else {
        once(&next);
    }
}

fn once(next: &str) {
    let me = ipc::self_name().unwrap_or_else(|| ipc::self_id().to_string());
    let (mut went, mut heard) = (false, None);
    while !went || heard.is_none() {
        match ipc::recv() {
            InboxItem::Message(msg) if msg.from_id == ipc::PARENT_ID => {
                ipc::send(Address::parse(next), me.as_bytes()).expect("send to next");
                went = true;
            }
            InboxItem::Message(msg) => {
                heard = Some(String::from_utf8_lossy(&msg.payload).into_owned())
            }
            InboxItem::Undeliverable(n) => panic!("{me}: send to {} failed: {}", n.to, n.reason),
            InboxItem::Shutdown => return,
            InboxItem::Down(_) => {}
        }
    }
    let report = format!("{me}<-{}", heard.unwrap_or_default());
    ipc::send(Address::Parent, report.as_bytes()).expect("send to parent");
}

fn relay(next: &str) {
    let next = Address::parse(next);
    let mut halted = false;
    for item in ipc::inbox() {
        match item {
            InboxItem::Message(msg) if msg.from_id == ipc::PARENT_ID && msg.payload == b"halt" => {
                halted = true;
            }
            InboxItem::Message(msg) => {
                let to = if halted {
                    Address::Parent
                } else {
                    next.clone()
                };
                ipc::send(to, &msg.payload).expect("send");
            }
            InboxItem::Undeliverable(notice) => {
                // The payload is not in the notice: say how many bytes came back.
                let lost = format!("returned {}", notice.payload_len);
                ipc::send(Address::Parent, lost.as_bytes()).expect("send to parent");
            }
            InboxItem::Shutdown => return,
            InboxItem::Down(_) => {}
        }
    }
}
