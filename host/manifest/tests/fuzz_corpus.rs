//! Replays the corpus the manifest fuzzer found (`fuzz/corpus`): every input
//! parses or gives an error that names a line of the file, never a panic.

use std::path::{Path, PathBuf};

#[test]
fn every_corpus_input_parses_or_names_a_line() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/manifest");
    let (mut inputs, mut parsed) = (0, 0);
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/manifest") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        inputs += 1;
        match wasmproc_manifest::parse(text, Path::new("app.toml"), Path::new("/apps"), &|_| true) {
            Ok(manifest) => {
                parsed += 1;
                assert!(!manifest.guests.is_empty());
            }
            Err(err) => {
                let line = err.line.expect("a line");
                assert!(
                    line >= 1 && line <= text.lines().count().max(1) + 1,
                    "{err}"
                );
            }
        }
    }
    assert!(inputs > 100, "only {inputs} corpus inputs");
    assert!(parsed > 0, "no corpus input is a valid manifest");
}
