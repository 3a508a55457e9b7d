//! A guest built against version 0.1 of the guest contract
//! (`wasmproc:guest/ipc@0.1.0`, from before calls), without the SDK: it
//! must still load, and it sends every message back to its sender until
//! `shutdown`. A call made to it arrives as a plain message.

mod bindings {
    wit_bindgen::generate!({
        inline: "
            package wasmproc:legacy;
            world legacy {
                import wasmproc:guest/ipc@0.1.0;
            }
        ",
        path: "../../wit",
        world: "wasmproc:legacy/legacy",
        with: {
            "wasi:io/poll@0.2.12": wasip2::io::poll,
            "wasmproc:guest/ipc@0.1.0": generate,
        },
    });
}

use bindings::wasmproc::guest0_1_0::ipc::{self, Address, InboxItem};

fn main() {
    loop {
        match ipc::recv() {
            InboxItem::Message(msg) => {
                let back = if msg.from_id == 0 {
                    Address::Parent
                } else {
                    Address::Id(msg.from_id)
                };
                let _ = ipc::send(&back, &msg.payload);
            }
            InboxItem::Shutdown => return,
            _ => {}
        }
    }
}
