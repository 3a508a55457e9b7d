//! The core: guests in their own processes, messages through the relay.

mod common;

use common::{guest, recv_text, within};
use std::collections::BTreeSet;
use std::time::Duration;
use wasmproc::{ExitStatus, Host, InboxItem};

#[tokio::test]
async fn parent_and_guest_exchange_messages() {
    within(60, async {
        let host = Host::new();
        let echo = host
            .command(guest("echo"))
            .name("echo")
            .fork()
            .await
            .unwrap();
        echo.send(b"hello".to_vec()).unwrap();
        echo.send_value(&(7u32, "seven")).unwrap();
        match echo.recv().await {
            Some(InboxItem::Message {
                from,
                from_name,
                request,
                payload,
            }) => {
                assert_eq!(request, None);
                assert_eq!(from, echo.id());
                assert_eq!(from_name.as_deref(), Some("echo"));
                assert_eq!(payload, b"hello");
            }
            other => panic!("expected the echo, got {other:?}"),
        }
        let value: (u32, String) = echo.recv_value().await.unwrap();
        assert_eq!(value, (7, "seven".to_owned()));
        echo.kill();
        assert_eq!(
            echo.wait().await,
            ExitStatus::Killed {
                signal: libc::SIGKILL,
                by_host: true
            }
        );
        // After the end, nothing more arrives and sends fail.
        assert!(echo.recv().await.is_none());
        assert_eq!(
            echo.send(b"late".to_vec()),
            Err(wasmproc::SendError::Exited)
        );
    })
    .await;
}

#[tokio::test]
async fn large_and_small_messages_keep_their_bytes_and_their_order() {
    within(60, async {
        let host = Host::new();
        let echo = host.command(guest("echo")).fork().await.unwrap();
        // Around the size past which payloads skip the batch buffer, and
        // well past it, mixed with small ones.
        let sizes = [
            0usize,
            65_535,
            3,
            65_536,
            65_537,
            1 << 20,
            7,
            3 << 20,
            100_000,
            1,
        ];
        let payloads: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| (0..len).map(|j| ((i * 31 + j) % 251) as u8).collect())
            .collect();
        for payload in &payloads {
            echo.send(payload.clone()).unwrap();
        }
        for (i, sent) in payloads.iter().enumerate() {
            match echo.recv().await {
                Some(InboxItem::Message { payload, .. }) => {
                    assert_eq!(payload.len(), sent.len(), "message {i}");
                    assert!(payload == *sent, "message {i} changed on the way");
                }
                other => panic!("expected echo {i}, got {other:?}"),
            }
        }
        // The payloads up to 2 MiB went through the rings of the runner's
        // shared memory, which gives their pages back once idle for 2 s:
        // only the page of the rings' tails stays.
        let shared = || shared_memory_kib(echo.pid());
        assert!(shared() >= 1024, "{} KiB", shared());
        let idle = std::time::Instant::now();
        while shared() != 4 {
            assert!(
                idle.elapsed() < Duration::from_secs(10),
                "the runner still maps {} KiB of shared memory",
                shared()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        echo.kill();
    })
    .await;
}

/// The shared memory `pid` has mapped (`RssShmem`), in KiB.
fn shared_memory_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("RssShmem:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssShmem in /proc/PID/status")
}

#[tokio::test]
async fn guests_talk_through_the_relay_by_name_and_by_id() {
    within(60, async {
        let host = Host::new();
        let pong = host
            .command(guest("pingpong"))
            .args(["pong", "200"])
            .name("pong")
            .fork()
            .await
            .unwrap();
        let ping = host
            .command(guest("pingpong"))
            .args(["ping", "pong", "200"])
            .fork()
            .await
            .unwrap();
        assert_eq!(ping.recv_value::<(u64, bool)>().await.unwrap(), (200, true));
        assert_eq!(pong.recv_value::<(u64, bool)>().await.unwrap(), (200, true));
        assert!(ping.wait().await.success());
        assert!(pong.wait().await.success());

        // The same by id: a number on the command line is a guest id.
        let pong = host
            .command(guest("pingpong"))
            .args(["pong", "50"])
            .fork()
            .await
            .unwrap();
        let ping = host
            .command(guest("pingpong"))
            .args(["ping", &pong.id().0.to_string(), "50"])
            .fork()
            .await
            .unwrap();
        assert_eq!(ping.recv_value::<(u64, bool)>().await.unwrap(), (50, true));
        assert_eq!(pong.recv_value::<(u64, bool)>().await.unwrap(), (50, true));
        assert_eq!(ping.wait().await, ExitStatus::Exited { code: 0 });
    })
    .await;
}

