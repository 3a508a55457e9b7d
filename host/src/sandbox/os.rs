//! The second wall: the OS process around each guest.
//!
//! [`OsPolicy`] is what a runner applies to itself, on its main thread,
//! after reading its launch spec and before any other thread exists or any
//! guest code runs. Every step is checked; a step the kernel cannot do is
//! reported, never skipped in silence. `wasmproc sandbox explain` prints the
//! same object, so what it says is what runs.

use std::fmt;
use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, path_beneath_rules,
};
use wasmproc_protocol::contract::{EXIT_SANDBOX_REFUSED, FIRST_UNINHERITED_FD, SANDBOX_REPORT_FD};
use wasmproc_protocol::{LaunchSpec, Walls};

/// Open files a runner may hold: its stdio and control pipes, the artifact,
/// preopened folders and the guest's own files.
pub const MAX_OPEN_FILES: u64 = 256;

/// The Landlock ABI the policy asks for (Linux 6.12+ has 6: signal scoping).
const LANDLOCK_ABI: ABI = ABI::V6;

/// What the seccomp filter does with one system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Allowed whatever its arguments.
    Allow,
    /// `EPERM` whatever its arguments.
    Deny,
    /// `ENOSYS`, so that libc falls back to a call the filter can read.
    Enosys,
    /// Allowed only with `CLONE_THREAD` in its flags (argument 0).
    ThreadsOnly,
    /// Allowed only when argument N is the runner's own pid.
    OnlyToItself(u32),
    /// Allowed unless its request (argument 1) is in [`DENIED_IOCTLS`].
    NoTerminalInput,
    /// Allowed unless its mode (argument N) sets set-user-id or set-group-id.
    NoSetId(u32),
    /// Allowed only for `AF_UNIX` (argument 0).
    UnixOnly,
}

