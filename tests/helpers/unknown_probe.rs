//! A host process for the tests of sends nobody can take (a million unknown
//! ids, huge names), measured from outside the test process. Runs the
//! crasher with the given arguments and prints its stdout, then
//! `peak_rss_kib=KIB`.
//!
//! Usage: `unknown-probe [--talks-to-nobody] CRASHER_WASM ARGS...` (with the
//! flag, the guest may send to no one but its parent).

use wasmproc::Command;

#[path = "peak.rs"]
mod peak;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (quiet, args) = match args.split_first() {
        Some((flag, rest)) if flag == "--talks-to-nobody" => (true, rest),
        _ => (false, &args[..]),
    };
    let Some((crasher, args)) = args.split_first() else {
        anyhow::bail!("usage: unknown-probe [--talks-to-nobody] CRASHER_WASM ARGS...");
    };
    let mut command = Command::new(crasher);
    command.args(args.iter().cloned());
    if quiet {
        command.talks_to(Vec::<String>::new());
    }
    let out = command.output().await?;
    anyhow::ensure!(
        out.status.success(),
        "the guest ended badly: {}",
        out.status
    );
    print!("{}", String::from_utf8_lossy(&out.stdout));
    println!("peak_rss_kib={}", peak::peak_rss_kib());
    Ok(())
}
