//! The README's "first guest in five minutes", followed literally from an
//! empty folder: every file it shows is written, every command it shows is
//! run through a shell, and every output it shows is compared.
//!
//! Two kinds of line are provided rather than run, and they must read
//! exactly as the README has them: `cargo install --path host` and `cargo
//! install --path host/runner` (the binaries under test are put on `PATH`
//! instead) and `pip install
//! componentize-py==…` (the pinned copy `make tools` installed is).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{cli, output_within, root};

/// A fenced block of the guide.
struct Block {
    lang: String,
    text: String,
}

/// The blocks of the README section `heading`, in order.
fn guide_blocks(heading: &str) -> Vec<Block> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("the README has no `{heading}`"));
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        let Some(lang) = line.strip_prefix("```") else {
            continue;
        };
        let mut text = String::new();
        for body in lines.by_ref() {
            if body == "```" {
                break;
            }
            text.push_str(body);
            text.push('\n');
        }
        blocks.push(Block {
            lang: lang.to_owned(),
            text,
        });
    }
    blocks
}

/// The path a code block names in its first line (`// a/b.rs`, `# a/b.toml`).
fn named_file(block: &Block) -> Option<PathBuf> {
    let first = block.text.lines().next()?;
    let path = first
        .strip_prefix("// ")
        .or_else(|| first.strip_prefix("# "))?;
    (path.contains('/') && !path.contains(' ')).then(|| PathBuf::from(path))
}

/// A folder on `PATH` holding what the two `cargo install` lines install.
fn installed_bin(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let built = cli();
    for name in ["wasmproc", "wasmproc-runner"] {
        std::os::unix::fs::symlink(built.with_file_name(name), bin.join(name)).unwrap();
    }
    bin
}

#[test]
fn the_first_guest_guide_works_as_written() {
    // Outside the checkout, as a reader's folder is: a crate under it would
    // belong to the checkout's workspace.
    let dir = common::scratch_dir("guide");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let path = common::path_with_tools(&[installed_bin(&dir)]);
    let checkout = root().display().to_string();

    let blocks = guide_blocks("## A first guest in five minutes");
    let (mut files, mut commands, mut outputs, mut provided) = (0, 0, 0, 0);
    let mut last_output: Option<(String, String)> = None;
    for block in &blocks {
        match block.lang.as_str() {
            "sh" => {
                for line in block.text.lines().filter(|l| !l.trim().is_empty()) {
                    if line == "cargo install --path host"
                        || line == "cargo install --path host/runner"
                        || line.starts_with("pip install componentize-py==")
                    {
                        provided += 1;
                        continue;
                    }
                    let mut command = Command::new("sh");
                    command
                        .current_dir(&work)
                        .env("PATH", &path)
                        .env_remove("CARGO_TARGET_DIR")
                        .args(["-c", line]);
                    // The reader's own host crate builds into the checkout's
                    // target folder, reusing what `make test` compiled.
                    if line.starts_with("cd shout-host") {
                        command.env("CARGO_TARGET_DIR", root().join("target"));
                    }
                    let out = output_within(&mut command, 900);
                    let stdout = String::from_utf8(out.stdout).unwrap();
                    assert_eq!(
                        out.status.code(),
                        Some(0),
                        "`{line}` failed:\n{stdout}{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    commands += 1;
                    last_output = Some((line.to_owned(), stdout));
                }
            }
            "text" => {
                let (line, stdout) = last_output
                    .take()
                    .expect("an output block follows a command");
                assert_eq!(
                    stdout.trim_end(),
                    block.text.trim_end(),
                    "what `{line}` printed"
                );
                outputs += 1;
            }
            _ => {
                let Some(file) = named_file(block) else {
                    continue;
                };
                let text = block.text.replace("/path/to/wasmproc", &checkout);
                let target = work.join(&file);
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                std::fs::write(&target, text).unwrap();
                files += 1;
                // A crate of the reader's own resolves its dependencies
                // afresh; here it takes the checkout's versions, so that
                // the build reuses what `make test` compiled.
                if file.ends_with("Cargo.toml") && file.parent() != Some(Path::new("shout")) {
                    std::fs::copy(
                        root().join("Cargo.lock"),
                        target.with_file_name("Cargo.lock"),
                    )
                    .unwrap();
                }
            }
        }
    }
    println!(
        "the guide: {files} files, {commands} commands, {outputs} outputs, {provided} installs provided"
    );
    assert_eq!((files, commands, outputs, provided), (5, 11, 5, 2));
}
