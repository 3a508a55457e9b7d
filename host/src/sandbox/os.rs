//! The second wall: the OS process around each guest.
//!
//! [`OsPolicy`] is what a runner applies to itself, on its main thread,
//! after reading its launch spec and before any other thread exists or any
//! guest code runs. Every step is checked; a step the kernel cannot do is
//! reported, never skipped in silence. `wasmproc sandbox explain` prints the
//! same object, so what it says is what runs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, path_beneath_rules,
};
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};
use wasmproc_protocol::contract::{EXIT_SANDBOX_REFUSED, FIRST_UNINHERITED_FD, SANDBOX_REPORT_FD};
use wasmproc_protocol::{LaunchSpec, Walls};

/// Open files a runner may hold: its stdio and control pipes, the artifact,
/// preopened folders and the guest's own files.
pub const MAX_OPEN_FILES: u64 = 256;

/// The Landlock ABI the policy asks for (Linux 6.12+ has 6: signal scoping).
const LANDLOCK_ABI: ABI = ABI::V6;

/// System calls that fail with `EPERM` in a runner, whatever their
/// arguments, with their numbers: one table for the filter and for
/// `sandbox explain`.
pub const DENIED_SYSCALLS: &[(&str, i64)] = &[
    ("execve", libc::SYS_execve),
    ("execveat", libc::SYS_execveat),
    ("fork", libc::SYS_fork),
    ("vfork", libc::SYS_vfork),
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("socket", libc::SYS_socket),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("setns", libc::SYS_setns),
    ("unshare", libc::SYS_unshare),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("acct", libc::SYS_acct),
    ("iopl", libc::SYS_iopl),
    ("ioperm", libc::SYS_ioperm),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("tkill", libc::SYS_tkill),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("pidfd_open", libc::SYS_pidfd_open),
    ("pidfd_send_signal", libc::SYS_pidfd_send_signal),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("sethostname", libc::SYS_sethostname),
    ("setdomainname", libc::SYS_setdomainname),
    ("adjtimex", libc::SYS_adjtimex),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("clock_settime", libc::SYS_clock_settime),
    ("settimeofday", libc::SYS_settimeofday),
    ("syslog", libc::SYS_syslog),
    ("mknod", libc::SYS_mknod),
    ("mknodat", libc::SYS_mknodat),
    ("sched_setscheduler", libc::SYS_sched_setscheduler),
    ("sched_setparam", libc::SYS_sched_setparam),
    ("sched_setattr", libc::SYS_sched_setattr),
    ("setpriority", libc::SYS_setpriority),
    ("ioprio_set", libc::SYS_ioprio_set),
    ("quotactl", libc::SYS_quotactl),
    ("vhangup", libc::SYS_vhangup),
    ("memfd_create", libc::SYS_memfd_create),
];

