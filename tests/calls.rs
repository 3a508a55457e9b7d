//! Calls: request/reply with a deadline, the callee watched, replies that
//! cannot be forged. Every test runs real guests in real runners.

mod common;

use std::time::{Duration, Instant};

use common::{cli, guest, output_within, recv_text, within};
use wasmproc::{Address, CallError, Child, Command, Host, InboxItem, ReplyError};

const SECOND: Duration = Duration::from_secs(1);
/// How long a guest asked to shut down may take before it is killed.
const GRACE: Duration = Duration::from_secs(10);

/// An `rpc` guest in `host` with these arguments, named `name`.
async fn rpc(host: &Host, name: &str, args: &[&str]) -> Child {
    rpc_with(host, name, args, |_| {}).await
}

/// The same, with more settings.
async fn rpc_with(
    host: &Host,
    name: &str,
    args: &[&str],
    settings: impl FnOnce(&mut Command),
) -> Child {
    let mut command = host.command(guest("rpc"));
    command.args(args.iter().copied()).name(name);
    settings(&mut command);
    command
        .fork()
        .await
        .unwrap_or_else(|err| panic!("cannot start {name}: {err}"))
}

/// A caller guest making one call, and the line it reports.
async fn call_from_guest(host: &Host, args: &[&str]) -> String {
    let mut all = vec!["call"];
    all.extend_from_slice(args);
    let caller = rpc(host, "caller", &all).await;
    let told = recv_text(&caller).await;
    caller.wait().await;
    told
}

