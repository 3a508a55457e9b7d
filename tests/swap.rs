//! Hot swap: the mailbox belongs to the name. A guest swapped while a
//! stream of numbered messages flows to it loses none: every message is
//! taken once, in order, by one of its versions.

mod common;

use std::time::Duration;

use common::{guest, within};
use wasmproc::{Child, Host, SwapError};

const STREAM: u64 = 100_000;

/// What a version of `w` took: (version, first, last, count, in order,
/// and when it took its first and last, in ns).
type Report = (u64, u64, u64, u64, bool, u64, u64);
const WAIT: Duration = Duration::from_secs(10);

/// A report without its times.
fn taken(r: &Report) -> (u64, u64, u64, u64, bool) {
    (r.0, r.1, r.2, r.3, r.4)
}

/// Version `version` of the receiver `w`, as a standby when `standby`.
async fn receiver(host: &Host, version: u64, standby: bool) -> Child {
    let mut command = host.command(guest("pingpong"));
    command
        .args(["take".to_owned(), version.to_string()])
        .name("w");
    if standby {
        command.standby();
    }
    command.fork().await.unwrap()
}

/// A `crasher MODE` standby for `w`.
async fn crasher_standby(host: &Host, mode: &str) -> Child {
    host.command(guest("crasher"))
        .arg(mode)
        .name("w")
        .standby()
        .fork()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_guest_swapped_three_times_under_a_stream_takes_every_message_once_in_order() {
    within(120, async {
        let host = Host::new();
        let mut current = receiver(&host, 1, false).await;
        let sender = host
            .command(guest("pingpong"))
            .args(["flood", "w", &STREAM.to_string()])
            .fork()
            .await
            .unwrap();
        let mut reports: Vec<Report> = Vec::new();
        let mut moved = 0;
        for version in 2..=4 {
            tokio::time::sleep(Duration::from_millis(40)).await;
            let standby = receiver(&host, version, true).await;
            let swapped = host.swap(&current, &standby, WAIT, WAIT).await.unwrap();
            assert!(swapped.old_status.success(), "{}", swapped.old_status);
            assert_eq!(swapped.returned, 0);
            moved += swapped.moved;
            reports.push(current.recv_value().await.unwrap());
            current = standby;
        }
        // A version that traps at start is rolled back: the stream goes on
        // to the one running.
        let broken = crasher_standby(&host, "trap").await;
        let refused = host.swap(&current, &broken, WAIT, WAIT).await.unwrap_err();
        assert!(
            matches!(&refused, SwapError::StandbyEnded(status) if status.to_string().starts_with("trap: ")),
            "{refused}"
        );

        let (sent, _): (u64, u64) = sender.recv_value().await.unwrap();
        assert_eq!(sent, STREAM);
        // Everything sent has reached the last version's runner or is on
        // its way; its end report comes after it took all it was given.
        tokio::time::sleep(Duration::from_millis(200)).await;
        current.shutdown().await;
        reports.push(current.recv_value().await.unwrap());
        sender.send(b"done".to_vec()).unwrap();
        let (_, undeliverable): (u64, u64) = sender.recv_value().await.unwrap();

        let taken: Vec<_> = reports.iter().map(taken).collect();
        println!("versions (version, first, last, count, in order): {taken:?}; moved {moved}");
        assert_eq!(undeliverable, 0);
        let mut next = 0;
        for (version, first, last, count, in_order, ..) in &reports {
            assert!(in_order, "version {version} took messages out of order");
            if *count == 0 {
                continue;
            }
            assert_eq!(*first, next, "version {version} did not take up where the last left off");
            assert_eq!(last - first + 1, *count, "version {version}");
            next = last + 1;
        }
        assert_eq!(next, STREAM, "every message taken once");
        assert_eq!(reports.iter().map(|r| r.3).sum::<u64>(), STREAM);
    })
    .await;
}

#[tokio::test]
async fn a_standby_that_is_not_ready_in_time_is_stopped_and_the_old_one_stays() {
    within(60, async {
        let host = Host::new();
        let current = receiver(&host, 1, false).await;
        // `idle` never waits for its inbox: never ready.
        let slow = crasher_standby(&host, "idle").await;
        let refused = host
            .swap(&current, &slow, Duration::from_millis(300), WAIT)
            .await
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "the new instance was not ready (waiting for its inbox) within 300ms"
        );
        assert_eq!(
            slow.wait().await.to_string(),
            "killed by the host (SIGKILL)"
        );
        // The name still leads to the old one.
        host.send(
            &wasmproc::Address::Name("w".into()),
            7u64.to_le_bytes().to_vec(),
        )
        .unwrap();
        current.shutdown().await;
        let report: Report = current.recv_value().await.unwrap();
        assert_eq!(taken(&report), (1, 7, 7, 1, true));
    })
    .await;
}

