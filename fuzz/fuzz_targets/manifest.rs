//! Any manifest text must parse or give an error naming a line in the file:
//! never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match wasmproc_manifest::parse(text, Path::new("app.toml"), Path::new("/apps"), &|_| true) {
        Ok(manifest) => {
            for guest in &manifest.guests {
                assert!(wasmproc_manifest::valid_name(&guest.name));
                assert!(guest.replicas >= 1);
            }
        }
        Err(err) => {
            if let Some(line) = err.line {
                assert!(line >= 1 && line <= text.lines().count().max(1) + 1, "line {line}");
            }
            let _ = err.to_string();
        }
    }
});
