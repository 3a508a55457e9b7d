//! A host process for the flood test, measured from outside the test process.
//!
//! Starts a guest that never reads (`crasher idle`), a guest that floods it
//! with `N` messages of `SIZE` bytes (`pingpong stream`), and a third pair
//! doing `ROUNDS` round trips meanwhile. Prints one line:
//! `pair=COUNT,IN_ORDER flood_exit=CODE peak_rss_kib=KIB`.
//!
//! Usage: `flood-probe GUESTS_DIR N SIZE ROUNDS` (N = 0: no flood, for a baseline).

use std::path::PathBuf;
use std::time::Duration;

use wasmproc::{ExitStatus, Host};

#[path = "peak.rs"]
mod peak;
use peak::peak_rss_kib;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, n, size, rounds] = args.as_slice() else {
        anyhow::bail!("usage: flood-probe GUESTS_DIR N SIZE ROUNDS");
    };
    let guest = |name: &str| PathBuf::from(dir).join(format!("{name}.wasm"));
    let host = Host::new();

    let idle = host
        .command(guest("crasher"))
        .arg("idle")
        .name("idle")
        .fork()
        .await?;
    let flood = if n == "0" {
        None
    } else {
        let mut command = host.command(guest("pingpong"));
        command.args(["stream", "idle", n, size]);
        Some(command.fork().await?)
    };
    let pong = host
        .command(guest("pingpong"))
        .args(["pong", rounds])
        .name("pong")
        .fork()
        .await?;
    let ping = host
        .command(guest("pingpong"))
        .args(["ping", "pong", rounds])
        .fork()
        .await?;

    let (count, in_order): (u64, bool) = ping.recv_value().await?;
    let flood_exit = match &flood {
        Some(flood) => match flood.wait().await {
            ExitStatus::Exited { code } => code,
            other => anyhow::bail!("the flooder ended badly: {other}"),
        },
        None => 0,
    };
    // Let whatever the flood left in flight settle before reading the peak.
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!(
        "pair={count},{in_order} flood_exit={flood_exit} peak_rss_kib={}",
        peak_rss_kib()
    );
    for child in [&idle, &pong] {
        child.kill();
    }
    Ok(())
}