/// Every system call a runner may make, and every one it is refused with
/// `EPERM`, with the rule for its arguments: the one table that both the
/// filter and `sandbox explain` are built from. The allowed calls are what
/// wasmtime, tokio, the WASI implementation and the runner's own code use
/// (enumerated by running the whole test suite under the filter, plus the
/// WASI file operations the conformance suite does not happen to reach).
/// Files are Landlock's to confine; descriptors are the runner's own. Any
/// call not in the table stops the runner, and its status names the call.
pub const SYSCALLS: &[(&str, i64, Rule)] = &[
    // memory
    ("brk", libc::SYS_brk, Rule::Allow),
    ("mmap", libc::SYS_mmap, Rule::Allow),
    ("munmap", libc::SYS_munmap, Rule::Allow),
    ("mprotect", libc::SYS_mprotect, Rule::Allow),
    ("madvise", libc::SYS_madvise, Rule::Allow),
    ("mremap", libc::SYS_mremap, Rule::Allow),
    ("membarrier", libc::SYS_membarrier, Rule::Allow),
    // threads (tokio's blocking pool runs WASI file operations)
    ("clone", libc::SYS_clone, Rule::ThreadsOnly),
    ("clone3", libc::SYS_clone3, Rule::Enosys),
    ("futex", libc::SYS_futex, Rule::Allow),
    ("set_robust_list", libc::SYS_set_robust_list, Rule::Allow),
    ("rseq", libc::SYS_rseq, Rule::Allow),
    ("gettid", libc::SYS_gettid, Rule::Allow),
    ("getpid", libc::SYS_getpid, Rule::Allow),
    ("sched_yield", libc::SYS_sched_yield, Rule::Allow),
    (
        "sched_getaffinity",
        libc::SYS_sched_getaffinity,
        Rule::Allow,
    ),
    ("prctl", libc::SYS_prctl, Rule::Allow),
    ("exit", libc::SYS_exit, Rule::Allow),
    ("exit_group", libc::SYS_exit_group, Rule::Allow),
    ("restart_syscall", libc::SYS_restart_syscall, Rule::Allow),
    // signals (wasmtime's trap handlers; signals only to itself, below)
    ("rt_sigaction", libc::SYS_rt_sigaction, Rule::Allow),
    ("rt_sigprocmask", libc::SYS_rt_sigprocmask, Rule::Allow),
    ("rt_sigreturn", libc::SYS_rt_sigreturn, Rule::Allow),
    ("sigaltstack", libc::SYS_sigaltstack, Rule::Allow),
    ("kill", libc::SYS_kill, Rule::OnlyToItself(0)),
    ("tgkill", libc::SYS_tgkill, Rule::OnlyToItself(0)),
    (
        "rt_sigqueueinfo",
        libc::SYS_rt_sigqueueinfo,
        Rule::OnlyToItself(0),
    ),
    (
        "rt_tgsigqueueinfo",
        libc::SYS_rt_tgsigqueueinfo,
        Rule::OnlyToItself(0),
    ),
    // time
    ("clock_gettime", libc::SYS_clock_gettime, Rule::Allow),
    ("clock_getres", libc::SYS_clock_getres, Rule::Allow),
    ("gettimeofday", libc::SYS_gettimeofday, Rule::Allow),
    ("nanosleep", libc::SYS_nanosleep, Rule::Allow),
    ("clock_nanosleep", libc::SYS_clock_nanosleep, Rule::Allow),
    // the event loop
    ("epoll_create1", libc::SYS_epoll_create1, Rule::Allow),
    ("epoll_ctl", libc::SYS_epoll_ctl, Rule::Allow),
    ("epoll_wait", libc::SYS_epoll_wait, Rule::Allow),
    ("epoll_pwait", libc::SYS_epoll_pwait, Rule::Allow),
    ("epoll_pwait2", libc::SYS_epoll_pwait2, Rule::Allow),
    ("eventfd2", libc::SYS_eventfd2, Rule::Allow),
    ("poll", libc::SYS_poll, Rule::Allow),
    ("ppoll", libc::SYS_ppoll, Rule::Allow),
    ("pipe2", libc::SYS_pipe2, Rule::Allow),
    ("socketpair", libc::SYS_socketpair, Rule::UnixOnly),
    // reading and writing its own descriptors
    ("read", libc::SYS_read, Rule::Allow),
    ("write", libc::SYS_write, Rule::Allow),
    ("readv", libc::SYS_readv, Rule::Allow),
    ("writev", libc::SYS_writev, Rule::Allow),
    ("pread64", libc::SYS_pread64, Rule::Allow),
    ("pwrite64", libc::SYS_pwrite64, Rule::Allow),
    ("preadv", libc::SYS_preadv, Rule::Allow),
    ("pwritev", libc::SYS_pwritev, Rule::Allow),
    ("preadv2", libc::SYS_preadv2, Rule::Allow),
    ("pwritev2", libc::SYS_pwritev2, Rule::Allow),
    ("close", libc::SYS_close, Rule::Allow),
    ("close_range", libc::SYS_close_range, Rule::Allow),
    ("dup", libc::SYS_dup, Rule::Allow),
    ("dup3", libc::SYS_dup3, Rule::Allow),
    ("fcntl", libc::SYS_fcntl, Rule::Allow),
    ("ioctl", libc::SYS_ioctl, Rule::NoTerminalInput),
    ("lseek", libc::SYS_lseek, Rule::Allow),
    ("fsync", libc::SYS_fsync, Rule::Allow),
    ("fdatasync", libc::SYS_fdatasync, Rule::Allow),
    ("ftruncate", libc::SYS_ftruncate, Rule::Allow),
    ("fallocate", libc::SYS_fallocate, Rule::Allow),
    ("fadvise64", libc::SYS_fadvise64, Rule::Allow),
    // files, as Landlock allows (WASI's filesystem)
    ("openat", libc::SYS_openat, Rule::Allow),
    ("openat2", libc::SYS_openat2, Rule::Allow),
    ("newfstatat", libc::SYS_newfstatat, Rule::Allow),
    ("fstat", libc::SYS_fstat, Rule::Allow),
    ("statx", libc::SYS_statx, Rule::Allow),
    ("fstatfs", libc::SYS_fstatfs, Rule::Allow),
    ("getdents64", libc::SYS_getdents64, Rule::Allow),
    ("unlinkat", libc::SYS_unlinkat, Rule::Allow),
    ("mkdirat", libc::SYS_mkdirat, Rule::Allow),
    ("renameat", libc::SYS_renameat, Rule::Allow),
    ("renameat2", libc::SYS_renameat2, Rule::Allow),
    ("symlinkat", libc::SYS_symlinkat, Rule::Allow),
    ("linkat", libc::SYS_linkat, Rule::Allow),
    ("readlinkat", libc::SYS_readlinkat, Rule::Allow),
    ("utimensat", libc::SYS_utimensat, Rule::Allow),
    ("faccessat", libc::SYS_faccessat, Rule::Allow),
    ("faccessat2", libc::SYS_faccessat2, Rule::Allow),
    ("fchmod", libc::SYS_fchmod, Rule::NoSetId(1)),
    ("fchmodat", libc::SYS_fchmodat, Rule::NoSetId(2)),
    ("fchmodat2", libc::SYS_fchmodat2, Rule::NoSetId(2)),
    ("chmod", libc::SYS_chmod, Rule::NoSetId(1)),
    ("getcwd", libc::SYS_getcwd, Rule::Allow),
    // randomness
    ("getrandom", libc::SYS_getrandom, Rule::Allow),
    // reading its own (empty) capability sets
    ("capget", libc::SYS_capget, Rule::Allow),
    // refused whatever the arguments (EPERM): exec, processes, sockets,
    // mounts, namespaces, kernel state, other processes, devices
    ("execve", libc::SYS_execve, Rule::Deny),
    ("execveat", libc::SYS_execveat, Rule::Deny),
    ("fork", libc::SYS_fork, Rule::Deny),
    ("vfork", libc::SYS_vfork, Rule::Deny),
    ("ptrace", libc::SYS_ptrace, Rule::Deny),
    ("process_vm_readv", libc::SYS_process_vm_readv, Rule::Deny),
    ("process_vm_writev", libc::SYS_process_vm_writev, Rule::Deny),
    ("socket", libc::SYS_socket, Rule::Deny),
    ("mount", libc::SYS_mount, Rule::Deny),
    ("umount2", libc::SYS_umount2, Rule::Deny),
    ("pivot_root", libc::SYS_pivot_root, Rule::Deny),
    ("chroot", libc::SYS_chroot, Rule::Deny),
    ("setns", libc::SYS_setns, Rule::Deny),
    ("unshare", libc::SYS_unshare, Rule::Deny),
    ("bpf", libc::SYS_bpf, Rule::Deny),
    ("perf_event_open", libc::SYS_perf_event_open, Rule::Deny),
    ("kexec_load", libc::SYS_kexec_load, Rule::Deny),
    ("kexec_file_load", libc::SYS_kexec_file_load, Rule::Deny),
    ("init_module", libc::SYS_init_module, Rule::Deny),
    ("finit_module", libc::SYS_finit_module, Rule::Deny),
    ("delete_module", libc::SYS_delete_module, Rule::Deny),
    ("keyctl", libc::SYS_keyctl, Rule::Deny),
    ("add_key", libc::SYS_add_key, Rule::Deny),
    ("request_key", libc::SYS_request_key, Rule::Deny),
    ("userfaultfd", libc::SYS_userfaultfd, Rule::Deny),
    ("reboot", libc::SYS_reboot, Rule::Deny),
    ("swapon", libc::SYS_swapon, Rule::Deny),
    ("swapoff", libc::SYS_swapoff, Rule::Deny),
    ("acct", libc::SYS_acct, Rule::Deny),
    ("iopl", libc::SYS_iopl, Rule::Deny),
    ("ioperm", libc::SYS_ioperm, Rule::Deny),
    ("open_by_handle_at", libc::SYS_open_by_handle_at, Rule::Deny),
    ("name_to_handle_at", libc::SYS_name_to_handle_at, Rule::Deny),
    ("tkill", libc::SYS_tkill, Rule::Deny),
    ("io_uring_setup", libc::SYS_io_uring_setup, Rule::Deny),
    ("io_uring_enter", libc::SYS_io_uring_enter, Rule::Deny),
    ("io_uring_register", libc::SYS_io_uring_register, Rule::Deny),
    ("pidfd_open", libc::SYS_pidfd_open, Rule::Deny),
    ("pidfd_send_signal", libc::SYS_pidfd_send_signal, Rule::Deny),
    ("pidfd_getfd", libc::SYS_pidfd_getfd, Rule::Deny),
    ("open_tree", libc::SYS_open_tree, Rule::Deny),
    ("move_mount", libc::SYS_move_mount, Rule::Deny),
    ("fsopen", libc::SYS_fsopen, Rule::Deny),
    ("fsconfig", libc::SYS_fsconfig, Rule::Deny),
    ("fsmount", libc::SYS_fsmount, Rule::Deny),
    ("fspick", libc::SYS_fspick, Rule::Deny),
    ("mount_setattr", libc::SYS_mount_setattr, Rule::Deny),
    ("sethostname", libc::SYS_sethostname, Rule::Deny),
    ("setdomainname", libc::SYS_setdomainname, Rule::Deny),
    ("adjtimex", libc::SYS_adjtimex, Rule::Deny),
    ("clock_adjtime", libc::SYS_clock_adjtime, Rule::Deny),
    ("clock_settime", libc::SYS_clock_settime, Rule::Deny),
    ("settimeofday", libc::SYS_settimeofday, Rule::Deny),
    ("syslog", libc::SYS_syslog, Rule::Deny),
    ("mknod", libc::SYS_mknod, Rule::Deny),
    ("mknodat", libc::SYS_mknodat, Rule::Deny),
    (
        "sched_setscheduler",
        libc::SYS_sched_setscheduler,
        Rule::Deny,
    ),
    ("sched_setparam", libc::SYS_sched_setparam, Rule::Deny),
    ("sched_setattr", libc::SYS_sched_setattr, Rule::Deny),
    ("setpriority", libc::SYS_setpriority, Rule::Deny),
    ("ioprio_set", libc::SYS_ioprio_set, Rule::Deny),
    ("quotactl", libc::SYS_quotactl, Rule::Deny),
    ("vhangup", libc::SYS_vhangup, Rule::Deny),
    ("memfd_create", libc::SYS_memfd_create, Rule::Deny),
];

