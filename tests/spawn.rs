//! spawn, execFile (`output`), exec and the CLI, for plain WASI programs.

mod common;

use std::time::{Duration, Instant};

use common::{cli, guest, tool_p1, within};
use wasmproc::{Command, ExitStatus, Limit, Stdio, exec};

fn tools() -> [std::path::PathBuf; 2] {
    [tool_p1(), guest("wasi-tool")]
}

#[tokio::test]
async fn output_captures_stdout_and_stderr_separately_and_exactly() {
    within(60, async {
        for tool in tools() {
            let out = Command::new(&tool)
                .args(["out", "to stdout\nline 2", "to stderr", "0"])
                .output()
                .await
                .unwrap();
            assert_eq!(
                out.status,
                ExitStatus::Exited { code: 0 },
                "{}",
                tool.display()
            );
            assert_eq!(out.stdout, b"to stdout\nline 2");
            assert_eq!(out.stderr, b"to stderr");
        }
    })
    .await;
}

#[tokio::test]
async fn a_computing_program_gets_the_same_answer_as_a_core_module_and_a_component() {
    within(60, async {
        for tool in tools() {
            let out = Command::new(&tool)
                .args(["primes", "100000"])
                .output()
                .await
                .unwrap();
            // π(100000) = 9592: the kernel the bench runs under wasmtime too.
            assert_eq!(
                (out.status, String::from_utf8(out.stdout).unwrap()),
                (ExitStatus::Exited { code: 0 }, "9592\n".to_owned()),
                "{}",
                tool.display()
            );
        }
    })
    .await;
}

#[tokio::test]
async fn exit_codes_come_back_as_such() {
    within(60, async {
        for code in [0, 1, 42] {
            let status = Command::new(tool_p1())
                .args(["exit", &code.to_string()])
                .output()
                .await
                .unwrap()
                .status;
            assert_eq!(status, ExitStatus::Exited { code });
        }
        // WASI 0.2's `exit` only says success or failure: a component's
        // non-zero exit code arrives as 1.
        let status = Command::new(guest("wasi-tool"))
            .args(["exit", "1"])
            .output()
            .await
            .unwrap()
            .status;
        assert_eq!(status, ExitStatus::Exited { code: 1 });
    })
    .await;
}

#[tokio::test]
async fn args_and_env_reach_the_guest_exactly_and_nothing_else_does() {
    within(60, async {
        let out = Command::new(guest("wasi-tool"))
            .arg("env")
            .env("GREETING", "hello world")
            .env("EMPTY", "")
            .output()
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "EMPTY=\nGREETING=hello world\n"
        );
    })
    .await;
}

#[tokio::test]
async fn exec_splits_like_a_shell_and_never_runs_one() {
    within(60, async {
        let tool = tool_p1().display().to_string();
        let line = format!(
            r#"{tool} args plain 'single quoted' "double \"quoted\"" back\ slash '|' "a|b" '$HOME' `x`"#
        );
        let out = exec(&line).await.unwrap();
        assert_eq!(out.status, ExitStatus::Exited { code: 0 });
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            concat!(
                "\"plain\"\n",
                "\"single quoted\"\n",
                "\"double \\\"quoted\\\"\"\n",
                "\"back slash\"\n",
                "\"|\"\n",
                "\"a|b\"\n",
                "\"$HOME\"\n",
                "\"`x`\"\n",
            )
        );
    })
    .await;
}

