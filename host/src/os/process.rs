//! A runner's OS process: started with `posix_spawn` (by the launcher
//! thread, [`super::launcher`]), signalled by its pid, reaped with
//! `waitid` when SIGCHLD says a child ended.
//!
//! `posix_spawn` (glibc's `clone(CLONE_VM | CLONE_VFORK)`) does not copy the
//! host's page tables the way `fork` does, so a host with a large heap starts
//! runners as fast as a small one, and a burst of forks costs the host almost
//! nothing. Everything the runner needs is set up by spawn attributes and
//! file actions, never by code running between fork and exec: the control
//! pipes on fds 3 and 4 (see [`wasmproc_protocol::contract`]), stdio on 0–2, every other descriptor closed, its
//! own process group, default signal mask. The runner asks for its
//! parent-death signal itself, first thing (see [`crate::runner`]).
//!
//! The host holds no descriptor for a runner's process (with 10,000
//! guests, a pidfd each would use up the open-file limit): only the host
//! reaps its runners, so until it has, the pid stays the runner's (a
//! zombie keeps it) and `kill` cannot reach another process that reused
//! it. Each waiting process listens for SIGCHLD and, on every one (the
//! kernel coalesces them), asks `waitid(P_PID, pid, WNOHANG)` about its own
//! pid only: never `P_ALL`, which would take the statuses of an embedding
//! program's own children. A process dropped unwaited (its runtime shut
//! down) is killed and reaped by a thread of its own, never left a zombie.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::{Mutex, OnceLock, mpsc};

use tokio::net::unix::pipe;
use tokio::signal::unix::{Signal, SignalKind, signal};
use wasmproc_protocol::contract::{CONTROL_IN_FD, CONTROL_OUT_FD, SANDBOX_REPORT_FD};

use super::launcher::{self, Plan};

/// Where a guest's stdin, stdout or stderr goes.
#[derive(Debug)]
pub enum Stdio {
    /// The host's own.
    Inherit,
    /// Nothing: reads see end of file, writes vanish.
    Null,
    /// A pipe to the host: the handle is on [`Child::stdin`](crate::Child::stdin) and friends.
    Piped,
    /// An open file.
    File(std::fs::File),
    /// Any open descriptor, such as the read end of another guest's stdout
    /// (this is how a pipeline connects its stages without the host copying).
    Fd(OwnedFd),
}

impl Stdio {
    pub fn inherit() -> Stdio {
        Stdio::Inherit
    }
    pub fn null() -> Stdio {
        Stdio::Null
    }
    pub fn piped() -> Stdio {
        Stdio::Piped
    }
}

impl From<OwnedFd> for Stdio {
    fn from(fd: OwnedFd) -> Self {
        Stdio::Fd(fd)
    }
}

impl From<std::fs::File> for Stdio {
    fn from(file: std::fs::File) -> Self {
        Stdio::File(file)
    }
}

/// The write end of a guest's stdin pipe ([`Stdio::Piped`]).
pub type ChildStdin = pipe::Sender;
/// The read end of a guest's stdout pipe ([`Stdio::Piped`]).
pub type ChildStdout = pipe::Receiver;
/// The read end of a guest's stderr pipe ([`Stdio::Piped`]).
pub type ChildStderr = pipe::Receiver;

/// The host's ends of the pipes asked for with [`Stdio::Piped`].
#[derive(Debug, Default)]
pub(crate) struct Handles {
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    pub stderr: Option<ChildStderr>,
}

/// A started runner process.
#[derive(Debug)]
pub(crate) struct Process {
    pid: u32,
    /// Wakes [`Process::wait`] on every SIGCHLD the host receives.
    ended: Signal,
    status: Option<std::process::ExitStatus>,
}

