//! `posix_spawn` from a thread with a descriptor table of its own.
//!
//! A spawned child starts with a copy of its parent's descriptor table and
//! then closes all but the few it keeps. The host holds four descriptors per
//! guest, so with 10,000 guests every spawn copied and closed 40,000 of them:
//! a few milliseconds each, growing with the fleet, which made a burst of
//! forks quadratic. The launcher thread unshares its table
//! (`unshare(CLONE_FILES)`) and keeps it empty but for a pidfd of the host
//! itself: for each spawn it fetches the few descriptors the child gets from
//! the host's table (`pidfd_getfd`), spawns (copying a table of a handful),
//! and closes them again. Inherited stdio is fetched too, so the child sees
//! the host's fds 0–2 as they are at the spawn.
//!
//! Where the kernel refuses (before Linux 5.9, or under a seccomp policy
//! that forbids `unshare` or `pidfd_getfd`, as container runtimes' default
//! profiles do without extra capabilities), spawns use the caller's table,
//! as before, and the host says so once.

use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};

use wasmproc_protocol::contract::FIRST_UNINHERITED_FD;

/// Descriptors passed to the child are first moved at or above this number,
/// so that placing one on 0–5 can never overwrite another still to be placed.
const FIRST_FREE_FD: RawFd = 10;

/// What the child gets, by descriptor numbers in the host's table (kept
/// open by the caller until [`spawn`] returns).
#[derive(Debug)]
pub(crate) struct Plan {
    path: CString,
    /// `(source, target)`: the host's `source` becomes the child's `target`.
    pub dups: Vec<(RawFd, RawFd)>,
    /// The host's own descriptors the child keeps at the same number (a
    /// copy fetched by the launcher is passed even if the host's is
    /// close-on-exec, as `dup2` clears the flag: stdio never is).
    pub inherit: Vec<RawFd>,
    /// `(target, flags)`: `/dev/null` opened with `flags`.
    pub nulls: Vec<(RawFd, libc::c_int)>,
    /// Its own session rather than its own process group.
    new_session: bool,
}

impl Plan {
    /// Start `program` with no arguments and an empty environment.
    pub(crate) fn new(program: &Path, new_session: bool) -> io::Result<Plan> {
        let path = CString::new(program.as_os_str().as_bytes())
            .map_err(|_| io::Error::other("the runner's path contains a NUL byte"))?;
        Ok(Plan {
            path,
            dups: Vec::new(),
            inherit: Vec::new(),
            nulls: Vec::new(),
            new_session,
        })
    }
}

/// Spawn what `plan` says and return the child's pid.
///
/// # Errors
///
/// What `posix_spawn` or the descriptor moves said.
pub(crate) fn spawn(plan: Plan) -> io::Result<libc::pid_t> {
    static BROKEN: AtomicBool = AtomicBool::new(false);
    if !BROKEN.load(Ordering::Relaxed)
        && let Some(launcher) = launcher()
    {
        let (reply, answer) = mpsc::sync_channel(1);
        let sent = launcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send((plan, reply));
        match sent {
            Ok(()) => match answer.recv() {
                Ok(Answer::Spawned(result)) => return result,
                Ok(Answer::Unsupported(plan, err)) => {
                    tracing::info!(
                        "wasmproc: spawning runners from the host's own descriptor table \
                         ({err}): each spawn copies the host's descriptors"
                    );
                    BROKEN.store(true, Ordering::Relaxed);
                    return spawn_with(&plan, dup_high, false);
                }
                Err(_) => BROKEN.store(true, Ordering::Relaxed),
            },
            Err(mpsc::SendError((plan, _))) => {
                BROKEN.store(true, Ordering::Relaxed);
                return spawn_with(&plan, dup_high, false);
            }
        }
        return Err(io::Error::other("the launcher thread has stopped"));
    }
    spawn_with(&plan, dup_high, false)
}

enum Answer {
    Spawned(io::Result<libc::pid_t>),
    /// The kernel refuses to move descriptors: spawn it elsewhere.
    Unsupported(Plan, io::Error),
}

type Request = (Plan, mpsc::SyncSender<Answer>);