#[tokio::test]
async fn a_call_round_trips_by_name_by_id_to_a_group_and_to_the_parent() {
    within(60, async {
        let host = Host::new();
        let svc = rpc(&host, "svc", &["serve", "echo"]).await;
        assert_eq!(
            call_from_guest(&host, &["svc", "by name", "5000"]).await,
            "ok by name"
        );
        let id = svc.id().0.to_string();
        assert_eq!(
            call_from_guest(&host, &[&id, "by id", "5000"]).await,
            "ok by id"
        );
        // The parent's side: `Child::call` and `Host::call`.
        assert_eq!(
            svc.call(b"from the parent".to_vec(), SECOND).await.unwrap(),
            b"from the parent"
        );
        assert_eq!(
            host.call(&Address::Name("svc".into()), b"by address".to_vec(), SECOND)
                .await
                .unwrap(),
            b"by address"
        );

        // A group: one member per call, round-robin.
        let mut pool = Vec::new();
        for n in 1..=3 {
            let name = format!("pool.{n}");
            let member = rpc_with(&host, &name, &["serve", "name"], |c| {
                c.group("pool");
            })
            .await;
            pool.push(member);
        }
        let mut answered = Vec::new();
        for _ in 0..6 {
            let reply = host
                .call(&Address::Group("pool".into()), Vec::new(), SECOND)
                .await
                .unwrap();
            answered.push(String::from_utf8(reply).unwrap());
        }
        assert_eq!(
            answered,
            ["pool.1", "pool.2", "pool.3", "pool.1", "pool.2", "pool.3"]
        );
        assert_eq!(
            call_from_guest(&host, &["group:pool", "x", "5000"]).await,
            "ok pool.1"
        );

        // A guest calls its parent, which answers once.
        let caller = rpc(&host, "asks-parent", &["call", "parent", "ping", "5000"]).await;
        let Some(InboxItem::Message {
            request: Some(request),
            payload,
            from,
            ..
        }) = caller.recv().await
        else {
            panic!("no call reached the parent");
        };
        assert_eq!((payload.as_slice(), from), (&b"ping"[..], caller.id()));
        caller.reply(request, b"pong".to_vec()).unwrap();
        assert_eq!(
            caller.reply(request, b"again".to_vec()),
            Err(ReplyError::AlreadyReplied)
        );
        assert_eq!(recv_text(&caller).await, "ok pong");
        assert!(caller.wait().await.success());

        for guest in pool.iter().chain([&svc]) {
            assert!(guest.stop(GRACE).await.success());
        }
        assert_eq!(wasmproc::testing::calls_open(&host), 0);
        assert_eq!(host.late_replies(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_callee_that_traps_mid_call_fails_the_call_at_once_with_its_trap() {
    within(60, async {
        let host = Host::new();
        let victim = rpc(&host, "victim", &["serve", "trap"]).await;
        let started = Instant::now();
        let failed = victim.call(b"boom".to_vec(), Duration::from_secs(30)).await;
        let took = started.elapsed();
        let status = victim.wait().await;
        assert_eq!(
            status.to_string(),
            "trap: wasm `unreachable` instruction executed (in rpc::crash_mid_call)"
        );
        assert_eq!(failed, Err(CallError::CalleeExited(status.to_string())));
        assert_eq!(recv_text(&victim).await, "took boom");
        // Far from the deadline: the host watched the callee.
        println!("call failed {} ms after it was made", took.as_millis());
        assert!(took < SECOND, "took {took:?}");

        // The same from a guest caller.
        let victim = rpc(&host, "victim", &["serve", "trap"]).await;
        assert_eq!(
            call_from_guest(&host, &["victim", "boom", "30000"]).await,
            "error: the callee exited: trap: wasm `unreachable` instruction executed (in rpc::crash_mid_call)"
        );
        victim.wait().await;
        assert_eq!(wasmproc::testing::calls_open(&host), 0);
    })
    .await;
}

#[tokio::test]
async fn a_request_the_callee_never_took_fails_its_call_when_the_callee_ends() {
    within(60, async {
        let host = Host::new();
        // `idle` never reads its inbox: the request stays in the host.
        let idle = host
            .command(guest("crasher"))
            .arg("idle")
            .name("idle")
            .fork()
            .await
            .unwrap();
        let caller = rpc(&host, "caller", &["call", "idle", "x", "30000"]).await;
        // Wait until the request has been queued for `idle`.
        while wasmproc::testing::calls_open(&host) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        idle.kill();
        assert_eq!(
            recv_text(&caller).await,
            "error: the callee exited: killed by the host (SIGKILL)"
        );
        assert_eq!(
            idle.wait().await.to_string(),
            "killed by the host (SIGKILL)"
        );
    })
    .await;
}

#[tokio::test]
async fn a_late_reply_gets_expired_and_nothing_reaches_the_caller() {
    within(60, async {
        let host = Host::new();
        let slow = rpc(&host, "slow", &["serve", "late", "300"]).await;
        // The caller gives up after 100 ms; the reply comes at 300 ms.
        assert_eq!(
            call_from_guest(&host, &["slow", "x", "100"]).await,
            "error: no reply before the deadline"
        );
        assert_eq!(recv_text(&slow).await, "reply: the call has expired");
        assert_eq!(host.late_replies(), 1);

        // From the parent: a call that timed out, then its late reply.
        assert_eq!(
            slow.call(b"y".to_vec(), Duration::from_millis(100)).await,
            Err(CallError::Timeout)
        );
        assert_eq!(recv_text(&slow).await, "reply: the call has expired");
        assert_eq!(host.late_replies(), 2);
        slow.stop(GRACE).await;
    })
    .await;
}

#[tokio::test]
async fn nothing_of_a_late_reply_reaches_the_guest_that_called() {
    within(60, async {
        let host = Host::new();
        let slow = rpc(&host, "slow", &["serve", "late", "300"]).await;
        let caller = rpc(&host, "caller", &["call", "slow", "x", "100", "1000"]).await;
        assert_eq!(
            recv_text(&caller).await,
            "error: no reply before the deadline"
        );
        assert_eq!(recv_text(&slow).await, "reply: the call has expired");
        assert_eq!(recv_text(&caller).await, "inbox: 0 items");
        caller.wait().await;
        slow.stop(GRACE).await;
    })
    .await;
}

#[tokio::test]
async fn a_second_reply_gets_already_replied_and_a_forged_id_unknown_request() {
    within(60, async {
        let host = Host::new();
        let twice = rpc(&host, "twice", &["serve", "twice"]).await;
        assert_eq!(twice.call(b"x".to_vec(), SECOND).await.unwrap(), b"first");
        assert_eq!(
            recv_text(&twice).await,
            "first: ok, second: the request was answered already"
        );
        let forger = rpc(&host, "forger", &["serve", "forge"]).await;
        assert_eq!(
            forger.call(b"real".to_vec(), SECOND).await.unwrap(),
            b"real"
        );
        assert_eq!(
            recv_text(&forger).await,
            "forged: no such request was delivered here"
        );

        // The parent cannot answer what was not asked of it either.
        assert_eq!(
            twice.reply(wasmproc::RequestId(424_242), b"x".to_vec()),
            Err(ReplyError::UnknownRequest)
        );
        for guest in [&twice, &forger] {
            assert!(guest.stop(GRACE).await.success());
        }
        assert_eq!(host.late_replies(), 0);
    })
    .await;
}

#[tokio::test]
async fn the_parent_replying_late_gets_expired() {
    within(60, async {
        let host = Host::new();
        let caller = rpc(&host, "caller", &["call", "parent", "ping", "100"]).await;
        let Some(InboxItem::Message {
            request: Some(request),
            ..
        }) = caller.recv().await
        else {
            panic!("no call reached the parent");
        };
        assert_eq!(
            recv_text(&caller).await,
            "error: no reply before the deadline"
        );
        assert_eq!(
            caller.reply(request, b"pong".to_vec()),
            Err(ReplyError::Expired)
        );
        assert_eq!(host.late_replies(), 1);
        caller.wait().await;
    })
    .await;
}

#[tokio::test]
async fn a_hundred_calls_in_flight_from_one_guest_are_all_answered_and_matched() {
    within(60, async {
        let host = Host::new();
        // It answers only once it holds all 100, newest first.
        let gather = rpc(&host, "gather", &["serve", "gather", "100"]).await;
        let fan = rpc(&host, "fan", &["fan", "100", "gather"]).await;
        assert_eq!(recv_text(&fan).await, "matched 100 of 100");
        assert!(fan.wait().await.success());
        gather.stop(GRACE).await;
        assert_eq!(wasmproc::testing::calls_open(&host), 0);
    })
    .await;
}

#[tokio::test]
async fn every_call_error_names_its_reason() {
    within(60, async {
        let host = Host::new();
        let never = rpc(&host, "never", &["serve", "never"]).await;
        let small = rpc_with(&host, "small", &["serve", "echo"], |c| {
            c.max_message_size(10);
        })
        .await;
        let cases: [(&[&str], &str); 6] = [
            (&["ghost", "x", "1000"], "error: unknown recipient"),
            (
                &["never", "x", "200"],
                "error: no reply before the deadline",
            ),
            (&["all:pool", "x", "1000"], "error: not allowed"),
            (
                &["small", "far more than ten bytes", "1000"],
                "error: too large",
            ),
            (
                &["never", "x", "0"],
                "error: a call needs a timeout above zero",
            ),
            (&["small", "fits", "1000"], "ok fits"),
        ];
        for (args, told) in cases {
            assert_eq!(
                call_from_guest(&host, args).await,
                told,
                "rpc call {args:?}"
            );
        }
        assert_eq!(recv_text(&never).await, "took x");

        // A guest that has ended, by name: the reason it ended.
        small.stop(GRACE).await;
        assert_eq!(
            call_from_guest(&host, &["small", "x", "1000"]).await,
            "error: the callee exited: exit code 0"
        );

        // The parent's side says the same.
        assert_eq!(
            host.call(&Address::Broadcast("pool".into()), Vec::new(), SECOND)
                .await,
            Err(CallError::NotAllowed)
        );
        assert_eq!(
            host.call(&Address::Name("ghost".into()), Vec::new(), SECOND)
                .await,
            Err(CallError::UnknownRecipient)
        );
        assert_eq!(
            never.call(Vec::new(), Duration::ZERO).await,
            Err(CallError::InvalidTimeout)
        );

        // At most 4096 calls in flight per guest.
        let fan = rpc(&host, "fan", &["fan", "4097", "never"]).await;
        assert_eq!(
            recv_text(&fan).await,
            "call 4096 did not start: too many calls in flight"
        );
        fan.wait().await;
        never.stop(GRACE).await;
    })
    .await;
}

#[tokio::test]
async fn a_full_mailbox_fails_the_call_with_mailbox_full() {
    within(60, async {
        let host = Host::new();
        let idle = host
            .command(guest("crasher"))
            .arg("idle")
            .name("idle")
            .inbox_size(1)
            .fork()
            .await
            .unwrap();
        // Fill the host's mailbox for `idle` (its runner holds one item),
        // until its writer is stuck on the full pipe and nothing drains.
        loop {
            while idle.send(vec![0; 16]).is_ok() {}
            tokio::time::sleep(Duration::from_millis(100)).await;
            if idle.send(vec![0; 16]).is_err() {
                break;
            }
        }
        assert_eq!(
            idle.call(Vec::new(), Duration::from_secs(30)).await,
            Err(CallError::MailboxFull)
        );
        assert_eq!(
            call_from_guest(&host, &["idle", "x", "5000"]).await,
            "error: mailbox full"
        );
        idle.kill();
        idle.wait().await;
    })
    .await;
}

#[tokio::test]
async fn calls_under_the_allow_list_get_not_allowed() {
    within(60, async {
        let host = Host::new();
        let svc = rpc(&host, "svc", &["serve", "echo"]).await;
        let fenced = rpc_with(&host, "fenced", &["call", "svc", "x", "1000"], |c| {
            c.talks_to(["someone-else"]);
        })
        .await;
        assert_eq!(recv_text(&fenced).await, "error: not allowed");
        fenced.wait().await;
        let allowed = rpc_with(&host, "allowed", &["call", "svc", "x", "1000"], |c| {
            c.talks_to(["svc"]);
        })
        .await;
        assert_eq!(recv_text(&allowed).await, "ok x");
        allowed.wait().await;
        svc.stop(GRACE).await;
    })
    .await;
}

#[tokio::test]
async fn a_call_waits_no_longer_than_the_guests_maximum() {
    within(60, async {
        let host = Host::new();
        let never = rpc(&host, "never", &["serve", "never"]).await;
        let started = Instant::now();
        let capped = rpc_with(&host, "capped", &["call", "never", "x", "600000"], |c| {
            c.max_call_timeout(Duration::from_millis(200));
        })
        .await;
        assert_eq!(
            recv_text(&capped).await,
            "error: no reply before the deadline"
        );
        assert!(started.elapsed() < Duration::from_secs(30));
        capped.wait().await;
        never.stop(GRACE).await;
    })
    .await;
}

#[tokio::test]
async fn the_kv_guest_answers_get_put_del_and_len() {
    within(60, async {
        let kv = Command::new(guest("kv")).name("kv").fork().await.unwrap();
        let ask = async |line: &str| {
            String::from_utf8(kv.call(line.as_bytes().to_vec(), SECOND).await.unwrap()).unwrap()
        };
        assert_eq!(ask("get colour").await, "missing");
        assert_eq!(ask("put colour deep blue").await, "ok");
        assert_eq!(ask("get colour").await, "value deep blue");
        assert_eq!(ask("put size 3").await, "ok");
        assert_eq!(ask("len").await, "2");
        assert_eq!(ask("del colour").await, "deleted");
        assert_eq!(ask("del colour").await, "missing");
        assert_eq!(
            ask("frobnicate").await,
            "error: `frobnicate` is not `put KEY VALUE`, `get KEY`, `del KEY` or `len`"
        );
        assert!(kv.stop(GRACE).await.success());
    })
    .await;
}

#[tokio::test]
async fn guests_built_for_versions_0_1_and_0_2_still_load_and_are_served_as_built() {
    within(60, async {
        let host = Host::new();
        let [v0_1, v0_2] = ["legacy", "legacy2"];
        for module in [v0_1, v0_2] {
            let old = host
                .command(guest(module))
                .name(module)
                .fork()
                .await
                .unwrap();
            old.send(b"still here".to_vec()).unwrap();
            assert_eq!(recv_text(&old).await, "still here", "{module}");
            // 0.1 never answers: a short deadline does.
            let deadline = Duration::from_millis(if module == v0_1 { 200 } else { 10_000 });
            let answer = old.call(b"a call".to_vec(), deadline).await;
            if module == v0_1 {
                // 0.1 cannot answer: the call ends at its deadline, and
                // the guest got the payload as a plain message.
                assert_eq!(answer, Err(CallError::Timeout));
                assert_eq!(recv_text(&old).await, "a call");
            } else {
                // 0.2 has calls.
                assert_eq!(answer, Ok(b"a call".to_vec()));
            }
            assert!(old.stop(GRACE).await.success(), "{module}");
        }
    })
    .await;
}

#[test]
fn wasmproc_call_prints_the_reply_or_why_there_is_none() {
    let out = output_within(
        std::process::Command::new(cli())
            .args(["call"])
            .arg(guest("kv"))
            .arg("put colour blue"),
        60,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(out.status.code(), Some(0));

    let crasher = guest("crasher");
    let out = output_within(
        std::process::Command::new(cli())
            .args(["call", "--deadline", "30s"])
            .arg(&crasher)
            .args(["x", "--", "trap"]),
        60,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "wasmproc: call to {} failed: the callee exited: trap: wasm `unreachable` instruction executed (in crasher::crash_on_purpose)\n",
            crasher.display()
        )
    );
    assert_eq!(out.status.code(), Some(3));

    let out = output_within(
        std::process::Command::new(cli())
            .args(["call", "--deadline", "0s"])
            .arg(guest("kv"))
            .arg("len"),
        60,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("`0s` would fail every call at once: give a limit above zero, like 60s"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
