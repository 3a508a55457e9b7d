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

/// Try each forbidden operation and print `NAME: RESULT` lines on stdout.
pub fn run(spec: &LaunchSpec) {
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
    }
    let mut out = std::io::stdout().lock();
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}