/// The names of the calls with rules matching `pick`.
fn names(pick: impl Fn(Rule) -> bool) -> Vec<&'static str> {
    SYSCALLS
        .iter()
        .filter(|(_, _, rule)| pick(*rule))
        .map(|(name, _, _)| *name)
        .collect()
}

/// `ioctl` requests refused on any descriptor: typing into a terminal's
/// input (`TIOCSTI`) and the console's own requests (`TIOCLINUX`).
pub const DENIED_IOCTLS: &[(&str, u64)] =
    &[("TIOCSTI", libc::TIOCSTI), ("TIOCLINUX", libc::TIOCLINUX)];

/// One resource limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rlimit {
    pub name: &'static str,
    pub resource: libc::__rlimit_resource_t,
    pub soft: u64,
    pub hard: u64,
}

/// Everything the runner does to its own process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsPolicy {
    /// Files the runner may read: the artifact.
    pub read_files: Vec<PathBuf>,
    /// Folders the guest may read.
    pub read_dirs: Vec<PathBuf>,
    /// Folders the guest may read and write.
    pub write_dirs: Vec<PathBuf>,
    pub rlimits: Vec<Rlimit>,
    /// The runner's own pid, the only target `kill` and `tgkill` accept.
    pub pid: u32,
    /// Which walls to raise: all of them, but for a probe that tests one.
    pub walls: Walls,
}