/// System calls a runner may make: what wasmtime, tokio, the WASI
/// implementation and the runner's own code use (enumerated by running the
/// whole test suite under the filter, plus the WASI file operations the
/// conformance suite does not happen to reach), each with the reason it is
/// there. Files are Landlock's to confine; descriptors are the runner's own.
/// [`DENIED_SYSCALLS`] answer `EPERM`; any other call stops the runner, and
/// its status names the call.
pub const ALLOWED_SYSCALLS: &[(&str, i64)] = &[
    // memory
    ("brk", libc::SYS_brk),
    ("mmap", libc::SYS_mmap),
    ("munmap", libc::SYS_munmap),
    ("mprotect", libc::SYS_mprotect),
    ("madvise", libc::SYS_madvise),
    ("mremap", libc::SYS_mremap),
    ("membarrier", libc::SYS_membarrier),
    // threads (tokio's blocking pool runs WASI file operations)
    ("clone", libc::SYS_clone),
    ("clone3", libc::SYS_clone3),
    ("futex", libc::SYS_futex),
    ("set_robust_list", libc::SYS_set_robust_list),
    ("rseq", libc::SYS_rseq),
    ("gettid", libc::SYS_gettid),
    ("getpid", libc::SYS_getpid),
    ("sched_yield", libc::SYS_sched_yield),
    ("sched_getaffinity", libc::SYS_sched_getaffinity),
    ("prctl", libc::SYS_prctl),
    ("exit", libc::SYS_exit),
    ("exit_group", libc::SYS_exit_group),
    ("restart_syscall", libc::SYS_restart_syscall),
    // signals (wasmtime's trap handlers; signals only to itself, below)
    ("rt_sigaction", libc::SYS_rt_sigaction),
    ("rt_sigprocmask", libc::SYS_rt_sigprocmask),
    ("rt_sigreturn", libc::SYS_rt_sigreturn),
    ("sigaltstack", libc::SYS_sigaltstack),
    ("kill", libc::SYS_kill),
    ("tgkill", libc::SYS_tgkill),
    ("rt_sigqueueinfo", libc::SYS_rt_sigqueueinfo),
    ("rt_tgsigqueueinfo", libc::SYS_rt_tgsigqueueinfo),
    // time
    ("clock_gettime", libc::SYS_clock_gettime),
    ("clock_getres", libc::SYS_clock_getres),
    ("gettimeofday", libc::SYS_gettimeofday),
    ("nanosleep", libc::SYS_nanosleep),
    ("clock_nanosleep", libc::SYS_clock_nanosleep),
    // the event loop
    ("epoll_create1", libc::SYS_epoll_create1),
    ("epoll_ctl", libc::SYS_epoll_ctl),
    ("epoll_wait", libc::SYS_epoll_wait),
    ("epoll_pwait", libc::SYS_epoll_pwait),
    ("epoll_pwait2", libc::SYS_epoll_pwait2),
    ("eventfd2", libc::SYS_eventfd2),
    ("poll", libc::SYS_poll),
    ("ppoll", libc::SYS_ppoll),
    ("pipe2", libc::SYS_pipe2),
    ("socketpair", libc::SYS_socketpair),
    // reading and writing its own descriptors
    ("read", libc::SYS_read),
    ("write", libc::SYS_write),
    ("readv", libc::SYS_readv),
    ("writev", libc::SYS_writev),
    ("pread64", libc::SYS_pread64),
    ("pwrite64", libc::SYS_pwrite64),
    ("preadv", libc::SYS_preadv),
    ("pwritev", libc::SYS_pwritev),
    ("preadv2", libc::SYS_preadv2),
    ("pwritev2", libc::SYS_pwritev2),
    ("close", libc::SYS_close),
    ("close_range", libc::SYS_close_range),
    ("dup", libc::SYS_dup),
    ("dup3", libc::SYS_dup3),
    ("fcntl", libc::SYS_fcntl),
    ("ioctl", libc::SYS_ioctl),
    ("lseek", libc::SYS_lseek),
    ("fsync", libc::SYS_fsync),
    ("fdatasync", libc::SYS_fdatasync),
    ("ftruncate", libc::SYS_ftruncate),
    ("fallocate", libc::SYS_fallocate),
    ("fadvise64", libc::SYS_fadvise64),
    // files, as Landlock allows (WASI's filesystem)
    ("openat", libc::SYS_openat),
    ("openat2", libc::SYS_openat2),
    ("newfstatat", libc::SYS_newfstatat),
    ("fstat", libc::SYS_fstat),
    ("statx", libc::SYS_statx),
    ("fstatfs", libc::SYS_fstatfs),
    ("getdents64", libc::SYS_getdents64),
    ("unlinkat", libc::SYS_unlinkat),
    ("mkdirat", libc::SYS_mkdirat),
    ("renameat", libc::SYS_renameat),
    ("renameat2", libc::SYS_renameat2),
    ("symlinkat", libc::SYS_symlinkat),
    ("linkat", libc::SYS_linkat),
    ("readlinkat", libc::SYS_readlinkat),
    ("utimensat", libc::SYS_utimensat),
    ("faccessat", libc::SYS_faccessat),
    ("faccessat2", libc::SYS_faccessat2),
    ("fchmod", libc::SYS_fchmod),
    ("fchmodat", libc::SYS_fchmodat),
    ("fchmodat2", libc::SYS_fchmodat2),
    ("chmod", libc::SYS_chmod),
    ("getcwd", libc::SYS_getcwd),
    // randomness
    ("getrandom", libc::SYS_getrandom),
    // reading its own (empty) capability sets
    ("capget", libc::SYS_capget),
];

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
    /// thread and those it creates afterwards.
    pub fn apply(&self) -> Vec<Step> {
        vec![
            step("no-new-privs", no_new_privs()),
            step("parent-death signal", parent_death_signal()),
            step("close inherited fds", close_inherited()),
            step("rlimits", self.set_rlimits()),
            step("landlock", self.wall(self.walls.landlock, Self::landlock)),
            step("capabilities", drop_capabilities()),
            step("seccomp", self.wall(self.walls.seccomp, Self::seccomp)),
        ]
    }

    /// Raise a wall unless a probe left it out on purpose.
    fn wall(
        &self,
        raise: bool,
        step: fn(&Self) -> Result<String, String>,
    ) -> Result<String, String> {
        if raise {
            step(self)
        } else {
            Ok("left out for this probe".into())
        }
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

    fn seccomp(&self) -> Result<String, String> {
        let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
        let cond = |arg, op, value| {
            SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value)
                .map_err(|e| e.to_string())
        };
        let rule = |conds| SeccompRule::new(conds).map_err(|e| e.to_string());

        // clone3 answers ENOSYS, so libc falls back to clone, whose flags a
        // filter can read.
        let mut enosys = BTreeMap::new();
        enosys.insert(libc::SYS_clone3, Vec::new());
        let enosys = SeccompFilter::new(
            enosys,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )
        .map_err(|e| e.to_string())?;

        // The allow-list: anything neither allowed nor denied traps, and the
        // SIGSYS handler reports which call it was, then ends the runner.
        // (Denied calls pass this filter so the next one answers EPERM: of
        // two filters' answers the kernel keeps the stricter, and TRAP is
        // stricter than EPERM.)
        let mut allow: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for (_, nr) in ALLOWED_SYSCALLS.iter().chain(DENIED_SYSCALLS) {
            allow.insert(*nr, Vec::new());
        }
        // Only Unix socket pairs (tokio's and the WASI implementation's).
        allow.insert(
            libc::SYS_socketpair,
            vec![rule(vec![cond(
                0,
                SeccompCmpOp::Eq,
                libc::AF_UNIX as u64,
            )?])?],
        );
        let allow = SeccompFilter::new(allow, SeccompAction::Trap, SeccompAction::Allow, arch)
            .map_err(|e| e.to_string())?;
        install_sigsys_report()?;

        let mut deny: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for (_, nr) in DENIED_SYSCALLS {
            deny.insert(*nr, Vec::new());
        }
        let thread = libc::CLONE_THREAD as u64;
        // clone without CLONE_THREAD makes a process.
        deny.insert(
            libc::SYS_clone,
            vec![rule(vec![cond(0, SeccompCmpOp::MaskedEq(thread), 0)?])?],
        );
        // Signals only to itself.
        let me = u64::from(self.pid);
        deny.insert(
            libc::SYS_kill,
            vec![rule(vec![cond(0, SeccompCmpOp::Ne, me)?])?],
        );
        deny.insert(
            libc::SYS_tgkill,
            vec![rule(vec![cond(0, SeccompCmpOp::Ne, me)?])?],
        );
        for nr in [libc::SYS_rt_sigqueueinfo, libc::SYS_rt_tgsigqueueinfo] {
            deny.insert(nr, vec![rule(vec![cond(0, SeccompCmpOp::Ne, me)?])?]);
        }
        // No typing into a terminal, whatever descriptor it is on.
        let mut ioctls = Vec::new();
        for (_, request) in DENIED_IOCTLS {
            ioctls.push(rule(vec![cond(1, SeccompCmpOp::Eq, *request)?])?);
        }
        deny.insert(libc::SYS_ioctl, ioctls);
        // No set-user-id or set-group-id files (the mode argument's place
        // differs per call).
        for (nr, mode_arg) in [
            (libc::SYS_chmod, 1),
            (libc::SYS_fchmod, 1),
            (libc::SYS_fchmodat, 2),
            (libc::SYS_fchmodat2, 2),
        ] {
            let setid = |bit: u64| -> Result<SeccompRule, String> {
                rule(vec![cond(mode_arg, SeccompCmpOp::MaskedEq(bit), bit)?])
            };
            deny.insert(
                nr,
                vec![setid(libc::S_ISUID as u64)?, setid(libc::S_ISGID as u64)?],
            );
        }
        let deny = SeccompFilter::new(
            deny,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch,
        )
        .map_err(|e| e.to_string())?;

        // The allow-list last: once it is in, installing a filter is refused.
        for filter in [enosys, deny, allow] {
            let program: seccompiler::BpfProgram = filter
                .try_into()
                .map_err(|e: seccompiler::BackendError| e.to_string())?;
            seccompiler::apply_filter(&program).map_err(|e| e.to_string())?;
        }
        Ok(format!(
            "{} system calls allowed, {} denied, any other stops the runner; clone only for \
             threads; clone3 ENOSYS; signals only to itself; no TIOCSTI; no set-id chmod",
            ALLOWED_SYSCALLS.len(),
            DENIED_SYSCALLS.len()
        ))
    }
}

