//! A runner that breaks the protocol on purpose, for the host's tests.
//!
//! The host starts it like the real runner. It reads the launch spec, takes
//! its misbehaviour from the guest's first argument, does it, and then waits
//! for the host to end it:
//!
//! `oversize`, `lying-mark`, `ring-outside`, `truncated`, `garbage`,
//! `out-of-order`, `second-hello`, `after-exit`, `over-limit`, `forged`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;

use wasmproc_protocol::contract::{CONTROL_IN_FD, CONTROL_OUT_FD};
use wasmproc_protocol::{
    Address, ExitReport, GuestId, HostToRunner, InboxItem, PROTOCOL_VERSION, RunnerToHost,
    read_frame_blocking, write_frame_blocking,
};

fn main() {
    // SAFETY: the host passes the control pipes on these descriptors.
    let (mut from_host, mut to_host) = unsafe {
        (
            File::from_raw_fd(CONTROL_IN_FD),
            File::from_raw_fd(CONTROL_OUT_FD),
        )
    };
    let (frame, _) =
        read_frame_blocking::<HostToRunner>(&mut from_host, Vec::new()).expect("launch spec");
    let HostToRunner::Launch(spec) = frame else {
        panic!("expected a launch spec");
    };
    let mode = spec.args.get(1).cloned().unwrap_or_default();
    let hello = RunnerToHost::Hello {
        protocol_version: PROTOCOL_VERSION,
    };
    let hardened = RunnerToHost::Hardened { steps: Vec::new() };
    let send = |len: usize| RunnerToHost::Send {
        to: Address::Parent,
        taken: 0,
        payload: vec![1; len],
    };
    let mut write =
        |frame: &RunnerToHost| write_frame_blocking(&mut to_host, frame).expect("write");
    match mode.as_str() {
        "oversize" => {
            write(&hello);
            write(&hardened);
            // The largest length a plain prefix can announce (the top bit
            // marks a payload length after it).
            to_host.write_all(&(u32::MAX >> 1).to_le_bytes()).unwrap();
        }
        "lying-mark" => {
            write(&hello);
            write(&hardened);
            // A marked frame of 100 bytes whose payload would be 200.
            let mark = wasmproc_protocol::framing::PAYLOAD_MARK | 100;
            to_host.write_all(&mark.to_le_bytes()).unwrap();
            to_host.write_all(&200u32.to_le_bytes()).unwrap();
            to_host.write_all(&[0; 100]).unwrap();
        }
        "ring-outside" => {
            write(&hello);
            write(&hardened);
            // A frame whose payload of 64 KiB would run past the end of
            // the shared ring.
            let head = RunnerToHost::Send {
                to: Address::Parent,
                taken: 0,
                payload: Vec::new(),
            };
            let mut frame = Vec::new();
            let at = (4 << 20) - 100;
            wasmproc_protocol::framing::encode_ring_head_into(
                &head,
                64 << 10,
                at,
                &mut frame,
                1 << 20,
            )
            .unwrap();
            to_host.write_all(&frame).unwrap();
        }
        "truncated" => {
            write(&hello);
            write(&hardened);
            let mut buf = Vec::new();
            wasmproc_protocol::framing::encode_into(&send(100), &mut buf, 1 << 20).unwrap();
            to_host.write_all(&buf[..buf.len() / 2]).unwrap();
            // End mid-frame.
            std::process::exit(0);
        }
        "garbage" => {
            write(&hello);
            write(&hardened);
            let mut junk = 60u32.to_le_bytes().to_vec();
            junk.extend((0..60u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 0x80));
            to_host.write_all(&junk).unwrap();
        }
        "out-of-order" => write(&send(8)),
        "second-hello" => {
            write(&hello);
            write(&hardened);
            write(&hello);
        }
        "after-exit" => {
            write(&hello);
            write(&hardened);
            write(&RunnerToHost::Exit(ExitReport::Exited { code: 0 }));
            write(&send(8));
        }
        "over-limit" => {
            write(&hello);
            write(&hardened);
            write(&send(spec.limits.max_message_size as usize + 1));
        }
        "forged" => {
            write(&hello);
            write(&hardened);
            // A frame only the host may send, claiming to come from guest 1.
            let forged = HostToRunner::Deliver(InboxItem::Message {
                from: GuestId(1),
                from_name: Some("someone-else".into()),
                request: None,
                payload: b"trust me".to_vec(),
            });
            write_frame_blocking(&mut to_host, &forged).expect("write");
        }
        other => panic!("unknown mode {other:?}"),
    }
    // Wait for the host to end this process (or close the pipe).
    let mut sink = [0u8; 4096];
    while matches!(from_host.read(&mut sink), Ok(n) if n > 0) {}
}
