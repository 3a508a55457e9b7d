//! Guests in Python and JavaScript: the SDKs against the same host as Rust
//! guests, each behaviour checked in both languages with the same expected
//! text, and a Rust coordinator farming work to workers in all three.

mod common;

use std::time::Duration;

use common::{cli, guest, guest_in, output_within, recv_text, scratch_dir, within};
use wasmproc::{Command, Host, InboxItem};

const LANGUAGES: [&str; 2] = ["python", "js"];
const SECOND: Duration = Duration::from_secs(1);

/// Run the `probe` guest in `language` with `args` in `host`; its stdout
/// and exit code.
async fn probe(host: &Host, language: &str, args: &[&str]) -> (String, i32, String) {
    let out = host
        .command(guest_in(language, "probe"))
        .args(args.iter().copied())
        .output()
        .await
        .unwrap_or_else(|err| panic!("cannot run the {language} probe: {err}"));
    (
        String::from_utf8(out.stdout).unwrap(),
        out.status.process_code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn an_echo_in_each_language_answers_messages_and_calls() {
    within(120, async {
        for language in LANGUAGES {
            let echo = Command::new(guest_in(language, "echo"))
                .name(format!("echo-{language}"))
                .fork()
                .await
                .unwrap();
            echo.send(b"ping".to_vec()).unwrap();
            assert_eq!(recv_text(&echo).await, "ping", "{language}");
            let reply = echo.call(b"call me".to_vec(), 10 * SECOND).await.unwrap();
            assert_eq!(reply, b"call me", "{language}");
            // Bytes that are not text come back as they went.
            let bytes: Vec<u8> = (0..=255).collect();
            assert_eq!(echo.call(bytes.clone(), 10 * SECOND).await.unwrap(), bytes);
            echo.shutdown().await;
            let status = echo.wait().await;
            assert_eq!(status.to_string(), "exit code 0", "{language}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_guest_gets_its_arguments_and_ends_with_the_code_it_chose() {
    within(120, async {
        let host = Host::new();
        for language in LANGUAGES {
            let (out, code, _) = probe(&host, language, &["args", "one", "two words", ""]).await;
            assert_eq!(
                (out.as_str(), code),
                ("one\ntwo words\n\n", 0),
                "{language}"
            );
            let (out, code, _) = probe(&host, language, &["exit", "3"]).await;
            assert_eq!((out.as_str(), code), ("", 3), "{language}");
            let (_, code, _) = probe(&host, language, &["exit", "0"]).await;
            assert_eq!(code, 0, "{language}");
        }
    })
    .await;
}

#[tokio::test]
async fn an_uncaught_exception_ends_the_guest_with_1_and_its_traceback() {
    within(120, async {
        let host = Host::new();
        let (_, code, stderr) = probe(&host, "python", &["raise"]).await;
        assert_eq!(code, 1);
        assert!(
            stderr.starts_with("Traceback (most recent call last):\n"),
            "{stderr}"
        );
        assert!(stderr.ends_with("RuntimeError: boom\n"), "{stderr}");
        let (_, code, stderr) = probe(&host, "js", &["raise"]).await;
        assert_eq!(code, 1);
        assert!(stderr.starts_with("Error: boom\n"), "{stderr}");
        assert!(stderr.contains("probe/app.js:"), "{stderr}");
    })
    .await;
}

#[tokio::test]
async fn calls_between_languages_and_their_errors_read_the_same_in_every_sdk() {
    within(180, async {
        let host = Host::new();
        let _rust = host
            .command(guest("rpc"))
            .args(["serve", "echo"])
            .name("rust-echo")
            .fork()
            .await
            .unwrap();
        let _py = host
            .command(guest_in("python", "echo"))
            .name("py-echo")
            .fork()
            .await
            .unwrap();
        let _js = host
            .command(guest_in("js", "echo"))
            .name("js-echo")
            .fork()
            .await
            .unwrap();
        for language in LANGUAGES {
            let call = |args: Vec<&'static str>| {
                let host = host.clone();
                async move { probe(&host, language, &args).await.0 }
            };
            // Each language calls the others.
            assert_eq!(
                call(vec!["call", "rust-echo", "to rust"]).await,
                "to rust\n"
            );
            assert_eq!(
                call(vec!["call", "py-echo", "to python"]).await,
                "to python\n"
            );
            assert_eq!(call(vec!["call", "js-echo", "to js"]).await, "to js\n");
            // Calls in flight together, answered in any order, read in order.
            assert_eq!(
                call(vec!["calls", "py-echo", "5"]).await,
                "first ended: True\n0 1 2 3 4\n",
                "{language}"
            );
            // Every error as the Rust SDK's `describe` says it.
            assert_eq!(
                call(vec!["call", "nobody", "x"]).await,
                "error unknown-recipient: unknown recipient\n"
            );
            assert_eq!(
                call(vec!["call", "all:echoes", "x"]).await,
                "error not-allowed: not allowed\n"
            );
            assert_eq!(
                call(vec!["call", "py-echo", "x", "0"]).await,
                "error invalid-timeout: a call needs a timeout above zero\n"
            );
            assert_eq!(
                call(vec!["call", "parent", "x", "300"]).await,
                "error timeout: no reply before the deadline\n"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_reply_is_given_once_and_only_to_a_call() {
    within(120, async {
        for language in LANGUAGES {
            let host = Host::new();
            let mut server = host.command(guest_in(language, "probe"));
            server.args(["serve"]).name("server");
            let served = tokio::spawn(async move { server.output().await });
            let to = wasmproc::Address::Name("server".into());
            // The server registers its name once its runner is up.
            let reply = loop {
                match host.call(&to, b"first".to_vec(), 10 * SECOND).await {
                    Err(wasmproc::CallError::UnknownRecipient) => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    other => break other.unwrap(),
                }
            };
            assert_eq!(reply, b"got first");
            host.send(&to, b"plain".to_vec()).unwrap();
            let out = served.await.unwrap().unwrap();
            assert_eq!(out.status.to_string(), "exit code 0", "{language}");
            assert_eq!(
                String::from_utf8(out.stdout).unwrap(),
                "first: replied\n\
                 first: error already-replied: the request was answered already\n\
                 plain: error unknown-request: no such request was delivered here\n",
                "{language}"
            );
        }
    })
    .await;
}

#[test]
fn a_rust_coordinator_farms_ranges_to_workers_in_three_languages() {
    let dir = scratch_dir("polyglot");
    let manifest = format!(
        "[guests.coordinator]\n\
         module = \"{coordinator}\"\n\
         args = [\"--json\", \"--by-worker\", \"--stop\", \"2\", \"200000\", \"24\", \"rust\", \"python\", \"js\"]\n\
         talks-to = [\"rust\", \"python\", \"js\"]\n\n\
         [guests.rust]\nmodule = \"{rust}\"\nargs = [\"--json\"]\n\n\
         [guests.python]\nmodule = \"{python}\"\n\n\
         [guests.js]\nmodule = \"{js}\"\n",
        coordinator = guest("coordinator").display(),
        rust = guest("primes").display(),
        python = guest_in("python", "primes").display(),
        js = guest_in("js", "primes").display(),
    );
    let path = dir.join("app.toml");
    std::fs::write(&path, manifest).unwrap();
    let out = output_within(std::process::Command::new(cli()).arg("run").arg(&path), 120);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    // π(200000) = 17984.
    assert!(
        stdout.ends_with("coordinator | primes in 2..200000: 17984\n"),
        "{stdout}"
    );
    let mut slices = 0;
    for worker in ["rust", "python", "js"] {
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("coordinator | {worker}: ")))
            .unwrap_or_else(|| panic!("no count for {worker}: {stdout}"));
        let n: u32 = line.trim_end_matches(" slices").parse().unwrap();
        // Each holds two slices from the start, so each counts at least two.
        assert!(n >= 2, "{worker} counted {n} slices: {stdout}");
        slices += n;
    }
    assert_eq!(slices, 24, "{stdout}");
    for worker in ["coordinator", "rust", "python", "js"] {
        assert!(
            stderr.contains(&format!("wasmproc: {worker} ended: exit code 0\n")),
            "{stderr}"
        );
    }
}

#[test]
fn a_worker_s_error_answer_fails_the_count_with_what_it_said() {
    let dir = scratch_dir("polyglot-error");
    // Numbers past 2^53 are not exact in JavaScript: its worker refuses them.
    let manifest = format!(
        "[guests.coordinator]\n\
         module = \"{coordinator}\"\n\
         args = [\"--json\", \"--stop\", \"9007199254740993\", \"9007199254740995\", \"1\", \"js\"]\n\
         talks-to = [\"js\"]\n\n\
         [guests.js]\nmodule = \"{js}\"\n",
        coordinator = guest("coordinator").display(),
        js = guest_in("js", "primes").display(),
    );
    let path = dir.join("app.toml");
    std::fs::write(&path, manifest).unwrap();
    let out = output_within(std::process::Command::new(cli()).arg("run").arg(&path), 120);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The coordinator ends with 3 (through the SDK's `exit`: Rust's std on
    // wasm32-wasip2 reports every non-zero exit as 1); an app with a guest
    // that failed ends with 1.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("wasmproc: coordinator ended: exit code 3\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "coordinator | coordinator: worker js failed: it answered: \
             \"\\\"[9007199254740993,9007199254740995]\\\" is not a range [lo, hi] of safe integers\"\n"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_message_sent_to_the_parent_from_python_and_js_arrives_as_sent() {
    within(120, async {
        for language in LANGUAGES {
            let echo = Command::new(guest_in(language, "echo"))
                .fork()
                .await
                .unwrap();
            echo.send("ünïcödé ✓".as_bytes().to_vec()).unwrap();
            match echo.recv().await {
                Some(InboxItem::Message { payload, .. }) => {
                    assert_eq!(String::from_utf8(payload).unwrap(), "ünïcödé ✓")
                }
                other => panic!("{language}: {other:?}"),
            }
            echo.kill();
            echo.wait().await;
        }
    })
    .await;
}