#[tokio::test]
async fn ten_thousand_messages_arrive_complete_and_in_order_in_few_writes() {
    within(120, async {
        let host = Host::new();
        let sink = host
            .command(guest("pingpong"))
            .args(["sink", "10000"])
            .name("sink")
            .fork()
            .await
            .unwrap();
        let stream = host
            .command(guest("pingpong"))
            .args(["stream", "sink", "10000", "32"])
            .fork()
            .await
            .unwrap();
        assert_eq!(
            sink.recv_value::<(u64, bool)>().await.unwrap(),
            (10_000, true)
        );
        assert_eq!(
            stream.recv_value::<(u64, bool)>().await.unwrap(),
            (10_000, true)
        );
        assert!(sink.wait().await.success());
        assert!(stream.wait().await.success());
        // Every message, answer and launch spec is a frame the host wrote;
        // batching puts many in one write.
        let (frames, writes) = wasmproc::testing::write_stats(&host);
        assert!(frames >= 10_000, "frames written: {frames}");
        assert!(
            writes * 4 < frames,
            "{frames} frames took {writes} writes: batching is not at work"
        );
    })
    .await;
}

#[tokio::test]
async fn a_ring_of_one_hundred_guests() {
    within(120, async {
        let host = Host::new();
        let n = 100;
        let forks = (0..n).map(|i| {
            let mut command = host.command(guest("ring"));
            command
                .name(format!("ring-{i}"))
                .arg(format!("ring-{}", (i + 1) % n));
            async move { command.fork().await.unwrap() }
        });
        let ring = futures_util::future::join_all(forks).await;
        for guest in &ring {
            guest.send(b"go".to_vec()).unwrap();
        }
        for (i, guest) in ring.iter().enumerate() {
            assert_eq!(
                recv_text(guest).await,
                format!("ring-{i}<-ring-{}", (i + n - 1) % n)
            );
        }
        for guest in &ring {
            assert_eq!(guest.wait().await, ExitStatus::Exited { code: 0 });
        }
    })
    .await;
}

#[tokio::test]
async fn a_trap_names_the_guest_function_and_others_keep_working() {
    within(60, async {
        let host = Host::new();
        let echo = host.command(guest("echo")).fork().await.unwrap();
        let crasher = host
            .command(guest("crasher"))
            .arg("wait")
            .fork()
            .await
            .unwrap();
        crasher.send(b"go".to_vec()).unwrap();
        assert_eq!(recv_text(&crasher).await, "about to trap");
        let status = crasher.wait().await;
        let ExitStatus::Trapped { message, backtrace } = &status else {
            panic!("expected a trap, got {status}");
        };
        assert_eq!(message, "wasm `unreachable` instruction executed");
        assert_eq!(backtrace[0], "crasher::crash_on_purpose");
        assert_eq!(backtrace[1], "crasher::main");
        assert_eq!(
            status.to_string(),
            "trap: wasm `unreachable` instruction executed (in crasher::crash_on_purpose)"
        );

        echo.send(b"still there?".to_vec()).unwrap();
        assert_eq!(recv_text(&echo).await, "still there?");
        echo.kill();
    })
    .await;
}

#[tokio::test]
async fn sends_to_unknown_and_exited_guests_come_back_undeliverable() {
    within(60, async {
        let host = Host::new();
        let gone = host
            .command(guest("crasher"))
            .args(["exit", "0"])
            .name("gone")
            .fork()
            .await
            .unwrap();
        assert!(gone.wait().await.success());
        let echo = host
            .command(guest("echo"))
            .name("here")
            .fork()
            .await
            .unwrap();
        let postman = host
            .command(guest("postman"))
            .args(["nobody", "gone", &gone.id().0.to_string(), "here", "424242"])
            .fork()
            .await
            .unwrap();
        let mut lines = Vec::new();
        for _ in 0..5 {
            lines.push(recv_text(&postman).await);
        }
        lines.sort();
        let gone_id = format!("#{}", gone.id().0);
        let mut expected = vec![
            format!("{gone_id}: recipient exited"),
            "#424242: unknown recipient".to_owned(),
            "gone: recipient exited".to_owned(),
            "here: reply".to_owned(),
            "nobody: unknown recipient".to_owned(),
        ];
        expected.sort();
        assert_eq!(lines, expected);
        assert!(postman.wait().await.success());
        echo.kill();
    })
    .await;
}

