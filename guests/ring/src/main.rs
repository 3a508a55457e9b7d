//! One link of a ring: `ring NEXT`. On the parent's go it sends its own name
//! to `NEXT`; when the message from the previous link arrives it tells the
//! parent whose it was (`"NAME<-PREV"`) and exits.

use wasmproc_guest::{self as ipc, Address, InboxItem};

fn main() {
    let next = std::env::args().nth(1).expect("usage: ring NEXT");
    let me = ipc::self_name().unwrap_or_else(|| ipc::self_id().to_string());
    let (mut went, mut heard) = (false, None);
    while !went || heard.is_none() {
        match ipc::recv() {
            InboxItem::Message(msg) if msg.from_id == ipc::PARENT_ID => {
                ipc::send(Address::parse(&next), me.as_bytes()).expect("send to next");
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