/// How one hardening step went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: &'static str,
    /// `Ok(what was done)` or `Err(why it could not be)`.
    pub outcome: Result<String, String>,
}

impl OsPolicy {
    /// The policy for the guest described by `spec`, in process `pid`.
    pub fn for_spec(spec: &LaunchSpec, pid: u32) -> OsPolicy {
        let (ro, rw): (Vec<_>, Vec<_>) = spec.preopens.iter().partition(|p| p.read_only);
        let mut rlimits = vec![
            Rlimit {
                name: "RLIMIT_CORE",
                resource: libc::RLIMIT_CORE,
                soft: 0,
                hard: 0,
            },
            Rlimit {
                name: "RLIMIT_NOFILE",
                resource: libc::RLIMIT_NOFILE,
                soft: MAX_OPEN_FILES,
                hard: MAX_OPEN_FILES,
            },
        ];
        if let Some(ms) = spec.limits.max_cpu_ms {
            // The kernel sends SIGXCPU at the soft limit (whole seconds, at
            // least one) and the host reports it as the CPU limit.
            let secs = ms.div_ceil(1000).max(1);
            rlimits.push(Rlimit {
                name: "RLIMIT_CPU",
                resource: libc::RLIMIT_CPU,
                soft: secs,
                hard: secs + 1,
            });
        }
        OsPolicy {
            read_files: vec![PathBuf::from(&spec.artifact)],
            read_dirs: ro.iter().map(|p| PathBuf::from(&p.host_path)).collect(),
            write_dirs: rw.iter().map(|p| PathBuf::from(&p.host_path)).collect(),
            rlimits,
            pid,
            walls: spec.probe.unwrap_or(Walls::ALL),
        }
    }

