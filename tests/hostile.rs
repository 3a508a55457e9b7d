//! The hostile battery: guests that try to escape, hoard, spin or flood,
//! and runners that lie. Each ends as an exit status; the host goes on.

mod common;

use std::time::Duration;

use common::{guest, recv_text, tool_p1, within};
use wasmproc::{Command, ExitStatus, Host, Limit};

/// The probe in the real runner, with the walls asked for: the test process
/// as the other process to reach, `/etc/passwd` as the file outside, and
/// `rw` as a read-write folder.
async fn probe(rw: &std::path::Path, landlock: bool, seccomp: bool) -> wasmproc::Output {
    let mut command = Command::new(guest("echo"));
    wasmproc::testing::probe_sandbox_with(&mut command, landlock, seccomp)
        .args([
            std::process::id().to_string(),
            "/etc/passwd".to_owned(),
            rw.display().to_string(),
        ])
        .preopen(rw, "/data", false)
        .output()
        .await
        .unwrap()
}

/// The second wall, proven in the real runner binary after its real
/// hardening: the probe mode tries each forbidden operation natively.
#[tokio::test]
async fn the_hardened_runner_cannot_exec_fork_open_sockets_leave_its_files_or_signal_others() {
    within(60, async {
        let rw = common::scratch_dir("probe-rw");
        let out = probe(&rw, true, true).await;
        assert_eq!(out.status, ExitStatus::Exited { code: 0 });
        // As root (how CI runs) the runner clears its bounding set too; a
        // process without privilege cannot, and holds no capability anyway.
        // SAFETY: geteuid only reads this process's user id.
        let capabilities = if unsafe { libc::geteuid() } == 0 {
            "capabilities: effective 0x0, permitted 0x0, bounding 0x0\n".to_owned()
        } else {
            format!(
                "capabilities: effective 0x0, permitted 0x0, bounding {:#x}\n",
                own_bounding_set()
            )
        };
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            concat!(
                "execve: denied: Operation not permitted (os error 1)\n",
                "fork: denied: Operation not permitted (os error 1)\n",
                "socket: denied: Operation not permitted (os error 1)\n",
                "tcp connect: denied: Operation not permitted (os error 1)\n",
                "open outside: denied: Permission denied (os error 13)\n",
                "kill other: denied: Operation not permitted (os error 1)\n",
                "ptrace: denied: Operation not permitted (os error 1)\n",
                "kill self: ALLOWED (permitted)\n",
                "io_uring: denied: Operation not permitted (os error 1)\n",
                "packet socket: denied: Operation not permitted (os error 1)\n",
                "sigqueue other: denied: Operation not permitted (os error 1)\n",
                "pidfd_open other: denied: Operation not permitted (os error 1)\n",
                "pidfd_getfd: denied: Operation not permitted (os error 1)\n",
                "open_tree: denied: Operation not permitted (os error 1)\n",
                "clone new namespace: denied: Operation not permitted (os error 1)\n",
                "sethostname: denied: Operation not permitted (os error 1)\n",
                "adjtimex: denied: Operation not permitted (os error 1)\n",
                "setpriority other: denied: Operation not permitted (os error 1)\n",
                "memfd_create: denied: Operation not permitted (os error 1)\n",
                "vfork: denied: Operation not permitted (os error 1)\n",
                "execveat: denied: Operation not permitted (os error 1)\n",
                "unshare: denied: Operation not permitted (os error 1)\n",
                "setns: denied: Operation not permitted (os error 1)\n",
                "mount: denied: Operation not permitted (os error 1)\n",
                "move_mount: denied: Operation not permitted (os error 1)\n",
                "fsopen: denied: Operation not permitted (os error 1)\n",
                "tgkill other: denied: Operation not permitted (os error 1)\n",
                "pidfd_send_signal: denied: Operation not permitted (os error 1)\n",
                "process_vm_readv: denied: Operation not permitted (os error 1)\n",
                "open_by_handle_at: denied: Operation not permitted (os error 1)\n",
                "bpf: denied: Operation not permitted (os error 1)\n",
                "perf_event_open: denied: Operation not permitted (os error 1)\n",
                "userfaultfd: denied: Operation not permitted (os error 1)\n",
                "keyctl: denied: Operation not permitted (os error 1)\n",
                "init_module: denied: Operation not permitted (os error 1)\n",
                "TIOCSTI: denied: Operation not permitted (os error 1)\n",
                "mknod: denied: Operation not permitted (os error 1)\n",
                "setuid chmod: denied: Operation not permitted (os error 1)\n",
            )
            .to_owned()
                + &capabilities
        );
        // Nothing was made in the read-write folder but the plain file.
        assert!(!rw.join("node").exists());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(rw.join("suid")).unwrap().permissions(),
        );
        assert_eq!(mode & 0o7777, 0o755);
    })
    .await;
}

