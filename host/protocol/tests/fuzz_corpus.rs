//! Replays the corpus the frame-decoder fuzzer found (`fuzz/corpus`): every
//! input decodes to frames or to an error, and never panics.

use std::path::PathBuf;

use wasmproc_protocol::framing::{self, MAX_FRAME_LEN};
use wasmproc_protocol::{HostToRunner, RunnerToHost};

#[test]
fn every_corpus_input_decodes_or_errors() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/frame_decoder");
    let mut inputs = 0;
    let mut frames = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/frame_decoder") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        inputs += 1;
        let mut rest = &data[..];
        while let Ok(Some((frame, used))) = framing::decode::<RunnerToHost>(rest, MAX_FRAME_LEN) {
            let mut again = Vec::new();
            framing::encode_into(&frame, &mut again, MAX_FRAME_LEN).unwrap();
            let (back, _) = framing::decode::<RunnerToHost>(&again, MAX_FRAME_LEN)
                .unwrap()
                .unwrap();
            assert_eq!(back, frame);
            frames += 1;
            rest = &rest[used..];
        }
        let _ = framing::decode::<HostToRunner>(&data, MAX_FRAME_LEN);
    }
    assert!(inputs > 100, "only {inputs} corpus inputs");
    assert!(frames > 0, "no corpus input holds a valid frame");
}
