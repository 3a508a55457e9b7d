//! A guest run on the user's terminal gets a terminal of its own: driven
//! here through a real pseudo-terminal standing for the user's.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use common::{cli, tool_p1};

/// A pty pair standing for the user's terminal: `(master, slave)`.
fn user_terminal() -> (std::fs::File, OwnedFd) {
    // SAFETY: plain libc calls on descriptors this test owns; ptsname_r
    // writes a NUL-terminated name into `name`.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(master >= 0);
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
        let slave = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(slave >= 0);
        (
            std::fs::File::from_raw_fd(master),
            OwnedFd::from_raw_fd(slave),
        )
    }
}

fn settings(fd: i32) -> libc::termios {
    // SAFETY: tcgetattr writes one termios.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(fd, &mut t), 0);
        t
    }
}

#[test]
fn an_interactive_guest_reads_its_own_terminal_and_the_users_is_restored() {
    let (mut master, slave) = user_terminal();
    let before = settings(master.as_raw_fd());
    let mut command = std::process::Command::new(cli());
    command
        .arg("run")
        .arg(tool_p1())
        .args(["--", "upper"])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    // SAFETY: between fork and exec only async-signal-safe calls: the CLI
    // leads a session whose controlling terminal is the "user's", as in a
    // real shell.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    drop(slave);

    // Wait until the host has put the user's terminal in raw mode.
    let deadline = Instant::now() + Duration::from_secs(30);
    while settings(master.as_raw_fd()).c_lflag & libc::ICANON != 0 {
        assert!(Instant::now() < deadline, "the terminal never went raw");
        std::thread::sleep(Duration::from_millis(20));
    }
    master.write_all(b"hello\n").unwrap();
    master.write_all(b"\x04").unwrap();

    let mut reader = master.try_clone().unwrap();
    let output = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // The master reads EIO once every slave descriptor is closed.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if out.ends_with(b"HELLO\r\n") {
                break;
            }
        }
        out
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the guest did not finish: it could not read its terminal");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = String::from_utf8(output.join().unwrap()).unwrap();
    assert_eq!(status.code(), Some(0), "{out}");
    // The guest's terminal echoes the line, then the guest answers it.
    assert_eq!(out, "hello\r\nHELLO\r\n");
    let after = settings(master.as_raw_fd());
    assert_eq!(
        (after.c_lflag, after.c_iflag, after.c_oflag),
        (before.c_lflag, before.c_iflag, before.c_oflag),
        "the user's terminal was not restored"
    );
}

/// Run the CLI with its stdio on the "user's" terminal until it exits;
/// everything the terminal showed.
fn on_terminal(command: &mut std::process::Command, secs: u64) -> (Option<i32>, String) {
    let (master, slave) = user_terminal();
    command
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap());
    let mut child = command.spawn().unwrap();
    // Only the CLI holds the terminal now: the master reads EIO once it exits.
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    drop(slave);
    let mut reader = master;
    let output = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = reader.read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the CLI did not finish within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = String::from_utf8_lossy(&output.join().unwrap()).into_owned();
    (status.code(), out)
}

#[test]
fn a_first_compile_shows_progress_on_a_terminal_and_nothing_when_piped() {
    // A 14 MB component, compiled for seconds in a cache of its own.
    let module = common::guest_in("js", "probe");
    let size = std::fs::metadata(&module).unwrap().len();
    let cache = common::scratch_dir("compile-progress");
    let (code, shown) = on_terminal(
        std::process::Command::new(cli())
            .env("WASMPROC_CACHE_DIR", &cache)
            .arg("run")
            .arg(&module)
            .args(["args", "done"]),
        120,
    );
    assert_eq!(code, Some(0), "{shown}");
    let expected = format!(
        "compiling probe.wasm ({:.1} MiB)",
        size as f64 / (1 << 20) as f64
    );
    assert!(shown.contains(&expected), "no `{expected}` in {shown:?}");
    // The spinner is cleared before the guest writes.
    assert!(shown.ends_with("done\r\n"), "{shown:?}");

    // Cached: nothing but the guest's output, terminal or not.
    let (code, shown) = on_terminal(
        std::process::Command::new(cli())
            .env("WASMPROC_CACHE_DIR", &cache)
            .arg("run")
            .arg(&module)
            .args(["args", "again"]),
        60,
    );
    assert_eq!((code, shown.as_str()), (Some(0), "again\r\n"));
    let piped = common::scratch_dir("compile-piped");
    let out = common::output_within(
        std::process::Command::new(cli())
            .env("WASMPROC_CACHE_DIR", &piped)
            .arg("run")
            .arg(&module)
            .args(["args", "piped"]),
        120,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "piped\n");
    assert_eq!(String::from_utf8(out.stderr).unwrap(), "");
}