#[tokio::test]
async fn what_the_host_holds_moves_and_what_the_old_one_never_took_comes_back() {
    within(60, async {
        let host = Host::new();
        // The old version never reads: its runner holds one message, its
        // pipe some more, and the host's mailbox the rest.
        let old = host
            .command(guest("crasher"))
            .arg("idle")
            .name("w")
            .inbox_size(1)
            .fork()
            .await
            .unwrap();
        let w = wasmproc::Address::Name("w".into());
        // 1 KiB each: more than the pipe holds.
        for n in 0..5_000u64 {
            let mut payload = n.to_le_bytes().to_vec();
            payload.resize(1024, 0);
            host.send(&w, payload).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let new = receiver(&host, 2, true).await;
        let swapped = host
            .swap(&old, &new, WAIT, Duration::from_millis(200))
            .await
            .unwrap();
        assert_eq!(
            swapped.old_status.to_string(),
            "killed by the host (SIGKILL)"
        );
        assert!(swapped.moved > 0, "{swapped:?}");
        assert_eq!(swapped.drained, 0);
        assert_eq!(swapped.moved + swapped.returned, 5_000, "{swapped:?}");
        // The parent sent them: what came back is in its inbox from `old`.
        let mut returned = 0;
        while let Some(item) = old.recv().await {
            if let wasmproc::InboxItem::Undeliverable { reason, .. } = item {
                assert_eq!(reason, wasmproc::UndeliverableReason::RecipientExited);
                returned += 1;
            }
        }
        assert_eq!(returned, swapped.returned);
        new.shutdown().await;
        let report: Report = new.recv_value().await.unwrap();
        assert_eq!(
            taken(&report),
            (2, swapped.returned, 4_999, swapped.moved, true)
        );
    })
    .await;
}

#[tokio::test]
async fn the_old_instance_still_answers_the_calls_it_took_while_it_drains() {
    within(60, async {
        let host = Host::new();
        // The old `w` answers each call after 300 ms.
        let old = host
            .command(guest("rpc"))
            .args(["serve", "late", "300"])
            .name("w")
            .fork()
            .await
            .unwrap();
        let caller = host
            .command(guest("rpc"))
            .args(["call", "w", "taken-before", "5000"])
            .fork()
            .await
            .unwrap();
        // The old one has taken the request when it says so... after 300 ms;
        // swap well before that, once the call is open.
        while wasmproc::testing::calls_open(&host) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let new = host
            .command(guest("rpc"))
            .args(["serve", "echo"])
            .name("w")
            .standby()
            .fork()
            .await
            .unwrap();
        let swapped = host.swap(&old, &new, WAIT, WAIT).await.unwrap();
        assert_eq!((swapped.moved, swapped.returned), (0, 0));
        assert_eq!(common::recv_text(&caller).await, "ok taken-before");
        assert_eq!(common::recv_text(&old).await, "reply: ok");
        // Calls from now on go to the new one.
        assert_eq!(
            host.call(
                &wasmproc::Address::Name("w".into()),
                b"after".to_vec(),
                WAIT
            )
            .await
            .unwrap(),
            b"after"
        );
    })
    .await;
}