impl Process {
    /// Start `program` with no arguments and an empty environment, with
    /// `control` (runner's in, runner's out, sandbox report) on fds 3, 4
    /// and 5.
    ///
    /// Must run inside a tokio runtime (the SIGCHLD listener and the pipes
    /// register with it).
    pub(crate) fn spawn(
        program: &Path,
        stdio: [Stdio; 3],
        control: [OwnedFd; 3],
    ) -> io::Result<(Process, Handles)> {
        // A guest given a terminal of its own leads its own session, so
        // that terminal can become its controlling one (the runner takes it).
        let own_terminal =
            matches!(&stdio[0], Stdio::Fd(fd) if super::pty::is_terminal(fd.as_raw_fd()));
        let mut plan = Plan::new(program, own_terminal)?;
        let mut handles = Handles::default();
        // The child's ends: open in the host until the child has them.
        let mut passed: Vec<OwnedFd> = Vec::new();
        for (target, stdio) in (0..).zip(stdio) {
            let source = match stdio {
                Stdio::Inherit => {
                    plan.inherit.push(target);
                    continue;
                }
                Stdio::Null => {
                    let flags = if target == 0 {
                        libc::O_RDONLY
                    } else {
                        libc::O_WRONLY
                    };
                    plan.nulls.push((target, flags));
                    continue;
                }
                Stdio::Piped => {
                    let (write, read) = pipe::pipe()?;
                    // The child gets the other end, in blocking mode.
                    if target == 0 {
                        handles.stdin = Some(write);
                        read.into_blocking_fd()?
                    } else {
                        let host_end = Some(read);
                        if target == 1 {
                            handles.stdout = host_end;
                        } else {
                            handles.stderr = host_end;
                        }
                        write.into_blocking_fd()?
                    }
                }
                Stdio::File(file) => OwnedFd::from(file),
                Stdio::Fd(fd) => fd,
            };
            plan.dups.push((source.as_raw_fd(), target));
            passed.push(source);
        }
        for (target, fd) in [CONTROL_IN_FD, CONTROL_OUT_FD, SANDBOX_REPORT_FD]
            .into_iter()
            .zip(control)
        {
            plan.dups.push((fd.as_raw_fd(), target));
            passed.push(fd);
        }
        // Listening before the spawn: a child that ends at once still wakes
        // the first wait.
        let ended = signal(SignalKind::child())?;
        let pid = launcher::spawn(plan)?;
        drop(passed);
        let process = Process {
            pid: pid as u32,
            ended,
            status: None,
        };
        Ok((process, handles))
    }

    /// The OS process id.
    pub(crate) fn id(&self) -> u32 {
        self.pid
    }

    /// Send SIGKILL (nothing happens if it has already been reaped).
    pub(crate) fn kill(&self) {
        if self.status.is_none() {
            // SAFETY: `pid` is this host's child, not yet reaped (only
            // `wait` reaps it, and it sets `status`), so it is still ours.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
        }
    }

    /// Wait for the process to end and reap it. Cancel-safe.
    pub(crate) async fn wait(&mut self) -> io::Result<std::process::ExitStatus> {
        loop {
            if let Some(status) = self.status {
                return Ok(status);
            }
            match reap(self.pid, libc::WNOHANG) {
                Ok(Some(status)) => {
                    self.status = Some(status);
                    continue;
                }
                Ok(None) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
            // Some child ended since the last look (or the listener was
            // made): look again.
            if self.ended.recv().await.is_none() {
                return Err(io::Error::other(
                    "the runtime stopped listening for SIGCHLD",
                ));
            }
        }
    }
}

impl Drop for Process {
    /// A process dropped before it was waited for (its host's runtime is
    /// shutting down): kill it and let the reaper thread collect it, so it
    /// does not linger as a zombie.
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        self.kill();
        reap_later(self.pid);
    }
}

/// Reap child `pid` with `waitid` (`flags`: `WNOHANG` or 0 to block): its
/// status, or `None` while it still runs.
fn reap(pid: u32, flags: libc::c_int) -> io::Result<Option<std::process::ExitStatus>> {
    let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
    // SAFETY: waitid writes one siginfo_t for that one child.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            info.as_mut_ptr(),
            libc::WEXITED | flags,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zero-initialized, then filled in by waitid.
    let info = unsafe { info.assume_init() };
    // SAFETY: the fields of a SIGCHLD siginfo, which waitid fills in.
    let (pid, code) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    let raw = match info.si_code {
        libc::CLD_EXITED => (code & 0xff) << 8,
        libc::CLD_DUMPED => (code & 0x7f) | 0x80,
        _ => code & 0x7f,
    };
    Ok(Some(std::process::ExitStatus::from_raw(raw)))
}