/// Where a `SIGSYS` from the seccomp filter lands: report the refused
/// call's number on the sandbox report pipe and end the runner. Only
/// async-signal-safe calls: `write` and `_exit`.
extern "C" fn report_refused_call(
    _signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    // For SIGSYS the union after the first three ints (and padding) holds
    // the call's address, then its number: offset 24 on 64-bit Linux.
    // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO handlers.
    let nr = unsafe { std::ptr::read_unaligned(info.cast::<u8>().add(24).cast::<i32>()) };
    let bytes = nr.to_le_bytes();
    // SAFETY: write and _exit are async-signal-safe; `bytes` lives here.
    unsafe {
        libc::write(SANDBOX_REPORT_FD, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(EXIT_SANDBOX_REFUSED);
    }
}

fn install_sigsys_report() -> Result<(), String> {
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
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse::<libc::c_ulong>().ok())
        .unwrap_or(63);
    let mut bounding_cleared = true;
    for cap in 0..=last {
        // SAFETY: as above.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
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
        let denied: Vec<&str> = DENIED_SYSCALLS.iter().map(|(name, _)| *name).collect();
        writeln!(f, "  seccomp:    EPERM for {}", denied.join(", "))?;
        let allowed: Vec<&str> = ALLOWED_SYSCALLS.iter().map(|(name, _)| *name).collect();
        writeln!(
            f,
            "              allowed only {}; any other call stops the runner",
            allowed.join(", ")
        )?;
        let ioctls: Vec<&str> = DENIED_IOCTLS.iter().map(|(name, _)| *name).collect();
        writeln!(
            f,
            "              clone only with CLONE_THREAD, clone3 ENOSYS, kill/tgkill/rt_*sigqueueinfo \
             only to itself, no ioctl {}, no set-id chmod",
            ioctls.join("/")
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
    fn every_denied_call_has_one_name_and_its_own_number() {
        let mut names: Vec<&str> = DENIED_SYSCALLS.iter().map(|(name, _)| *name).collect();
        let mut numbers: Vec<i64> = DENIED_SYSCALLS.iter().map(|(_, nr)| *nr).collect();
        names.sort_unstable();
        names.dedup();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(names.len(), DENIED_SYSCALLS.len(), "a name is listed twice");
        assert_eq!(
            numbers.len(),
            DENIED_SYSCALLS.len(),
            "a number is listed twice"
        );
        assert!(
            DENIED_SYSCALLS
                .iter()
                .any(|(name, nr)| *name == "execve" && *nr == libc::SYS_execve)
        );
    }

    #[test]
    fn the_allow_list_has_each_call_once_and_none_that_is_denied() {
        let mut numbers: Vec<i64> = ALLOWED_SYSCALLS.iter().map(|(_, nr)| *nr).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(
            numbers.len(),
            ALLOWED_SYSCALLS.len(),
            "a call is allowed twice"
        );
        for (name, nr) in ALLOWED_SYSCALLS {
            assert!(
                !DENIED_SYSCALLS.iter().any(|(_, d)| d == nr),
                "{name} is both allowed and denied"
            );
            assert_eq!(crate::sandbox::syscall_name(*nr), *name);
        }
        assert_eq!(crate::sandbox::syscall_name(libc::SYS_uname), "uname");
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
        for (name, _) in DENIED_SYSCALLS {
            assert!(line.contains(name), "{name} is missing from `{line}`");
        }
        let allowed = text
            .lines()
            .find(|l| l.contains("allowed only"))
            .expect("an allow-list line");
        for (name, _) in ALLOWED_SYSCALLS {
            assert!(
                allowed.contains(&format!(" {name},")) || allowed.contains(&format!(" {name};")),
                "{name} is missing from `{allowed}`"
            );
        }
    }
}
