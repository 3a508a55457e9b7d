//! A host process for the broadcast memory test, measured from outside the
//! test process: `N` members of group `g` that never read their inbox
//! (`crasher idle`, runner inbox of one item), then `K` broadcasts of `MB`
//! mebibytes from the parent. Prints what it did, then `peak_rss_kib=KIB`.
//!
//! Usage: `broadcast-probe CRASHER_WASM N K MB`.

use std::time::Duration;

use wasmproc::{Address, Host, SendError};

#[path = "peak.rs"]
mod peak;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [crasher, n, k, mb] = args.as_slice() else {
        anyhow::bail!("usage: broadcast-probe CRASHER_WASM N K MB");
    };
    let (n, k, mb): (usize, usize, usize) = (n.parse()?, k.parse()?, mb.parse()?);
    let host = Host::new();
    let mut members = Vec::with_capacity(n);
    for _ in 0..n {
        let mut command = host.command(crasher);
        command
            .args(["idle"])
            .group("g")
            .inbox_size(1)
            .max_message_size((mb * 1024 * 1024) as u64);
        members.push(command.fork().await?);
    }
    let payload = vec![7u8; mb * 1024 * 1024];
    for _ in 0..k {
        match host.send(&Address::Broadcast("g".into()), payload.clone()) {
            // Members whose mailbox is full refuse it; the others hold it.
            Ok(()) | Err(SendError::MailboxFull(_)) => {}
            Err(err) => anyhow::bail!("broadcast: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("{n} members, {k} broadcasts of {mb} MiB");
    println!("peak_rss_kib={}", peak::peak_rss_kib());
    for member in &members {
        member.kill();
    }
    for member in &members {
        member.wait().await;
    }
    Ok(())
}