    /// Apply every step to the calling process. Call on the main thread
    /// before any other thread starts: Landlock and seccomp bind the calling
    /// thread and those it creates afterwards. The seccomp programs come
    /// built ahead, by [`build_filters`].
    pub fn apply(&self, filters: &Filters) -> Vec<Step> {
        vec![
            step("no-new-privs", no_new_privs()),
            step("parent-death signal", parent_death_signal()),
            step("close inherited fds", close_inherited()),
            step("rlimits", self.set_rlimits()),
            step(
                "landlock",
                unless_left_out(self.walls.landlock, || self.landlock()),
            ),
            step("capabilities", drop_capabilities()),
            step(
                "seccomp",
                unless_left_out(self.walls.seccomp, || install_filters(filters)),
            ),
        ]
    }

    fn set_rlimits(&self) -> Result<String, String> {
        for limit in &self.rlimits {
            let value = libc::rlimit {
                rlim_cur: limit.soft,
                rlim_max: limit.hard,
            };
            // SAFETY: setrlimit reads the struct we pass.
            if unsafe { libc::setrlimit(limit.resource, &value) } != 0 {
                return Err(format!(
                    "{}: {}",
                    limit.name,
                    std::io::Error::last_os_error()
                ));
            }
        }
        Ok(self
            .rlimits
            .iter()
            .map(|l| format!("{}={}", l.name, l.soft))
            .collect::<Vec<_>>()
            .join(", "))
    }

    fn landlock(&self) -> Result<String, String> {
        let abi = LANDLOCK_ABI;
        let status = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(AccessFs::from_all(abi))
            // No TCP bind or connect at all (no rule grants any).
            .and_then(|r| r.handle_access(AccessNet::from_all(abi)))
            .and_then(|r| r.scope(Scope::Signal | Scope::AbstractUnixSocket))
            .and_then(|r| r.create())
            .and_then(|r| {
                r.add_rules(path_beneath_rules(
                    &self.read_files,
                    AccessFs::from_read(abi),
                ))
            })
            .and_then(|r| {
                r.add_rules(path_beneath_rules(
                    &self.read_dirs,
                    AccessFs::from_read(abi),
                ))
            })
            .and_then(|r| {
                r.add_rules(path_beneath_rules(
                    &self.write_dirs,
                    AccessFs::from_all(abi),
                ))
            })
            .and_then(|r| r.restrict_self())
            .map_err(|err| err.to_string())?;
        match status.ruleset {
            RulesetStatus::FullyEnforced => {
                Ok("fully enforced (filesystem, TCP, signal scope)".into())
            }
            RulesetStatus::PartiallyEnforced => {
                Err("only partly enforced: this kernel lacks some Landlock features".into())
            }
            RulesetStatus::NotEnforced => Err("not enforced: this kernel has no Landlock".into()),
        }
    }
}

/// The compiled seccomp program (see [`super::bpf`]).
#[derive(Clone)]
pub struct Filters(Vec<libc::sock_filter>);

impl fmt::Debug for Filters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Filters({} instructions)", self.0.len())
    }
}

/// The seccomp program for a runner whose pid is `pid`, compiled ahead: it
/// depends on nothing in the launch spec, so a runner builds it while it
/// waits for one (a pooled runner has it ready).
pub fn build_filters(pid: u32) -> Filters {
    Filters(super::bpf::program(pid))
}

