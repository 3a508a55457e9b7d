//! The runner's test mode: once hardened, attempt what the second wall must
//! refuse, natively (not through wasm), and print each result.
//!
//! It only runs when the host asks for it in the launch spec
//! (`Command::probe_sandbox`), and then no guest code runs at all.

use std::ffi::CString;
use std::io::Write;

use wasmproc_protocol::LaunchSpec;

fn errno() -> String {
    std::io::Error::last_os_error().to_string()
}

fn outcome(ok: bool, what: &str) -> String {
    if ok {
        format!("ALLOWED ({what})")
    } else {
        format!("denied: {}", errno())
    }
}

/// The capability sets this process holds, as the kernel reports them
/// (`capget` and `PR_CAPBSET_READ`: Landlock keeps `/proc` out of reach).
fn capabilities() -> String {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget writes one header and two data structs we own.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return format!("capabilities: unreadable: {}", errno());
    }
    let join = |low: u32, high: u32| u64::from(low) | (u64::from(high) << 32);
    let mut bounding = 0u64;
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) } == 1 {
            bounding |= 1 << cap;
        }
    }
    format!(
        "capabilities: effective {:#x}, permitted {:#x}, bounding {bounding:#x}",
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
    )
}

/// Try each forbidden operation and print `NAME: RESULT` lines on stdout.
pub fn run(spec: &LaunchSpec) {
    if spec.args.get(1).map(String::as_str) == Some("unlisted") {
        // A call on neither list: the sandbox stops the runner and says so.
        let mut name: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: uname writes one utsname we own (if it is ever allowed).
        unsafe { libc::syscall(libc::SYS_uname, &mut name) };
        return;
    }
    let mut lines = Vec::new();
    let target: libc::pid_t = spec.args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let outside = spec
        .args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "/etc/passwd".into());

    // SAFETY: each call below is a plain system call on values this function
    // owns; a success is reported and its effect undone where there is one.
    unsafe {
        let prog = CString::new("/bin/true").unwrap_or_default();
        let argv = [prog.as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null()];
        let rc = libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr());
        lines.push(format!("execve: {}", outcome(rc == 0, "exec'd")));

        let pid = libc::fork();
        if pid == 0 {
            libc::_exit(0);
        }
        if pid > 0 {
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        lines.push(format!("fork: {}", outcome(pid > 0, "forked")));

        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd >= 0 {
            libc::close(fd);
        }
        lines.push(format!("socket: {}", outcome(fd >= 0, "opened")));

        // A TCP connection to this machine (nothing listens on port 1).
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        let rc = if fd < 0 {
            -1
        } else {
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_port = 1u16.to_be();
            addr.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
            let rc = libc::connect(
                fd,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            // Keep the connect's errno, not close's.
            let err = errno();
            libc::close(fd);
            if rc != 0 {
                lines.push(format!("tcp connect: denied: {err}"));
            }
            rc
        };
        if fd < 0 {
            lines.push(format!("tcp connect: {}", outcome(false, "")));
        } else if rc == 0 {
            lines.push("tcp connect: ALLOWED (connected)".to_owned());
        }

        let path = CString::new(outside).unwrap_or_default();
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
        if fd >= 0 {
            libc::close(fd);
        }
        lines.push(format!("open outside: {}", outcome(fd >= 0, "opened")));

        // Signal 0 only checks permission: nothing is delivered.
        let rc = libc::kill(target, 0);
        lines.push(format!("kill other: {}", outcome(rc == 0, "permitted")));

        let rc = libc::ptrace(libc::PTRACE_ATTACH, target, 0, 0);
        lines.push(format!("ptrace: {}", outcome(rc == 0, "attached")));

        let rc = libc::kill(libc::getpid(), 0);
        lines.push(format!("kill self: {}", outcome(rc == 0, "permitted")));

        // Other routes to a socket, a process, a mount, the clock, a device.
        let mut params = [0u8; 120];
        let rc = libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr());
        if rc >= 0 {
            libc::close(rc as libc::c_int);
        }
        lines.push(format!("io_uring: {}", outcome(rc >= 0, "ring made")));

        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0x0300);
        if fd >= 0 {
            libc::close(fd);
        }
        lines.push(format!("packet socket: {}", outcome(fd >= 0, "opened")));

        let mut info: libc::siginfo_t = std::mem::zeroed();
        info.si_signo = 0;
        let rc = libc::syscall(libc::SYS_rt_sigqueueinfo, target, 0, &mut info);
        lines.push(format!("sigqueue other: {}", outcome(rc == 0, "permitted")));

        let rc = libc::syscall(libc::SYS_pidfd_open, target, 0);
        if rc >= 0 {
            libc::close(rc as libc::c_int);
        }
        lines.push(format!("pidfd_open other: {}", outcome(rc >= 0, "opened")));

        let rc = libc::syscall(libc::SYS_pidfd_getfd, 0, 0, 0);
        lines.push(format!("pidfd_getfd: {}", outcome(rc >= 0, "took one")));

        let root = CString::new("/").unwrap_or_default();
        let rc = libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, root.as_ptr(), 1);
        if rc >= 0 {
            libc::close(rc as libc::c_int);
        }
        lines.push(format!("open_tree: {}", outcome(rc >= 0, "cloned /")));

        let rc = libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWNS | libc::SIGCHLD) as libc::c_ulong,
            0,
            0,
            0,
            0,
        );
        if rc == 0 {
            libc::_exit(0);
        }
        lines.push(format!(
            "clone new namespace: {}",
            outcome(rc > 0, "cloned")
        ));

        let name = b"escaped";
        let rc = libc::sethostname(name.as_ptr().cast(), name.len());
        lines.push(format!("sethostname: {}", outcome(rc == 0, "renamed")));

        let mut timex: libc::timex = std::mem::zeroed();
        let rc = libc::adjtimex(&mut timex);
        lines.push(format!("adjtimex: {}", outcome(rc >= 0, "read the clock")));

        // The priority the target has (0) already: nothing changes even
        // where this is permitted.
        let rc = libc::setpriority(libc::PRIO_PROCESS, target as libc::id_t, 0);
        lines.push(format!(
            "setpriority other: {}",
            outcome(rc == 0, "reniced")
        ));

        let rc = libc::syscall(libc::SYS_memfd_create, root.as_ptr(), 0);
        if rc >= 0 {
            libc::close(rc as libc::c_int);
        }
        lines.push(format!("memfd_create: {}", outcome(rc >= 0, "made one")));

        // More routes the seccomp filter answers for; each call has
        // arguments that do nothing where it is permitted.
        let walls = spec.probe.unwrap_or(wasmproc_protocol::Walls::ALL);
        if walls.seccomp {
            // Only under seccomp: where permitted, vfork would share this stack.
            let rc = libc::syscall(libc::SYS_vfork);
            if rc == 0 {
                libc::_exit(0);
            }
            lines.push(format!("vfork: {}", outcome(rc > 0, "forked")));
        }
        let empty = CString::new("").unwrap_or_default();
        // Each result is read right after its call (errno is per call).
        let mut tried = |name: &str, rc: i64| {
            lines.push(format!("{name}: {}", outcome(rc >= 0, "permitted")));
        };
        tried(
            "execveat",
            libc::syscall(libc::SYS_execveat, -1, empty.as_ptr(), 0, 0, 0),
        );
        tried(
            "unshare",
            libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS),
        );
        tried("setns", libc::syscall(libc::SYS_setns, -1, 0));
        tried("mount", libc::syscall(libc::SYS_mount, 0, 0, 0, 0, 0));
        tried(
            "move_mount",
            libc::syscall(libc::SYS_move_mount, -1, 0, -1, 0, 0),
        );
        tried("fsopen", libc::syscall(libc::SYS_fsopen, 0, 0));
        tried(
            "tgkill other",
            libc::syscall(libc::SYS_tgkill, target, target, 0),
        );
        tried(
            "pidfd_send_signal",
            libc::syscall(libc::SYS_pidfd_send_signal, -1, 0, 0, 0),
        );
        tried(
            "process_vm_readv",
            libc::syscall(libc::SYS_process_vm_readv, target, 0, 0, 0, 0, 0),
        );
        tried(
            "open_by_handle_at",
            libc::syscall(libc::SYS_open_by_handle_at, -1, 0, 0),
        );
        tried("bpf", libc::syscall(libc::SYS_bpf, -1, 0, 0));
        tried(
            "perf_event_open",
            libc::syscall(libc::SYS_perf_event_open, 0, -1, -1, -1, 0),
        );
        tried("userfaultfd", libc::syscall(libc::SYS_userfaultfd, -1));
        tried("keyctl", libc::syscall(libc::SYS_keyctl, -1, 0, 0, 0, 0));
        tried(
            "init_module",
            libc::syscall(libc::SYS_init_module, 0, 0, empty.as_ptr()),
        );

        let byte = b'x';
        let rc = libc::ioctl(0, libc::TIOCSTI, &byte);
        lines.push(format!("TIOCSTI: {}", outcome(rc == 0, "typed")));

        if let Some(dir) = spec.args.get(3) {
            let node = CString::new(format!("{dir}/node")).unwrap_or_default();
            let rc = libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3));
            lines.push(format!("mknod: {}", outcome(rc == 0, "made a device")));

            let file = CString::new(format!("{dir}/suid")).unwrap_or_default();
            let fd = libc::open(file.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o755);
            if fd >= 0 {
                libc::close(fd);
            }
            let rc = libc::chmod(file.as_ptr(), 0o4755);
            lines.push(format!("setuid chmod: {}", outcome(rc == 0, "set")));
        }
    }
    lines.push(capabilities());
    let mut out = std::io::stdout().lock();
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}