/// The launcher thread's queue, started on first use; `None` where the
/// thread cannot have a table of its own.
fn launcher() -> Option<&'static Mutex<mpsc::Sender<Request>>> {
    static LAUNCHER: OnceLock<Option<Mutex<mpsc::Sender<Request>>>> = OnceLock::new();
    LAUNCHER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Request>();
            let (ready, started) = mpsc::sync_channel(1);
            let thread = std::thread::Builder::new()
                .name("wasmproc-launcher".into())
                .stack_size(256 * 1024)
                .spawn(move || {
                    let host = match own_table() {
                        Ok(host) => {
                            let _ = ready.send(Ok(()));
                            host
                        }
                        Err(err) => {
                            let _ = ready.send(Err(err));
                            return;
                        }
                    };
                    for (plan, reply) in rx {
                        let answer = match spawn_with(&plan, |fd| fetch(&host, fd), true) {
                            Err(err) if unsupported(&err) => Answer::Unsupported(plan, err),
                            result => Answer::Spawned(result),
                        };
                        let _ = reply.send(answer);
                    }
                });
            match thread.map(|_| started.recv()) {
                Ok(Ok(Ok(()))) => Some(Mutex::new(tx)),
                Ok(Ok(Err(err))) => {
                    tracing::info!(
                        "wasmproc: spawning runners from the host's own descriptor table \
                         (no table of its own for the launcher: {err}): each spawn copies \
                         the host's descriptors"
                    );
                    None
                }
                Ok(Err(_)) => None,
                Err(err) => {
                    tracing::debug!("cannot start the launcher thread: {err}");
                    None
                }
            }
        })
        .as_ref()
}

/// Give this thread a descriptor table of its own, close everything in
/// it, and return a pidfd of this process: `pidfd_getfd` on it reads the
/// table of the thread-group leader, which is the host's (its main thread
/// never unshares its table).
///
/// It also blocks every signal: a handler run on this thread would see
/// its table, not the host's (tokio's SIGCHLD handler writes to a pipe of
/// the host's, and the kernel sends a child's SIGCHLD to the thread that
/// spawned it first), so signals go to the host's other threads instead.
fn own_table() -> io::Result<OwnedFd> {
    let mut all = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset writes the set; pthread_sigmask only changes this
    // thread's mask (children get an empty one: see `Attributes`).
    let rc = unsafe {
        libc::sigfillset(all.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_BLOCK, all.as_ptr(), std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: unshare with CLONE_FILES only affects this thread's table.
    if unsafe { libc::unshare(libc::CLONE_FILES) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: closes descriptors of this thread's private table only.
    if unsafe { libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just returned by pidfd_open; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Whether `err` is [`fetch`] saying the kernel will not move descriptors
/// at all (not a refusal of the spawn itself).
fn unsupported(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::Unsupported
}

/// A copy of the host's descriptor `fd` in this thread's table, above the
/// targets; `None` if the host has no such descriptor.
fn fetch(host: &OwnedFd, fd: RawFd) -> io::Result<Option<OwnedFd>> {
    // SAFETY: pidfd_getfd copies descriptor `fd` of the process behind the
    // pidfd (this very process) into this thread's table, close-on-exec.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, host.as_raw_fd(), fd, 0u32) };
    if copy < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::EBADF) => Ok(None),
            Some(libc::ENOSYS | libc::EPERM) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("pidfd_getfd: {err}"),
            )),
            _ => Err(err),
        };
    }
    // SAFETY: just returned by pidfd_getfd; nothing else owns it.
    above_targets(unsafe { OwnedFd::from_raw_fd(copy as RawFd) }).map(Some)
}

/// A copy of the caller's descriptor `fd`, above the targets.
fn dup_high(fd: RawFd) -> io::Result<Option<OwnedFd>> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that this function
    // then owns.
    let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, FIRST_FREE_FD) };
    if high < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(high) }))
}

/// Spawn `plan`, taking each source descriptor through `copy` (which puts
/// it above the targets, close-on-exec), and the inherited ones too when
/// `fetch_inherited` (a table of its own).
fn spawn_with(
    plan: &Plan,
    copy: impl Fn(RawFd) -> io::Result<Option<OwnedFd>>,
    fetch_inherited: bool,
) -> io::Result<libc::pid_t> {
    let mut actions = FileActions::new()?;
    // The copies stay open until the child has its own.
    let mut copies = Vec::with_capacity(plan.dups.len() + plan.inherit.len());
    for &(source, target) in &plan.dups {
        let copied = copy(source)?.ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
        actions.dup2(copied.as_raw_fd(), target)?;
        copies.push(copied);
    }
    // Only a thread with a table of its own must fetch what the child
    // inherits; in the caller's table it is already in place.
    if fetch_inherited {
        for &target in &plan.inherit {
            if let Some(copied) = copy(target)? {
                actions.dup2(copied.as_raw_fd(), target)?;
                copies.push(copied);
            }
        }
    }
    for &(target, flags) in &plan.nulls {
        actions.open(target, c"/dev/null", flags)?;
    }
    actions.close_from(FIRST_UNINHERITED_FD)?;
    let attributes = Attributes::new(plan.new_session)?;
    let argv = [
        plan.path.as_ptr() as *mut libc::c_char,
        std::ptr::null_mut(),
    ];
    let envp = [std::ptr::null_mut::<libc::c_char>()];
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: the path and argv are
    // NUL-terminated and live until it returns, the file actions and
    // attributes are initialized and owned by the guards.
    let rc = unsafe {
        libc::posix_spawn(
            &mut pid,
            plan.path.as_ptr(),
            &actions.0,
            &attributes.0,
            argv.as_ptr(),
            envp.as_ptr(),
        )
    };
    drop(copies);
    check(rc)?;
    Ok(pid)
}