/// Install the program, after the `SIGSYS` handler that reports refusals.
fn install_filters(filters: &Filters) -> Result<String, String> {
    install_sigsys_report()?;
    super::bpf::install(&filters.0)?;
    Ok(format!(
        "{} system calls allowed, {} denied, any other stops the runner; clone only for \
         threads; clone3 ENOSYS; signals only to itself; no TIOCSTI; no set-id chmod",
        names(|r| r != Rule::Deny).len(),
        names(|r| r == Rule::Deny).len()
    ))
}

/// Where a `SIGSYS` from the seccomp filter lands: store the refused
/// call's number on the sandbox report page and end the runner. Only
/// async-signal-safe steps: an atomic store and `_exit`.
extern "C" fn report_refused_call(
    _signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    // For SIGSYS the union after the first three ints (and padding) holds
    // the call's address, then its number: offset 24 on 64-bit Linux.
    // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO handlers.
    let nr = unsafe { std::ptr::read_unaligned(info.cast::<u8>().add(24).cast::<i32>()) };
    crate::os::report::store_in_runner(nr);
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(EXIT_SANDBOX_REFUSED) }
}

fn install_sigsys_report() -> Result<(), String> {
    if !crate::os::report::mapped_in_runner() {
        return Err(format!(
            "no sandbox report page: the runner's shared memory (fd {SANDBOX_REPORT_FD}) is not mapped"
        ));
    }
    // SAFETY: a zeroed sigaction with our handler and SA_SIGINFO; the
    // handler is an `extern "C"` function that lives forever.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = report_refused_call as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) != 0 {
            return Err(format!(
                "cannot catch SIGSYS: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Raise a wall unless a probe left it out on purpose.
fn unless_left_out(
    raise: bool,
    wall: impl FnOnce() -> Result<String, String>,
) -> Result<String, String> {
    if raise {
        wall()
    } else {
        Ok("left out for this probe".into())
    }
}

fn step(name: &'static str, outcome: Result<String, String>) -> Step {
    Step { name, outcome }
}

/// Securebits that keep a root process from regaining capabilities (no
/// root magic, no fix-ups on uid changes, no ambient raise), each locked.
const SECUREBITS: libc::c_ulong = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80;

/// No capabilities, even when the host runs as root: securebits locked,
/// the bounding and ambient sets cleared, then the effective, permitted and
/// inheritable sets emptied. A process without privilege cannot clear its
/// bounding set; it holds no capability either, and exec is denied.
fn drop_capabilities() -> Result<String, String> {
    // SAFETY: prctl with integer arguments only.
    let locked = unsafe { libc::prctl(libc::PR_SET_SECUREBITS, SECUREBITS, 0, 0, 0) } == 0;
    // Every capability this kernel knows: dropping one past the last
    // fails with EINVAL.
    let mut bounding_cleared = true;
    for cap in 0..64 as libc::c_ulong {
        // SAFETY: as above.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            bounding_cleared = false;
        }
    }
    // SAFETY: as above.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads one header and two data structs we own.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(format!(
            "cannot empty the capability sets: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(match (locked, bounding_cleared) {
        (true, true) => "none: sets and bounding set empty, securebits locked".into(),
        _ => "none held (the bounding set stays: not privileged to clear it)".into(),
    })
}

fn no_new_privs() -> Result<String, String> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok("set".into())
}

fn parent_death_signal() -> Result<String, String> {
    let mut signal: libc::c_int = 0;
    // SAFETY: PR_GET_PDEATHSIG writes one int.
    if unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut signal as *mut libc::c_int) } != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    if signal == libc::SIGKILL {
        Ok("SIGKILL".into())
    } else {
        Err(format!("expected SIGKILL, found signal {signal}"))
    }
}

fn close_inherited() -> Result<String, String> {
    // SAFETY: close_range on descriptors this process does not use: 0-2
    // are the guest's stdio and 3-4 the control pipes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            FIRST_UNINHERITED_FD as u32,
            u32::MAX,
            0u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok("all but stdio and the control pipes".into())
}

