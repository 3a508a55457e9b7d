//! `wasmproc new`: a guest folder in each language, built with the command
//! it prints, run and called through the CLI.

mod common;

use std::process::Command;

use common::{cli, output_within, path_with_tools, scratch_dir};

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

/// Scaffold `name` in `lang`, follow what `new` printed (build it, run it,
/// call it), and check each step's output.
fn scaffold_build_run_call(lang: &str, name: &str, module: &str) {
    let dir = scratch_dir(&format!("new-{lang}"));
    let out = output_within(
        Command::new(cli())
            .current_dir(&dir)
            .args(["new", name, "--lang", lang]),
        30,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(out.stderr));
    let printed = text(out.stdout);
    let line = |label: &str| {
        printed
            .lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("no `{label}` line in:\n{printed}"))
            .trim()
            .to_owned()
    };
    let language = match lang {
        "rust" => "Rust",
        "python" => "Python",
        _ => "JavaScript",
    };
    assert_eq!(
        printed.lines().next(),
        Some(format!("Created the {language} guest `{name}` in {name}/").as_str())
    );
    assert_eq!(
        line("Run it:"),
        format!("wasmproc run {name}/{module} world")
    );
    assert_eq!(
        line("Call it:"),
        format!("wasmproc call {name}/{module} world")
    );
    assert!(dir.join(name).join("README.md").is_file());
    assert!(dir.join(name).join("wit/guest.wit").is_file());

    // The build, exactly as printed, through a shell as a user would type it.
    let build = line("Build it:");
    let out = output_within(
        Command::new("sh")
            .current_dir(&dir)
            .env("PATH", path_with_tools(&[]))
            .env_remove("CARGO_TARGET_DIR")
            .args(["-c", &build]),
        600,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "`{build}` failed:\n{}{}",
        text(out.stdout),
        text(out.stderr)
    );
    assert!(
        dir.join(name).join(module).is_file(),
        "{build} made no {module}"
    );

    // Run and call, as printed (`wasmproc` is the binary under test).
    for (verb, expected) in [("run", "hello, world!\n"), ("call", "hello, world!")] {
        let command = line(if verb == "run" { "Run it:" } else { "Call it:" });
        let words = shell_words::split(&command).unwrap();
        assert_eq!(words[..2], ["wasmproc".to_owned(), verb.to_owned()]);
        let out = output_within(Command::new(cli()).current_dir(&dir).args(&words[1..]), 120);
        assert_eq!(
            (text(out.stdout), out.status.code()),
            (expected.to_owned(), Some(0)),
            "`{command}`: {}",
            text(out.stderr)
        );
    }
}

#[test]
fn a_rust_guest_from_new_builds_runs_and_answers() {
    scaffold_build_run_call(
        "rust",
        "hello-rust",
        "target/wasm32-wasip2/release/hello-rust.wasm",
    );
}

#[test]
fn a_python_guest_from_new_builds_runs_and_answers() {
    scaffold_build_run_call("python", "hello-python", "hello-python.wasm");
}

#[test]
fn a_javascript_guest_from_new_builds_runs_and_answers() {
    scaffold_build_run_call("js", "hello-js", "hello-js.wasm");
}

#[test]
fn new_refuses_a_folder_that_is_not_empty_and_a_name_that_is_not_one() {
    let dir = scratch_dir("new-refusals");
    std::fs::create_dir_all(dir.join("taken")).unwrap();
    std::fs::write(dir.join("taken/notes.txt"), "mine").unwrap();
    let out = output_within(
        Command::new(cli()).current_dir(&dir).args(["new", "taken"]),
        30,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(out.stderr),
        "wasmproc: taken already exists and is not empty\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("taken/notes.txt")).unwrap(),
        "mine"
    );

    let out = output_within(
        Command::new(cli())
            .current_dir(&dir)
            .args(["new", "2fast", "--lang", "python"]),
        30,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(out.stderr),
        "wasmproc: `2fast` is not a guest name: use letters, digits, `-` and `_`, starting with a letter\n"
    );
    assert!(!dir.join("2fast").exists());

    let out = output_within(
        Command::new(cli())
            .current_dir(&dir)
            .args(["new", "x", "--lang", "go"]),
        30,
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(out.stderr);
    assert!(
        stderr.contains("invalid value 'go' for '--lang <LANG>'"),
        "{stderr}"
    );
}