#[tokio::test]
async fn a_runner_killed_from_outside_is_reported_and_nothing_else_stops() {
    within(60, async {
        let host = Host::new();
        let victim = host
            .command(guest("echo"))
            .name("victim")
            .fork()
            .await
            .unwrap();
        let other = host.command(guest("echo")).fork().await.unwrap();
        // Make sure the victim runs before killing it.
        victim.send(b"up?".to_vec()).unwrap();
        assert_eq!(recv_text(&victim).await, "up?");
        // SAFETY: kill(2) on a pid this test started.
        assert_eq!(unsafe { libc::kill(victim.pid() as i32, libc::SIGKILL) }, 0);
        assert_eq!(
            victim.wait().await,
            ExitStatus::Killed {
                signal: libc::SIGKILL,
                by_host: false
            }
        );
        assert_eq!(
            victim.wait().await.to_string(),
            "killed by SIGKILL (9) from outside"
        );
        other.send(b"and you?".to_vec()).unwrap();
        assert_eq!(recv_text(&other).await, "and you?");
        // Its name is free again, and now means "exited".
        assert!(!wasmproc::testing::is_registered(&host, "victim"));
        other.kill();
    })
    .await;
}

#[tokio::test]
async fn a_missing_module_and_a_taken_name_are_clear_errors() {
    within(60, async {
        let host = Host::new();
        let err = host
            .command("no/such/module.wasm")
            .fork()
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "module no/such/module.wasm not found");
        let first = host
            .command(guest("echo"))
            .name("dup")
            .fork()
            .await
            .unwrap();
        let err = host
            .command(guest("echo"))
            .name("dup")
            .fork()
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "a guest named `dup` is already running");
        first.kill();
    })
    .await;
}

/// The host's own memory, measured in a separate host process: a guest that
/// never reads is offered 100,000 messages of 4 KiB (400 MB); the host holds
/// at most its bounded mailbox (16 MiB) for it, the flooder hears `mailbox
/// full`, and a third pair's 1,000 round trips all complete meanwhile.
#[tokio::test]
async fn a_flood_at_a_guest_that_never_reads_keeps_host_memory_bounded() {
    within(120, async {
        let dir = common::root().join("guests/target/wasm32-wasip2/release");
        let _ = guest("crasher");
        let args = [
            dir.as_os_str(),
            "100000".as_ref(),
            "4096".as_ref(),
            "1000".as_ref(),
        ];
        let stdout = common::run_helper("flood-probe", args).await;
        let line = stdout.lines().last().unwrap();
        // The pair finished in order; the flooder saw its sends refused.
        assert!(line.starts_with("pair=1000,true flood_exit=1 "), "{line}");
        let peak_kib = common::parse_kib(line, "peak_rss_kib");
        assert!(
            peak_kib < 64 * 1024,
            "the host peaked at {peak_kib} KiB with 400 MB offered to an idle guest"
        );
    })
    .await;
}

#[tokio::test]
async fn a_pooled_host_forks_from_runners_started_ahead_and_refills() {
    within(60, async {
        let host = Host::with_pool(4);
        for round in 0..3 {
            let mut echoes = Vec::new();
            for _ in 0..6 {
                echoes.push(host.command(guest("echo")).fork().await.unwrap());
            }
            for (i, echo) in echoes.iter().enumerate() {
                echo.send(format!("{round}.{i}").into_bytes()).unwrap();
            }
            for (i, echo) in echoes.iter().enumerate() {
                assert_eq!(recv_text(echo).await, format!("{round}.{i}"));
                echo.kill();
                assert_eq!(
                    echo.wait().await,
                    ExitStatus::Killed {
                        signal: libc::SIGKILL,
                        by_host: true
                    }
                );
            }
        }
        // A fork that sets its own stdio does not take a pooled runner.
        let out = host
            .command(common::tool_p1())
            .args(["echo", "own", "stdio"])
            .output()
            .await
            .unwrap();
        assert_eq!(out.stdout, b"own stdio\n");
    })
    .await;
}