#[tokio::test]
async fn a_three_stage_pipeline_streams_stage_to_stage() {
    within(60, async {
        let [p1, p2] = tools().map(|t| t.display().to_string());
        // A wasip1 module and two wasip2 components in one line.
        let out = exec(&format!(
            "{p1} echo hello 'big world' | {p2} upper | {p2} cat"
        ))
        .await
        .unwrap();
        assert_eq!(out.stdout, b"HELLO BIG WORLD\n");
        assert_eq!(out.stages, vec![ExitStatus::Exited { code: 0 }; 3]);
        assert!(out.stderr.is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_failing_middle_stage_is_reported() {
    within(60, async {
        let tool = tool_p1().display().to_string();
        let out = exec(&format!("{tool} echo hi | {tool} exit 3 | {tool} cat"))
            .await
            .unwrap();
        assert_eq!(
            out.stages,
            vec![
                ExitStatus::Exited { code: 0 },
                ExitStatus::Exited { code: 3 },
                ExitStatus::Exited { code: 0 }
            ]
        );
        // The pipeline's status is the last stage's.
        assert_eq!(out.status, ExitStatus::Exited { code: 0 });
        assert!(out.stdout.is_empty());

        let err = exec(&format!("{tool} echo hi | nowhere.wasm"))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "stage 2 (`nowhere.wasm`): module nowhere.wasm not found"
        );
    })
    .await;
}

#[tokio::test]
async fn max_output_stops_a_guest_that_prints_forever_and_keeps_the_output_up_to_it() {
    within(60, async {
        for tool in tools() {
            let out = Command::new(&tool)
                .arg("spam")
                .max_output(10_000)
                .output()
                .await
                .unwrap();
            assert_eq!(
                out.status,
                ExitStatus::LimitExceeded(Limit::Output { bytes: 10_000 })
            );
            assert_eq!(out.stdout.len(), 10_000);
            let line = b"spam spam spam spam spam spam spam spam\n";
            let expected: Vec<u8> = line.iter().copied().cycle().take(10_000).collect();
            assert_eq!(out.stdout, expected);
        }
    })
    .await;
}

#[tokio::test]
async fn without_a_preopened_folder_no_host_path_opens() {
    within(60, async {
        for tool in tools() {
            for path in ["/etc/passwd", "/", "../../etc/passwd", "/proc/self/environ"] {
                let out = Command::new(&tool)
                    .args(["read", path])
                    .output()
                    .await
                    .unwrap();
                assert_eq!(out.status, ExitStatus::Exited { code: 1 }, "read {path}");
                assert!(out.stdout.is_empty(), "read {path} gave output");
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(err.starts_with("wasi-tool: "), "read {path}: {err}");
            }
        }
    })
    .await;
}

#[tokio::test]
async fn cli_dir_ro_reads_but_does_not_write_and_dir_writes() {
    within(60, async {
        let dir = common::scratch_dir("dirs");
        std::fs::write(dir.join("note.txt"), "from the host").unwrap();
        let tool = guest("wasi-tool");
        let mount = format!("{}::/data", dir.display());
        let run = |flag: &str, args: &[&str]| {
            common::output_within(
                std::process::Command::new(cli())
                    .args(["run", flag, &mount])
                    .arg(&tool)
                    .arg("--")
                    .args(args),
                60,
            )
        };
        let read = run("--dir-ro", &["read", "/data/note.txt"]);
        assert_eq!(read.status.code(), Some(0));
        assert_eq!(read.stdout, b"from the host");

        let write = run("--dir-ro", &["write", "/data/new.txt", "x"]);
        assert_eq!(write.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&write.stderr).starts_with("wasi-tool: "),
            "{}",
            String::from_utf8_lossy(&write.stderr)
        );
        assert!(!dir.join("new.txt").exists());

        let write = run("--dir", &["write", "/data/new.txt", "written"]);
        assert_eq!(write.status.code(), Some(0));
        assert_eq!(
            std::fs::read_to_string(dir.join("new.txt")).unwrap(),
            "written"
        );
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[test]
fn cli_run_exits_with_the_guest_code_and_prints_nothing_of_its_own() {
    let out = common::output_within(
        std::process::Command::new(cli())
            .args(["run", "--env", "A=1"])
            .arg(tool_p1())
            .args(["--", "out", "hello", "", "42"]),
        60,
    );
    assert_eq!(out.status.code(), Some(42));
    assert_eq!(out.stdout, b"hello");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cli_run_reports_a_trap_in_one_line_and_the_backtrace() {
    let module = guest("crasher");
    let out = common::output_within(
        std::process::Command::new(cli())
            .arg("run")
            .arg(&module)
            .args(["--", "trap"]),
        60,
    );
    assert_eq!(out.status.code(), Some(134));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    let mut lines = err.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!(
            "wasmproc: {}: trap: wasm `unreachable` instruction executed (in crasher::crash_on_purpose)",
            module.display()
        )
    );
    assert_eq!(lines.next().unwrap().trim(), "0: crasher::crash_on_purpose");
    assert_eq!(lines.next().unwrap().trim(), "1: crasher::main");
}

#[test]
fn cli_errors_say_what_is_wrong() {
    let run = |module: &std::path::Path| {
        let out =
            common::output_within(std::process::Command::new(cli()).arg("run").arg(module), 60);
        assert_eq!(out.status.code(), Some(125));
        assert!(out.stdout.is_empty());
        String::from_utf8(out.stderr).unwrap()
    };
    let missing = std::path::Path::new("no/such.wasm");
    assert_eq!(
        run(missing),
        "wasmproc: cannot run no/such.wasm: module no/such.wasm not found\n"
    );
    let readme = common::root().join("README.md");
    assert_eq!(
        run(&readme),
        format!(
            "wasmproc: cannot run {0}: {0} is not a WebAssembly file (no `\\0asm` header)\n",
            readme.display()
        )
    );
    // Refused before it is compiled (a cache of its own: nothing cached).
    let needs = guest("needs-import");
    let cache = common::scratch_dir("needs-import-cache");
    let out = common::output_within(
        std::process::Command::new(cli())
            .arg("run")
            .arg(&needs)
            .env("WASMPROC_CACHE_DIR", &cache),
        60,
    );
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "wasmproc: cannot run {0}: {0} imports `example:missing/clock`, which this host does \
             not provide (it provides `wasi_snapshot_preview1` to a core module; WASI 0.2's cli, \
             clocks, filesystem, io, random and sockets and `wasmproc:guest/ipc` (0.1, 0.2, 0.3) to a \
             component)\n",
            needs.display()
        )
    );
    assert_eq!(
        std::fs::read_dir(&cache).map_or(0, |d| d.count()),
        0,
        "nothing compiled"
    );
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn cli_exec_runs_a_pipeline_and_names_a_failing_stage() {
    let tool = tool_p1().display().to_string();
    let out = common::output_within(
        std::process::Command::new(cli())
            .arg("exec")
            .arg(format!("{tool} echo a b | {tool} upper")),
        60,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"A B\n");

    let out = common::output_within(
        std::process::Command::new(cli())
            .arg("exec")
            .arg(format!("{tool} echo a | {tool} exit 3 | {tool} cat")),
        60,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!("wasmproc: stage 2 ({tool}): exit code 3\n")
    );
}

/// 100 MB through a guest's stdin and stdout, with the host measured in its
/// own process: streaming never holds the data whole.
#[tokio::test]
async fn spawn_streams_100_mb_through_a_guest_in_bounded_memory() {
    within(180, async {
        let tool = guest("wasi-tool");
        let stdout = common::run_helper("stream-probe", [tool.as_os_str(), "100".as_ref()]).await;
        let line = stdout.lines().last().unwrap();
        assert_eq!(
            common::parse_kib(line, "bytes"),
            100 * 1024 * 1024,
            "{line}"
        );
        assert!(line.contains(" same=true "), "{line}");
        let peak = common::parse_kib(line, "peak_rss_kib");
        assert!(
            peak < 48 * 1024,
            "the host peaked at {peak} KiB moving 100 MB"
        );
    })
    .await;
}

/// Tests with a deadline run one at a time, so a busy machine cannot make
/// them flaky.
static DEADLINES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn timeout_stops_a_guest_that_loops_forever() {
    let _one_at_a_time = DEADLINES.lock().await;
    within(60, async {
        for tool in tools() {
            let started = Instant::now();
            let status = Command::new(&tool)
                .arg("spin")
                .timeout(Duration::from_secs(1))
                .status()
                .await
                .unwrap();
            let took = started.elapsed();
            assert_eq!(
                status,
                ExitStatus::TimedOut {
                    after: Duration::from_secs(1)
                }
            );
            assert_eq!(status.to_string(), "timed out after 1s");
            assert!(took < Duration::from_secs(2), "took {took:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn stdin_can_be_a_file_and_stdout_a_pipe() {
    within(60, async {
        let dir = common::scratch_dir("stdio");
        std::fs::write(dir.join("in.txt"), "from a file\n").unwrap();
        let mut child = Command::new(guest("wasi-tool"))
            .arg("upper")
            .stdin(std::fs::File::open(dir.join("in.txt")).unwrap())
            .stdout(Stdio::piped())
            .spawn()
            .await
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut text)
            .await
            .unwrap();
        assert_eq!(text, "FROM A FILE\n");
        assert!(child.wait().await.success());
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
