//! Any bytes from a runner (or the host) must decode to frames or to an
//! error: never a panic, never an allocation beyond the frame limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;
use wasmproc_protocol::framing::{self, FrameCodec, MAX_FRAME_LEN};
use wasmproc_protocol::{HostToRunner, RunnerToHost};

fuzz_target!(|data: &[u8]| {
    // The pure decoder, frame after frame.
    let mut rest = data;
    while let Ok(Some((frame, used))) = framing::decode::<RunnerToHost>(rest, MAX_FRAME_LEN) {
        // A decoded frame encodes again and decodes to itself.
        let mut again = Vec::new();
        framing::encode_into(&frame, &mut again, MAX_FRAME_LEN).expect("re-encode");
        let (back, _) = framing::decode::<RunnerToHost>(&again, MAX_FRAME_LEN)
            .expect("decode")
            .expect("whole frame");
        assert_eq!(back, frame);
        rest = &rest[used..];
    }
    let _ = framing::decode::<HostToRunner>(data, MAX_FRAME_LEN);

    // The streaming codec, fed in two pieces.
    let mut codec = FrameCodec::<RunnerToHost>::new(1 << 20);
    let cut = data.len() / 2;
    let mut buf = BytesMut::from(&data[..cut]);
    let _ = codec.decode(&mut buf);
    buf.extend_from_slice(&data[cut..]);
    while let Ok(Some(_)) = codec.decode(&mut buf) {}
    let _ = codec.decode_eof(&mut buf);
});