/// Which part of the second wall answers for each route the probe tries:
/// `S` seccomp, `L` Landlock (capabilities are dropped in every mode).
const ROUTES: &[(&str, &str)] = &[
    ("execve", "SL"),
    ("fork", "S"),
    ("socket", "S"),
    ("tcp connect", "SL"),
    ("open outside", "L"),
    ("kill other", "SL"),
    ("ptrace", "SL"),
    ("io_uring", "S"),
    ("packet socket", "S"),
    ("sigqueue other", "SL"),
    ("pidfd_open other", "S"),
    ("pidfd_getfd", "S"),
    ("open_tree", "S"),
    ("clone new namespace", "S"),
    ("sethostname", "S"),
    ("adjtimex", "S"),
    ("setpriority other", "S"),
    ("memfd_create", "S"),
    ("vfork", "S"),
    ("execveat", "S"),
    ("unshare", "S"),
    ("setns", "S"),
    ("mount", "S"),
    ("move_mount", "S"),
    ("fsopen", "S"),
    ("tgkill other", "SL"),
    ("pidfd_send_signal", "S"),
    ("process_vm_readv", "S"),
    ("open_by_handle_at", "S"),
    ("bpf", "S"),
    ("perf_event_open", "S"),
    ("userfaultfd", "S"),
    ("keyctl", "S"),
    ("init_module", "S"),
    ("TIOCSTI", "S"),
    ("mknod", "S"),
    ("setuid chmod", "S"),
];

/// Each wall alone holds what it answers for: the probe runs with seccomp
/// only, Landlock only and both, and every route an enabled wall answers
/// for fails. That the other wall is really down shows in a route it alone
/// would stop succeeding.
#[tokio::test]
async fn each_wall_alone_stops_the_routes_it_answers_for() {
    within(120, async {
        for (landlock, seccomp, must_open) in [
            (false, true, "open outside"),
            (true, false, "io_uring"),
            (true, true, ""),
        ] {
            let rw = common::scratch_dir(&format!("walls-{landlock}-{seccomp}"));
            let out = probe(&rw, landlock, seccomp).await;
            let mode = format!("landlock {landlock}, seccomp {seccomp}");
            assert_eq!(out.status, ExitStatus::Exited { code: 0 }, "{mode}");
            let text = String::from_utf8(out.stdout).unwrap();
            let result = |route: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(&format!("{route}: ")))
                    .unwrap_or_else(|| panic!("{mode}: no `{route}` in\n{text}"))
                    .to_owned()
            };
            for (route, walls) in ROUTES {
                let answered =
                    (seccomp && walls.contains('S')) || (landlock && walls.contains('L'));
                if answered {
                    let got = result(route);
                    // Refused by a wall, not by the far end.
                    assert!(
                        got.starts_with("denied: ") && !got.contains("Connection refused"),
                        "{mode}: {route}: {got}"
                    );
                }
            }
            assert_eq!(result("kill self"), "ALLOWED (permitted)", "{mode}");
            assert!(
                result("capabilities").starts_with("effective 0x0, permitted 0x0"),
                "{mode}"
            );
            if !must_open.is_empty() {
                let got = result(must_open);
                assert!(got.starts_with("ALLOWED"), "{mode}: {must_open}: {got}");
            }
        }
    })
    .await;
}

