//! A host process for the "sends to a million unknown ids" test, measured
//! from outside the test process. Runs `crasher unknown N` and prints its
//! stdout, then `peak_rss_kib=KIB`.
//!
//! Usage: `unknown-probe CRASHER_WASM N`.

use wasmproc::Command;

#[path = "peak.rs"]
mod peak;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [crasher, n] = args.as_slice() else {
        anyhow::bail!("usage: unknown-probe CRASHER_WASM N");
    };
    let out = Command::new(crasher).args(["unknown", n]).output().await?;
    anyhow::ensure!(
        out.status.success(),
        "the guest ended badly: {}",
        out.status
    );
    print!("{}", String::from_utf8_lossy(&out.stdout));
    println!("peak_rss_kib={}", peak::peak_rss_kib());
    Ok(())
}