/// The precompiled artifact the runner `pid` has mapped, if any.
fn mapped_artifact(pid: u32) -> Option<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    // The path is the rest of the line from its first `/` (it may hold spaces).
    maps.lines()
        .filter(|line| line.ends_with(".cwasm"))
        .find_map(|line| line.find('/').map(|at| line[at..].to_owned()))
}

/// Once `host`'s pool of two is full and each waiting runner has an
/// artifact mapped, and `done` accepts them: those artifacts.
async fn preloaded(host: &Host, done: impl Fn(&BTreeSet<String>) -> bool) -> BTreeSet<String> {
    loop {
        let pids = wasmproc::testing::pooled_runners(host);
        let mapped: Option<BTreeSet<String>> =
            pids.iter().map(|&pid| mapped_artifact(pid)).collect();
        if let Some(mapped) = mapped.filter(|m| pids.len() == 2 && done(m)) {
            return mapped;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn pooled_runners_load_the_last_artifact_ahead_and_still_run_any_other() {
    within(60, async {
        let host = &Host::with_pool(2);
        let echo = || async {
            let echo = host.command(guest("echo")).fork().await.unwrap();
            echo.send(b"ahead".to_vec()).unwrap();
            assert_eq!(recv_text(&echo).await, "ahead");
            echo.kill();
            echo.wait().await;
        };
        let exit_with = |code: i32| async move {
            let tool = host
                .command(common::tool_p1())
                .args(["exit", &code.to_string()])
                .fork()
                .await
                .unwrap();
            assert_eq!(tool.wait().await, ExitStatus::Exited { code });
        };
        // The first fork starts its own runner; the pool fills with runners
        // that map the echo guest's artifact while they wait.
        echo().await;
        let first = preloaded(host, |_| true).await;
        assert_eq!(first.len(), 1, "{first:?}");
        // A pooled runner runs what it loaded, and also another module: a
        // core module where it loaded a component.
        echo().await;
        exit_with(3).await;
        // A runner started since loads that core module, and still runs a
        // component.
        let second = preloaded(host, |mapped| !mapped.is_subset(&first)).await;
        assert_eq!(second.difference(&first).count(), 1, "{second:?}");
        echo().await;
        exit_with(4).await;
    })
    .await;
}

#[tokio::test]
async fn fork_all_registers_every_guest_before_any_runs_or_starts_none() {
    within(60, async {
        let host = Host::new();
        // The first guest sends to the last one at once: the name is known.
        let mut commands = vec![host.command(guest("postman")), host.command(guest("echo"))];
        commands[0].args(["late"]);
        commands[1].name("late");
        let children = host.fork_all(&mut commands).await.unwrap();
        assert_eq!(recv_text(&children[0]).await, "late: reply");
        assert!(children[0].wait().await.success());
        children[1].kill();
        children[1].wait().await;
        assert_eq!(wasmproc::testing::live_guests(&host), 0);

        // A module that is missing: nothing starts, and the error says which.
        let missing = common::root().join("no-such-guest.wasm");
        let mut commands = vec![
            host.command(guest("echo")),
            host.command(&missing),
            host.command(guest("echo")),
        ];
        commands[0].name("first");
        let err = host.fork_all(&mut commands).await.unwrap_err();
        assert_eq!(err.index, 1);
        assert_eq!(
            err.to_string(),
            format!("module {} not found", missing.display())
        );
        assert_eq!(wasmproc::testing::live_guests(&host), 0);
        // Its name was never taken.
        let first = host
            .command(guest("echo"))
            .name("first")
            .fork()
            .await
            .unwrap();
        first.kill();
        first.wait().await;
    })
    .await;
}

/// Guest code runs uninstrumented and never yields while it computes: the
/// runner still moves its messages both ways meanwhile.
#[tokio::test]
async fn a_computing_guest_still_sends_and_receives_while_it_computes() {
    within(60, async {
        let host = Host::new();
        // It sends once, then computes forever without calling the host:
        // the message can only leave while it computes.
        let sender = host
            .command(guest("busy"))
            .arg("send")
            .fork()
            .await
            .unwrap();
        assert_eq!(recv_text(&sender).await, "before");
        assert_eq!(sender.try_wait(), None, "still computing");
        sender.kill();
        // It computes in slices and only looks at its inbox between them,
        // never waiting on it: what arrives still reaches it.
        let poller = host
            .command(guest("busy"))
            .arg("poll")
            .fork()
            .await
            .unwrap();
        for text in ["one", "two", "three"] {
            poller.send(text.as_bytes().to_vec()).unwrap();
            assert_eq!(recv_text(&poller).await, text);
        }
        poller.send(b"stop".to_vec()).unwrap();
        assert_eq!(poller.wait().await, ExitStatus::Exited { code: 0 });
    })
    .await;
}

/// Descriptors of this process whose link reads `kind:[…]` (`pipe`, `socket`).
fn own_descriptors(kind: &str) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|link| link.to_string_lossy().starts_with(&format!("{kind}:[")))
        .count()
}

/// The fleet the test below runs in a process of its own, under a limit
/// of 256 open files: 150 guests on pipes alone would need 300.
#[tokio::test]
async fn past_half_the_open_files_limit_each_guest_gets_one_socket_and_works_the_same() {
    if std::env::var_os("WASMPROC_TEST_LOW_FILES_LIMIT").is_none() {
        // `ulimit -n` sets the soft and the hard limit: the host cannot raise it.
        let out = common::output_within(
            std::process::Command::new("sh")
                .arg("-c")
                .arg("ulimit -n 256 && exec \"$0\" --exact \"$1\" --nocapture")
                .arg(std::env::current_exe().unwrap())
                .arg("past_half_the_open_files_limit_each_guest_gets_one_socket_and_works_the_same")
                .env("WASMPROC_TEST_LOW_FILES_LIMIT", "1"),
            120,
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    within(100, async {
        const GUESTS: usize = 150;
        let (pipes, sockets) = (own_descriptors("pipe"), own_descriptors("socket"));
        let host = Host::new();
        let echo = guest("echo");
        let mut guests = Vec::new();
        for _ in 0..GUESTS {
            guests.push(host.command(&echo).fork().await.unwrap());
        }
        for (i, child) in guests.iter().enumerate() {
            child.send(format!("guest {i}").into_bytes()).unwrap();
        }
        for (i, child) in guests.iter().enumerate() {
            assert_eq!(recv_text(child).await, format!("guest {i}"));
        }
        let on_pipes = (own_descriptors("pipe") - pipes) / 2;
        let on_sockets = own_descriptors("socket") - sockets;
        println!("{on_pipes} guests on pipes, {on_sockets} on sockets");
        assert_eq!(on_pipes + on_sockets, GUESTS);
        // Pipes up to descriptor 128, half the limit: fewer than 64 guests.
        assert!((40..64).contains(&on_pipes), "{on_pipes} on pipes");
        // The last guest is on a socket: a 1 MiB message goes there and back
        // whole; and two more guests, on sockets too, talk through the relay.
        let last = guests.last().unwrap();
        let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        last.send(big.clone()).unwrap();
        match last.recv().await {
            Some(InboxItem::Message { payload, .. }) => assert!(payload == big),
            other => panic!("expected the 1 MiB echo, got {other:?}"),
        }
        let pong = host
            .command(guest("pingpong"))
            .args(["pong", "200"])
            .name("pong")
            .fork()
            .await
            .unwrap();
        let ping = host
            .command(guest("pingpong"))
            .args(["ping", "pong", "200"])
            .fork()
            .await
            .unwrap();
        assert_eq!(ping.recv_value::<(u64, bool)>().await.unwrap(), (200, true));
        assert_eq!(pong.recv_value::<(u64, bool)>().await.unwrap(), (200, true));
        assert_eq!(ping.wait().await, ExitStatus::Exited { code: 0 });
        for child in &guests {
            child.kill();
        }
        for child in &guests {
            child.wait().await;
        }
    })
    .await;
}