impl fmt::Display for OsPolicy {
    /// What `wasmproc sandbox explain` prints for the second wall.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |paths: &[PathBuf]| {
            if paths.is_empty() {
                "nothing".to_owned()
            } else {
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        writeln!(
            f,
            "  process:    its own, dies with the host (SIGKILL on parent death), no new privileges, \
             no capabilities (securebits locked)"
        )?;
        writeln!(
            f,
            "  fds:        stdio and the two control pipes; everything else closed"
        )?;
        writeln!(f, "  landlock:   read {}", list(&self.read_files))?;
        writeln!(f, "              read folders {}", list(&self.read_dirs))?;
        writeln!(
            f,
            "              read-write folders {}",
            list(&self.write_dirs)
        )?;
        writeln!(
            f,
            "              no other path; no TCP bind or connect; no signals or abstract sockets outside the runner"
        )?;
        writeln!(
            f,
            "  seccomp:    EPERM for {}",
            names(|r| r == Rule::Deny).join(", ")
        )?;
        writeln!(
            f,
            "              allowed only {}; any other call stops the runner",
            names(|r| r != Rule::Deny).join(", ")
        )?;
        let ioctls: Vec<&str> = DENIED_IOCTLS.iter().map(|(name, _)| *name).collect();
        writeln!(
            f,
            "              {} only with CLONE_THREAD, {} ENOSYS, {} only to itself, no ioctl {}, \
             no set-id {}, {} only AF_UNIX",
            names(|r| r == Rule::ThreadsOnly).join("/"),
            names(|r| r == Rule::Enosys).join("/"),
            names(|r| matches!(r, Rule::OnlyToItself(_))).join("/"),
            ioctls.join("/"),
            names(|r| matches!(r, Rule::NoSetId(_))).join("/"),
            names(|r| r == Rule::UnixOnly).join("/"),
        )?;
        let limits: Vec<String> = self
            .rlimits
            .iter()
            .map(|l| format!("{} {}", l.name, l.soft))
            .collect();
        write!(f, "  rlimits:    {}", limits.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_is_in_the_table_once_with_its_own_name() {
        let mut numbers: Vec<i64> = SYSCALLS.iter().map(|(_, nr, _)| *nr).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), SYSCALLS.len(), "a call is listed twice");
        for (name, nr, _) in SYSCALLS {
            assert_eq!(crate::os::syscalls::name(*nr), *name);
        }
        assert_eq!(crate::os::syscalls::name(libc::SYS_uname), "uname");
        assert!(!SYSCALLS.iter().any(|(name, _, _)| *name == "uname"));
        let rule = |name: &str| SYSCALLS.iter().find(|(n, _, _)| *n == name).map(|e| e.2);
        assert_eq!(rule("execve"), Some(Rule::Deny));
        assert_eq!(rule("clone"), Some(Rule::ThreadsOnly));
        assert_eq!(rule("kill"), Some(Rule::OnlyToItself(0)));
        assert_eq!(rule("fchmodat"), Some(Rule::NoSetId(2)));
    }

    #[test]
    fn explain_lists_every_denied_call() {
        let spec = LaunchSpec {
            protocol_version: wasmproc_protocol::PROTOCOL_VERSION,
            id: wasmproc_protocol::GuestId(1),
            name: None,
            artifact: "/nonexistent.cwasm".into(),
            kind: wasmproc_protocol::ModuleKind::Component,
            args: Vec::new(),
            env: Vec::new(),
            preopens: Vec::new(),
            limits: wasmproc_protocol::Limits::default(),
            probe: None,
        };
        let text = OsPolicy::for_spec(&spec, 1).to_string();
        let line = text
            .lines()
            .find(|l| l.contains("seccomp:"))
            .expect("a seccomp line");
        for name in names(|r| r == Rule::Deny) {
            assert!(line.contains(name), "{name} is missing from `{line}`");
        }
        let allowed = text
            .lines()
            .find(|l| l.contains("allowed only"))
            .expect("an allow-list line");
        for name in names(|r| r != Rule::Deny) {
            assert!(
                allowed.contains(&format!(" {name},")) || allowed.contains(&format!(" {name};")),
                "{name} is missing from `{allowed}`"
            );
        }
    }
}
