//! A host process for the tests of sends nobody can take (a million unknown
//! ids, huge names), measured from outside the test process. Runs the
//! crasher with the given arguments and prints its stdout, then
//! `peak_rss_kib=KIB`.
//!
//! Usage: `unknown-probe [--talks-to-nobody] [--name NAME] CRASHER_WASM
//! ARGS...` (`--talks-to-nobody`: the guest may send to no one but its
//! parent). A guest that prints `waiting` has its runner's peak measured
//! then (`runner_peak_rss_kib=KIB`) and is sent a message to go on.

use wasmproc::{Command, Stdio};

#[path = "peak.rs"]
mod peak;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt;

    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let (mut quiet, mut name) = (false, None);
    while let Some(flag) = args.first().filter(|a| a.starts_with("--")).cloned() {
        args.remove(0);
        match flag.as_str() {
            "--talks-to-nobody" => quiet = true,
            "--name" if !args.is_empty() => name = Some(args.remove(0)),
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    let Some((crasher, args)) = args.split_first() else {
        anyhow::bail!(
            "usage: unknown-probe [--talks-to-nobody] [--name NAME] CRASHER_WASM ARGS..."
        );
    };
    let mut command = Command::new(crasher);
    command.args(args.iter().cloned()).stdout(Stdio::Piped);
    if quiet {
        command.talks_to(Vec::<String>::new());
    }
    if let Some(name) = name {
        command.name(name);
    }
    let mut child = command.fork().await?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut runner_peak = None;
    while let Some(line) = lines.next_line().await? {
        if line == "waiting" {
            // The guest holds what it received: measure its runner now.
            runner_peak = Some(peak::peak_rss_kib_of(child.pid()));
            child.send(b"go".to_vec())?;
        } else {
            println!("{line}");
        }
    }
    let status = child.wait().await;
    anyhow::ensure!(status.success(), "the guest ended badly: {status}");
    println!("peak_rss_kib={}", peak::peak_rss_kib());
    if let Some(kib) = runner_peak {
        println!("runner_peak_rss_kib={kib}");
    }
    Ok(())
}
