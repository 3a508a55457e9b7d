//! A guest built against version 0.2 of the guest contract
//! (`wasmproc:guest/ipc@0.2.0`, from before `unknown-outcome`), without the
//! SDK: it must still load. It sends every message back to its sender and
//! answers every call with its payload, until `shutdown`.

mod bindings {
    wit_bindgen::generate!({
        inline: "
            package wasmproc:legacy2;
            world legacy2 {
                import wasmproc:guest/ipc@0.2.0;
            }
        ",
        path: "../../wit",
        world: "wasmproc:legacy2/legacy2",
        with: {
            "wasi:io/poll@0.2.12": wasip2::io::poll,
            "wasmproc:guest/ipc@0.2.0": generate,
        },
    });
}

use bindings::wasmproc::guest0_2_0::ipc::{self, Address, InboxItem};

fn main() {
    loop {
        match ipc::recv() {
            InboxItem::Message(msg) => match msg.request {
                Some(request) => {
                    let _ = ipc::reply(request, &msg.payload);
                }
                None => {
                    let back = if msg.from_id == 0 {
                        Address::Parent
                    } else {
                        Address::Id(msg.from_id)
                    };
                    let _ = ipc::send(&back, &msg.payload);
                }
            },
            InboxItem::Shutdown => return,
            _ => {}
        }
    }
}
