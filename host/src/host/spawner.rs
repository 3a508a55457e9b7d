//! Finding the runner binary and starting runner processes.
//!
//! Runners are spawned (see [`crate::os::process`]) from one long-lived
//! thread because the parent-death signal each runner asks for fires when
//! the *thread* that spawned it exits: a runner spawned from a short-lived
//! worker thread would die with it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, mpsc};

use tokio::sync::oneshot;

use super::SpawnError;
use crate::os::pipe::{ControlFd, control_channel};
use crate::os::process::{Handles, Process, Stdio};
use crate::os::report::ReportPage;

/// The environment variable naming the runner binary, overriding the search.
pub const RUNNER_ENV: &str = "WASMPROC_RUNNER";
/// The runner binary's file name.
pub const RUNNER_NAME: &str = "wasmproc-runner";

/// A runner process just started, with the host's ends of its pipes.
pub(crate) struct Spawned {
    pub(crate) process: Process,
    pub(crate) handles: Handles,
    pub(crate) to_runner: ControlFd,
    pub(crate) from_runner: ControlFd,
    /// Where the runner says which system call its sandbox refused.
    pub(crate) report: ReportPage,
}

/// The stdio of a fork that sets none: stdin null, stdout and stderr inherited.
pub(crate) fn default_stdio() -> [Stdio; 3] {
    [Stdio::Null, Stdio::Inherit, Stdio::Inherit]
}

/// Find the runner: `$WASMPROC_RUNNER`, else beside the current executable,
/// else in its parent folder (test binaries live in `target/*/deps`), else
/// on `PATH` (where `cargo install` puts it).
pub(crate) fn runner_path() -> Result<PathBuf, SpawnError> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        if let Some(path) = std::env::var_os(RUNNER_ENV) {
            let path = PathBuf::from(path);
            return if path.is_file() {
                Ok(path)
            } else {
                Err(format!("${RUNNER_ENV}={}", path.display()))
            };
        }
        let exe =
            std::env::current_exe().map_err(|err| format!("the current executable ({err})"))?;
        let mut searched = Vec::new();
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join(RUNNER_NAME);
            if candidate.is_file() {
                return Ok(candidate);
            }
            searched.push(dir.display().to_string());
        }
        let on_path = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .unwrap_or_default();
        for dir in on_path.iter().filter(|d| d.is_absolute()) {
            let candidate = dir.join(RUNNER_NAME);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
        searched.push("$PATH".into());
        Err(searched.join(", "))
    });
    found
        .clone()
        .map_err(|searched| SpawnError::RunnerNotFound { searched })
}

struct SpawnRequest {
    runtime: tokio::runtime::Handle,
    runner: PathBuf,
    stdio: [Stdio; 3],
    reply: oneshot::Sender<io::Result<Spawned>>,
}

/// Start a runner process from the spawner thread.
pub(crate) async fn spawn_runner(runner: PathBuf, stdio: [Stdio; 3]) -> io::Result<Spawned> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        // The thread lives as long as the process: see the module docs.
        std::thread::Builder::new()
            .name("wasmproc-spawner".into())
            .spawn(move || {
                for request in rx {
                    let _entered = request.runtime.enter();
                    let result = spawn_now(&request.runner, request.stdio);
                    let _ = request.reply.send(result);
                }
            })
            .map(|_| ())
            .unwrap_or_else(|err| tracing::error!("cannot start the spawner thread: {err}"));
        Mutex::new(tx)
    });
    let (reply, answer) = oneshot::channel();
    let request = SpawnRequest {
        runtime: tokio::runtime::Handle::current(),
        runner,
        stdio,
        reply,
    };
    sender
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(request)
        .map_err(|_| io::Error::other("the spawner thread has stopped"))?;
    answer
        .await
        .map_err(|_| io::Error::other("the spawner thread has stopped"))?
}

/// Start one runner (on the spawner thread, inside a runtime context).
fn spawn_now(runner: &Path, stdio: [Stdio; 3]) -> io::Result<Spawned> {
    static RAISED: OnceLock<()> = OnceLock::new();
    // 10,000 guests need more than the usual soft limit of 1,024 files.
    RAISED.get_or_init(|| {
        let _ = crate::os::limits::raise_open_files();
    });
    let ((to_runner, from_runner), (runner_in, runner_out)) = control_channel()?;
    let (report, runner_report) = ReportPage::new()?;
    let (process, handles) = Process::spawn(runner, stdio, [runner_in, runner_out, runner_report])?;
    Ok(Spawned {
        process,
        handles,
        to_runner,
        from_runner,
        report,
    })
}
