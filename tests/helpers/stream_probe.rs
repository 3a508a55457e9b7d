//! A host process for the streaming test, measured from outside the test
//! process: pushes `MB` MiB of a known pattern through a `cat` guest's stdin
//! and reads its stdout back, never holding more than a chunk. Prints
//! `bytes=N same=BOOL peak_rss_kib=KIB`.
//!
//! Usage: `stream-probe WASI_TOOL_WASM MB`.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmproc::{Command, Stdio};

#[path = "peak.rs"]
mod peak;
use peak::peak_rss_kib;

/// The pattern's byte at offset `i`: not periodic at any power of two.
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [tool, mb] = args.as_slice() else {
        anyhow::bail!("usage: stream-probe WASI_TOOL_WASM MB");
    };
    let total: u64 = mb.parse::<u64>()? * 1024 * 1024;
    let mut child = Command::new(tool)
        .arg("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .await?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");

    let writer = tokio::spawn(async move {
        let mut chunk = vec![0u8; 256 * 1024];
        let mut sent = 0u64;
        while sent < total {
            let n = chunk.len().min((total - sent) as usize);
            for (j, b) in chunk[..n].iter_mut().enumerate() {
                *b = pattern(sent + j as u64);
            }
            stdin.write_all(&chunk[..n]).await?;
            sent += n as u64;
        }
        drop(stdin);
        anyhow::Ok(())
    });
    let mut received = 0u64;
    let mut same = true;
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let n = stdout.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        same &= chunk[..n]
            .iter()
            .enumerate()
            .all(|(j, b)| *b == pattern(received + j as u64));
        received += n as u64;
    }
    writer.await??;
    let status = child.wait().await;
    anyhow::ensure!(status.success(), "the cat guest ended badly: {status}");
    println!(
        "bytes={received} same={same} peak_rss_kib={}",
        peak_rss_kib()
    );
    Ok(())
}