/// A system call on neither the allow-list nor the deny-list stops the
/// runner, and its status names the call.
#[tokio::test]
async fn a_call_outside_the_allow_list_stops_the_runner_and_is_named() {
    within(60, async {
        let mut command = Command::new(guest("echo"));
        let out = wasmproc::testing::probe_sandbox(&mut command)
            .args(["unlisted"])
            .output()
            .await
            .unwrap();
        assert_eq!(
            out.status.to_string(),
            "stopped: the sandbox refused system call uname"
        );
        assert_eq!(out.status.process_code(), 159);
    })
    .await;
}

/// This process's capability bounding set, which a runner started without
/// privilege inherits.
fn own_bounding_set() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap()
}

#[tokio::test]
async fn filesystem_escapes_are_refused_and_a_read_only_folder_refuses_writes() {
    within(60, async {
        let dir = common::scratch_dir("fs");
        let (rw, ro) = (dir.join("rw"), dir.join("ro"));
        std::fs::create_dir_all(&rw).unwrap();
        std::fs::create_dir_all(&ro).unwrap();
        std::fs::write(dir.join("secret.txt"), "outside").unwrap();
        std::fs::write(rw.join("mine.txt"), "inside").unwrap();
        std::fs::write(ro.join("ro.txt"), "read me").unwrap();
        std::os::unix::fs::symlink("../secret.txt", rw.join("rel-link")).unwrap();
        std::os::unix::fs::symlink(dir.join("secret.txt"), rw.join("abs-link")).unwrap();
        std::os::unix::fs::symlink("/etc", rw.join("etc-link")).unwrap();
        std::os::unix::fs::symlink("..", rw.join("up")).unwrap();

        for tool in [tool_p1(), guest("wasi-tool")] {
            let run = |args: &[&str]| {
                let mut command = Command::new(&tool);
                command
                    .args(args.iter().copied())
                    .preopen(&rw, "/data", false)
                    .preopen(&ro, "/ro", true);
                async move { command.output().await.unwrap() }
            };
            let read = run(&["read", "/data/mine.txt"]).await;
            assert_eq!(read.stdout, b"inside");
            let read = run(&["read", "/ro/ro.txt"]).await;
            assert_eq!(read.stdout, b"read me");
            for path in [
                "/data/../secret.txt",
                "../secret.txt",
                "/data/rel-link",
                "/data/abs-link",
                "/data/etc-link/passwd",
                "/data/up/secret.txt",
                "/etc/passwd",
                "/proc/self/environ",
                "/proc/self/mem",
            ] {
                let out = run(&["read", path]).await;
                assert_eq!(out.status, ExitStatus::Exited { code: 1 }, "read {path}");
                assert!(out.stdout.is_empty(), "read {path} leaked {:?}", out.stdout);
            }
            let out = run(&["write", "/ro/new.txt", "x"]).await;
            assert_eq!(out.status, ExitStatus::Exited { code: 1 });
            let out = run(&["write", "/ro/ro.txt", "overwritten"]).await;
            assert_eq!(out.status, ExitStatus::Exited { code: 1 });
            let out = run(&["write", "/data/up/escaped.txt", "x"]).await;
            assert_eq!(out.status, ExitStatus::Exited { code: 1 });
        }
        assert!(!ro.join("new.txt").exists());
        assert_eq!(
            std::fs::read_to_string(ro.join("ro.txt")).unwrap(),
            "read me"
        );
        assert!(!dir.join("escaped.txt").exists());
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

#[tokio::test]
async fn a_memory_bomb_ends_with_memory_limit_and_the_host_carries_on() {
    within(60, async {
        let host = Host::new();
        let echo = host.command(guest("echo")).fork().await.unwrap();
        for tool in [tool_p1(), guest("wasi-tool")] {
            let out = host
                .command(&tool)
                .arg("grow")
                .max_memory(64 * 1024 * 1024)
                .output()
                .await
                .unwrap();
            let ExitStatus::LimitExceeded(Limit::Memory { limit, requested }) = out.status else {
                panic!("expected the memory limit, got {}", out.status);
            };
            assert_eq!(limit, 64 * 1024 * 1024);
            assert!(requested > limit);
            assert!(
                out.status
                    .to_string()
                    .starts_with("stopped: memory limit of 64 MiB exceeded (asked for "),
                "{}",
                out.status
            );
        }
        echo.send(b"fine".to_vec()).unwrap();
        assert_eq!(recv_text(&echo).await, "fine");
        echo.kill();
    })
    .await;
}

#[tokio::test]
async fn a_one_gigabyte_message_is_refused_at_once() {
    within(60, async {
        let out = Command::new(guest("crasher"))
            .args(["big", "1024"])
            .max_memory(2 * 1024 * 1024 * 1024)
            .output()
            .await
            .unwrap();
        assert_eq!(out.status, ExitStatus::Exited { code: 0 });
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "send: SendError::TooLarge(16777216)\n"
        );
    })
    .await;
}

/// A guest killed by its timeout while it writes a 16 MiB message to a
/// parent that does not read: the timeout decides the status, not the frame
/// the kill cut in half.
#[tokio::test]
async fn a_timeout_during_a_16_mib_send_says_timed_out() {
    within(60, async {
        let child = Command::new(guest("crasher"))
            .args(["big", "16", "100"])
            .stdout(wasmproc::Stdio::Null)
            .timeout(Duration::from_secs(2))
            .fork()
            .await
            .unwrap();
        assert_eq!(child.wait().await.to_string(), "timed out after 2s");
    })
    .await;
}

/// What a memory probe printed: its one report line and the peaks, in KiB,
/// of the host's process and (when the probe measured it) of the runner's.
struct Peaks {
    report: String,
    host: u64,
    runner: Option<u64>,
}

/// Run probe `helper` with `args`, where `CRASHER` stands for the built
/// crasher guest.
async fn measure(helper: &str, args: &[&str]) -> Peaks {
    let crasher = guest("crasher");
    let args = args.iter().map(|a| {
        if *a == "CRASHER" {
            crasher.clone().into_os_string()
        } else {
            a.into()
        }
    });
    let stdout = common::run_helper(helper, args).await;
    let mut lines = stdout.lines();
    let report = lines.next().unwrap_or_default().to_owned();
    let host = common::parse_kib(lines.next().unwrap(), "peak_rss_kib");
    let runner = lines
        .next()
        .map(|line| common::parse_kib(line, "runner_peak_rss_kib"));
    println!("{helper} ({report}): host peak {host} KiB, runner peak {runner:?} KiB");
    Peaks {
        report,
        host,
        runner,
    }
}

/// A million sends to ids nobody has: each comes back `unknown recipient`,
/// and the host (measured in its own process) stays small.
#[tokio::test]
async fn a_million_sends_to_unknown_ids_come_back_and_host_memory_stays_bounded() {
    within(300, async {
        let peaks = measure("unknown-probe", &["CRASHER", "unknown", "1000000"]).await;
        assert_eq!(peaks.report, "1000000 notices: unknown recipient");
        assert!(
            peaks.host < 64 * 1024,
            "the host peaked at {} KiB",
            peaks.host
        );
    })
    .await;
}

/// 120 sends to a 16 MiB name: each comes back `unknown recipient` with the
/// name cut to 128 bytes (and a three-byte `…`), and the host does not hold
/// the name once per send.
#[tokio::test]
async fn sends_to_a_huge_name_come_back_short_and_the_host_stays_small() {
    within(300, async {
        let peaks = measure("unknown-probe", &["CRASHER", "longname", "16", "120"]).await;
        assert_eq!(
            peaks.report,
            "120 notices: unknown recipient, name of 131 bytes"
        );
        assert!(
            peaks.host < HOST_PEAK_KIB,
            "the host peaked at {} KiB",
            peaks.host
        );
    })
    .await;
}

/// 3,000 sends to a 1 MiB name, all sent before any notice is read: the
/// notices the guest's own runner holds repeat only the cut name.
#[tokio::test]
async fn the_runner_holding_notices_about_a_huge_name_stays_small() {
    within(300, async {
        let peaks = measure("unknown-probe", &["CRASHER", "longname", "1", "3000"]).await;
        assert_eq!(
            peaks.report,
            "3000 notices: unknown recipient, name of 131 bytes"
        );
        assert!(
            peaks.host < HOST_PEAK_KIB,
            "the host peaked at {} KiB",
            peaks.host
        );
        let runner = peaks.runner.expect("the runner's peak");
        assert!(
            runner < RUNNER_PEAK_KIB,
            "the runner peaked at {runner} KiB"
        );
    })
    .await;
}

/// A guest that monitors one guest (itself) five million times: the host
/// keeps one record.
#[tokio::test]
async fn monitoring_one_guest_five_million_times_keeps_the_host_small() {
    within(300, async {
        let args = [
            "--name", "watcher", "CRASHER", "monitor", "watcher", "5000000",
        ];
        let peaks = measure("unknown-probe", &args).await;
        assert_eq!(peaks.report, "monitored 5000000 times");
        assert!(
            peaks.host < MONITOR_PEAK_KIB,
            "the host peaked at {} KiB",
            peaks.host
        );
    })
    .await;
}

/// A guest that may talk to nobody sends to 30,000 distinct 64 KiB names:
/// each comes back, and the host keeps none of the names (they are longer
/// than any guest's, so they are cut before the allow-list sees them, and
/// what the allow-list remembers per sender is bounded anyway).
#[tokio::test]
async fn thirty_thousand_huge_refused_names_leave_the_host_small() {
    within(300, async {
        let args = ["--talks-to-nobody", "CRASHER", "names", "30000", "64"];
        let peaks = measure("unknown-probe", &args).await;
        assert_eq!(peaks.report, "30000 notices: unknown recipient");
        assert!(
            peaks.host < HOST_PEAK_KIB,
            "the host peaked at {} KiB",
            peaks.host
        );
    })
    .await;
}

/// 8 broadcasts of 16 MiB to 50 members that never read: the members share
/// one copy of each payload in the host.
#[tokio::test]
async fn broadcasts_to_members_that_never_read_share_one_copy_in_the_host() {
    within(300, async {
        let peaks = measure("broadcast-probe", &["CRASHER", "50", "8", "16"]).await;
        assert_eq!(peaks.report, "50 members, 8 broadcasts of 16 MiB");
        assert!(
            peaks.host < HOST_PEAK_KIB,
            "the host peaked at {} KiB",
            peaks.host
        );
    })
    .await;
}

/// What the host may peak at in the memory tests above: its own baseline
/// (about 80 MiB with the compiler loaded) plus 8 payloads of 16 MiB.
const HOST_PEAK_KIB: u64 = 320 * 1024;
/// What a guest's runner may peak at holding 3,000 notices.
const RUNNER_PEAK_KIB: u64 = 256 * 1024;
/// What the probe's host may peak at after five million monitors (about
/// 8 MiB, or 24 MiB when it compiles the module first): one record kept per
/// watcher and target, where one per call took 40 MB more.
const MONITOR_PEAK_KIB: u64 = 48 * 1024;

/// Each way a runner can lie ends that runner with `protocol violation`.
#[tokio::test]
async fn malformed_and_forged_frames_end_the_runner_as_a_protocol_violation() {
    within(60, async {
        let host = Host::with_runner(common::helper("fake-runner"));
        let cases = [
            (
                "oversize",
                "frame of 2147483647 bytes is over the 67174400-byte limit",
            ),
            ("lying-mark", "malformed frame of 100 bytes"),
            (
                "ring-outside",
                "frame of 65542 bytes: its payload of 65536 bytes at position 4194204 \
                 is not in the shared ring (4194304 bytes, read up to position 0)",
            ),
            ("truncated", "stream ended inside a frame"),
            ("garbage", "malformed frame of 60 bytes"),
            ("out-of-order", "expected Hello first, got Send"),
            ("second-hello", "a second Hello"),
            ("after-exit", "Send after the exit report"),
            (
                "over-limit",
                "a 1025-byte message, over the guest's 1024-byte limit",
            ),
            ("forged", ""),
        ];
        for (mode, reason) in cases {
            let child = host
                .command(guest("echo"))
                .arg(mode)
                .max_message_size(1024)
                .stdout(wasmproc::Stdio::Null)
                .stderr(wasmproc::Stdio::Null)
                .fork()
                .await
                .unwrap();
            let status = child.wait().await;
            let ExitStatus::ProtocolViolation { reason: got } = &status else {
                panic!("{mode}: expected a protocol violation, got {status}");
            };
            assert!(got.starts_with(reason), "{mode}: {got}");
        }
        // The real host goes on: a real runner still works.
        let echo = Command::new(guest("echo")).fork().await.unwrap();
        echo.send(b"still up".to_vec()).unwrap();
        assert_eq!(recv_text(&echo).await, "still up");
        echo.kill();
    })
    .await;
}

/// Tests with a deadline run one at a time.
static DEADLINES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn a_cpu_spinner_is_stopped_by_its_cpu_limit_while_others_keep_talking() {
    let _one_at_a_time = DEADLINES.lock().await;
    within(60, async {
        let host = Host::new();
        let spinner = host
            .command(guest("wasi-tool"))
            .arg("spin")
            .max_cpu(Duration::from_secs(1))
            .fork()
            .await
            .unwrap();
        let pong = host
            .command(guest("pingpong"))
            .args(["pong", "2000"])
            .name("pong")
            .fork()
            .await
            .unwrap();
        let ping = host
            .command(guest("pingpong"))
            .args(["ping", "pong", "2000"])
            .fork()
            .await
            .unwrap();
        assert_eq!(
            ping.recv_value::<(u64, bool)>().await.unwrap(),
            (2000, true)
        );
        assert!(pong.wait().await.success());
        let status = spinner.wait().await;
        assert_eq!(
            status,
            ExitStatus::LimitExceeded(Limit::Cpu {
                limit: Duration::from_secs(1)
            })
        );
        assert_eq!(status.to_string(), "stopped: CPU limit of 1s exceeded");
    })
    .await;
}

#[test]
fn sandbox_explain_prints_both_walls_from_the_policy_the_runner_applies() {
    let module = guest("echo");
    let out = common::output_within(
        std::process::Command::new(common::cli())
            .args([
                "sandbox",
                "explain",
                "--dir-ro",
                "/tmp::/data",
                "--env",
                "A=1",
            ])
            .args([
                "--max-memory",
                "64MiB",
                "--max-cpu",
                "10s",
                "--inbox-size",
                "100",
            ])
            .arg(&module),
        60,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for line in [
        "first wall (wasm + WASI capabilities):",
        "  args:       [\"echo.wasm\"]",
        "  env:        A=1 (nothing else)",
        "  folders:    /tmp as /data (read-only)",
        "  network:    none (sockets linked, every use refused)",
        "  limits:     memory 64 MiB, message 16 MiB, inbox 100 items / 64 MiB, CPU 10000 ms",
        "second wall (the runner process):",
        "              read folders /tmp",
        "              read-write folders nothing",
        "              clone only with CLONE_THREAD, clone3 ENOSYS, kill/tgkill/rt_sigqueueinfo/rt_tgsigqueueinfo only to itself, no ioctl TIOCSTI/TIOCLINUX, no set-id fchmod/fchmodat/fchmodat2/chmod, socketpair only AF_UNIX",
        "  process:    its own, dies with the host (SIGKILL on parent death), no new privileges, no capabilities (securebits locked)",
        "  rlimits:    RLIMIT_CORE 0, RLIMIT_NOFILE 256, RLIMIT_CPU 10",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    assert!(text.contains("  seccomp:    EPERM for execve, execveat, fork, vfork, ptrace,"));
}

#[test]
fn cli_limit_flags_stop_a_memory_bomb() {
    let out = common::output_within(
        std::process::Command::new(common::cli())
            .args(["run", "--max-memory", "32MiB"])
            .arg(tool_p1())
            .args(["--", "grow"]),
        60,
    );
    assert_eq!(out.status.code(), Some(122));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(": stopped: memory limit of 32 MiB exceeded (asked for "),
        "{err}"
    );
}
