//! The wasi-testsuite: real WASI programs nobody here wrote, each run through
//! the project's own spawn path in its own runner, on a fresh copy of its
//! folder, checking the exit code and stdout exactly (and stderr where the
//! test states it).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use wasmproc::{Command, ExitStatus};

/// A test's JSON, in the legacy format the suite uses (absent fields take
/// the defaults of `doc/specification.md`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Spec {
    args: Vec<String>,
    env: BTreeMap<String, String>,
    root: Option<String>,
    exit_code: i32,
    stdout: String,
    stderr: Option<String>,
}

fn suite_dir() -> PathBuf {
    let dir = common::root().join("../shared/wasi-testsuite/tests");
    assert!(
        dir.is_dir(),
        "the wasi-testsuite is not at {} (it lives in shared/, beside the repository)",
        dir.display()
    );
    dir
}

fn wasm_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() && !path.to_string_lossy().ends_with(".dir") {
            wasm_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "wasm") {
            out.push(path);
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if !entry.file_name().to_string_lossy().ends_with(".cleanup") {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Run one test; `Err` says how it failed.
async fn run_one(wasm: &Path, scratch: &Path) -> Result<(), String> {
    let json = wasm.with_extension("json");
    let spec: Spec = if json.is_file() {
        let text = std::fs::read_to_string(&json).map_err(|e| e.to_string())?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json.display()))?
    } else {
        Spec::default()
    };
    // A fresh copy of the test's folder, so writes of one run never leak
    // into another.
    let _ = std::fs::remove_dir_all(scratch);
    copy_dir(wasm.parent().unwrap(), scratch);
    let module = scratch.join(wasm.file_name().unwrap());

    let mut command = Command::new(&module);
    command
        .arg0(wasm.file_name().unwrap().to_string_lossy())
        .args(spec.args.clone());
    command.envs(spec.env.clone());
    if let Some(root) = &spec.root {
        command.preopen(scratch.join(root), "/", false);
    }
    let out = command
        .output()
        .await
        .map_err(|e| format!("cannot run: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut problems = Vec::new();
    if out.status
        != (ExitStatus::Exited {
            code: spec.exit_code,
        })
    {
        problems.push(format!(
            "status {} (expected exit code {})",
            out.status, spec.exit_code
        ));
    }
    if stdout != spec.stdout {
        problems.push(format!("stdout {stdout:?} (expected {:?})", spec.stdout));
    }
    if let Some(expected) = &spec.stderr {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr != *expected {
            problems.push(format!("stderr {stderr:?} (expected {expected:?})"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}; stderr: {}",
            problems.join("; "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[tokio::test]
async fn every_wasi_testsuite_program_passes() {
    common::within(600, async {
        let mut tests = Vec::new();
        wasm_files(&suite_dir(), &mut tests);
        assert!(!tests.is_empty(), "no tests found in the wasi-testsuite");
        let scratch_root =
            std::env::temp_dir().join(format!("wasmproc-conformance-{}", std::process::id()));
        let mut failures = Vec::new();
        for (i, wasm) in tests.iter().enumerate() {
            let scratch = scratch_root.join(i.to_string());
            if let Err(why) = run_one(wasm, &scratch).await {
                failures.push(format!("{}: {why}", wasm.display()));
            }
        }
        let _ = std::fs::remove_dir_all(&scratch_root);
        println!(
            "wasi-testsuite: {} programs ran, {} passed, {} failed",
            tests.len(),
            tests.len() - failures.len(),
            failures.len()
        );
        assert!(failures.is_empty(), "failed:\n{}", failures.join("\n"));
    })
    .await;
}