/// Wait for killed processes on one thread of its own.
fn reap_later(pid: u32) {
    static REAPER: OnceLock<Mutex<mpsc::Sender<u32>>> = OnceLock::new();
    let sender = REAPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<u32>();
        let spawned = std::thread::Builder::new()
            .name("wasmproc-reaper".into())
            .spawn(move || {
                for pid in rx {
                    // The process was sent SIGKILL: this returns promptly.
                    let _ = reap(pid, 0);
                }
            });
        if let Err(err) = spawned {
            tracing::warn!("cannot start the reaper thread: {err}");
        }
        Mutex::new(tx)
    });
    let _ = sender.lock().unwrap_or_else(|e| e.into_inner()).send(pid);
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::os::pipe::cloexec_pipe;

    /// Start `program` with `stdio`, fresh control pipes and a report
    /// page (the host's ends close at once: these children never use them).
    fn start(program: &str, stdio: [Stdio; 3]) -> io::Result<(Process, Handles)> {
        let (runner_in, _host_out) = cloexec_pipe()?;
        let (_host_in, runner_out) = cloexec_pipe()?;
        let (_report, report_out) = crate::os::report::ReportPage::new()?;
        Process::spawn(
            Path::new(program),
            stdio,
            [runner_in, runner_out, report_out],
        )
    }

    /// `/bin/sh` reading `script` from a piped stdin, with the control
    /// pipes and the report page on fds 3 to 5: its status and stdout.
    async fn shell(script: &str) -> (std::process::ExitStatus, String) {
        let (mut process, handles) =
            start("/bin/sh", [Stdio::Piped, Stdio::Piped, Stdio::Null]).unwrap();
        let mut stdin = handles.stdin.unwrap();
        stdin.write_all(script.as_bytes()).await.unwrap();
        drop(stdin);
        let mut out = String::new();
        handles
            .stdout
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        (process.wait().await.unwrap(), out)
    }

    #[tokio::test]
    async fn the_child_gets_stdio_and_the_control_pipes_and_nothing_else() {
        // A descriptor the host opened without close-on-exec must not leak.
        let leaky = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: clears FD_CLOEXEC on a descriptor this test owns.
        unsafe { libc::fcntl(leaky.as_raw_fd(), libc::F_SETFD, 0) };
        let (mut process, handles) =
            start("/bin/sh", [Stdio::Piped, Stdio::Null, Stdio::Null]).unwrap();
        // posix_spawn returns after the exec; the shell now waits for its
        // script on stdin: list what it holds.
        let mut held: Vec<u32> = std::fs::read_dir(format!("/proc/{}/fd", process.id()))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
            .collect();
        held.sort_unstable();
        assert_eq!(held, [0, 1, 2, 3, 4, 5]);
        let mut stdin = handles.stdin.unwrap();
        stdin.write_all(b"exit 3\n").await.unwrap();
        drop(stdin);
        assert_eq!(process.wait().await.unwrap().code(), Some(3));
        drop(leaky);
    }

    #[tokio::test]
    async fn the_child_has_its_own_process_group_and_an_empty_environment() {
        let script =
            "set -- $(cat /proc/$$/stat)\n[ \"$5\" = \"$$\" ] && echo own-group\nenv | wc -l\n";
        let (status, out) = shell(script).await;
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            ["own-group", "1"]
        );
        assert!(status.success());
    }

    #[tokio::test]
    async fn kill_ends_the_child_with_sigkill_and_wait_reports_it_once_reaped() {
        let (mut process, _handles) =
            start("/bin/sh", [Stdio::Piped, Stdio::Null, Stdio::Null]).unwrap();
        process.kill();
        let status = process.wait().await.unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        // Waiting again gives the same answer; killing again is harmless.
        process.kill();
        assert_eq!(process.wait().await.unwrap(), status);
    }

    #[tokio::test]
    async fn a_process_dropped_unwaited_is_killed_and_reaped() {
        let (process, _handles) =
            start("/bin/sh", [Stdio::Piped, Stdio::Null, Stdio::Null]).unwrap();
        let stat = format!("/proc/{}/stat", process.id());
        drop(process);
        // Gone from the process table once reaped (a zombie keeps its entry).
        for _ in 0..500 {
            if !Path::new(&stat).exists() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("{stat} is still there 5 s after the drop");
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error_from_spawn() {
        let err = start(
            "/nonexistent/wasmproc-runner",
            [Stdio::Null, Stdio::Null, Stdio::Null],
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