/// `fd` moved at or above [`FIRST_FREE_FD`], close-on-exec (the file action
/// `dup2` clears the flag on the copy the child gets).
fn above_targets(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() >= FIRST_FREE_FD {
        // Make sure it does not leak into other children.
        // SAFETY: F_SETFD on an fd this function owns.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that this function
    // then owns.
    let high = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, FIRST_FREE_FD) };
    if high < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(high) })
}

/// `posix_spawn_file_actions_t`, destroyed on drop.
struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> io::Result<FileActions> {
        let mut raw = MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
        // SAFETY: init writes the structure.
        check(unsafe { libc::posix_spawn_file_actions_init(raw.as_mut_ptr()) })?;
        // SAFETY: initialized just above.
        Ok(FileActions(unsafe { raw.assume_init() }))
    }

    fn dup2(&mut self, from: RawFd, to: RawFd) -> io::Result<()> {
        // SAFETY: an initialized file actions object.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, from, to) })
    }

    fn open(&mut self, fd: RawFd, path: &std::ffi::CStr, flags: libc::c_int) -> io::Result<()> {
        // SAFETY: glibc copies the path into the file actions.
        check(unsafe {
            libc::posix_spawn_file_actions_addopen(&mut self.0, fd, path.as_ptr(), flags, 0)
        })
    }

    fn close_from(&mut self, from: RawFd) -> io::Result<()> {
        // SAFETY: an initialized file actions object.
        check(unsafe { libc::posix_spawn_file_actions_addclosefrom_np(&mut self.0, from) })
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialized in `new`, destroyed once.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// `posix_spawnattr_t`: own process group, empty signal mask, SIGPIPE at
/// its default; destroyed on drop.
struct Attributes(libc::posix_spawnattr_t);

impl Attributes {
    fn new(new_session: bool) -> io::Result<Attributes> {
        let mut raw = MaybeUninit::<libc::posix_spawnattr_t>::uninit();
        // SAFETY: init writes the structure.
        check(unsafe { libc::posix_spawnattr_init(raw.as_mut_ptr()) })?;
        // SAFETY: initialized just above.
        let mut attributes = Attributes(unsafe { raw.assume_init() });
        let mut empty = MaybeUninit::<libc::sigset_t>::uninit();
        let mut pipe_only = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: the sigset functions write the sets; the attribute setters
        // copy them.
        unsafe {
            libc::sigemptyset(empty.as_mut_ptr());
            libc::sigemptyset(pipe_only.as_mut_ptr());
            libc::sigaddset(pipe_only.as_mut_ptr(), libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigmask(
                &mut attributes.0,
                empty.as_ptr(),
            ))?;
            check(libc::posix_spawnattr_setsigdefault(
                &mut attributes.0,
                pipe_only.as_ptr(),
            ))?;
            // Its own process group: a Ctrl-C at the terminal reaches the
            // host, which shuts guests down gracefully, not every runner. On
            // a terminal of its own, its own session (and so its own group).
            check(libc::posix_spawnattr_setpgroup(&mut attributes.0, 0))?;
            let group = if new_session {
                libc::POSIX_SPAWN_SETSID
            } else {
                libc::POSIX_SPAWN_SETPGROUP as libc::c_short
            };
            check(libc::posix_spawnattr_setflags(
                &mut attributes.0,
                group
                    | (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
            ))?;
        }
        Ok(attributes)
    }
}

impl Drop for Attributes {
    fn drop(&mut self) {
        // SAFETY: initialized in `new`, destroyed once.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

/// posix_spawn functions return an errno value instead of setting errno.
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_child_gets_the_hosts_descriptors_and_the_launcher_keeps_none() {
        assert!(
            launcher().is_some(),
            "this kernel gives the launcher a table of its own"
        );
        let (mut read, write) = std::io::pipe().unwrap();
        let mut plan = Plan::new(Path::new("/bin/echo"), false).unwrap();
        plan.dups.push((write.as_raw_fd(), 1));
        plan.inherit.push(2);
        let pid = spawn(plan).unwrap();
        drop(write);
        // Once the child has exited, nobody holds the write end: had the
        // launcher kept its copy, the read would never end.
        let (done, text) = mpsc::channel();
        std::thread::spawn(move || {
            let mut out = String::new();
            let _ = read.read_to_string(&mut out);
            let _ = done.send(out);
        });
        assert_eq!(text.recv_timeout(Duration::from_secs(10)).unwrap(), "\n");
        let mut status = 0;
        // SAFETY: `pid` is this process's unreaped child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }
}
