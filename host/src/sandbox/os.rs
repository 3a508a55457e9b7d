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
    ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, path_beneath_rules,
};
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};
use wasmproc_protocol::LaunchSpec;
use wasmproc_protocol::contract::FIRST_UNINHERITED_FD;

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
            step("landlock", self.landlock()),
            step("capabilities", drop_capabilities()),
            step("seccomp", self.seccomp()),
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
                Ok("fully enforced (filesystem and signal scope)".into())
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

        for filter in [enosys, deny] {
            let program: seccompiler::BpfProgram = filter
                .try_into()
                .map_err(|e: seccompiler::BackendError| e.to_string())?;
            seccompiler::apply_filter(&program).map_err(|e| e.to_string())?;
        }
        Ok(format!(
            "{} system calls denied; clone only for threads; clone3 ENOSYS; signals only to itself; \
             no TIOCSTI; no set-id chmod",
            DENIED_SYSCALLS.len()
        ))
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
            "              no other path; no signals or abstract sockets outside the runner"
        )?;
        let denied: Vec<&str> = DENIED_SYSCALLS.iter().map(|(name, _)| *name).collect();
        writeln!(f, "  seccomp:    EPERM for {}", denied.join(", "))?;
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
            probe: false,
        };
        let text = OsPolicy::for_spec(&spec, 1).to_string();
        let line = text
            .lines()
            .find(|l| l.contains("seccomp:"))
            .expect("a seccomp line");
        for (name, _) in DENIED_SYSCALLS {
            assert!(line.contains(name), "{name} is missing from `{line}`");
        }
    }
}
