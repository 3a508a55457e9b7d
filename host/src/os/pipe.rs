//! Pipes for control channels and pipelines.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The pipe buffer size asked of the kernel for control pipes: large enough
/// that a burst of frames or one large message moves in few syscalls.
pub(crate) const PIPE_BUFFER: i32 = 1024 * 1024;

/// Ask the kernel for a larger pipe buffer. Best effort: a kernel that
/// refuses leaves the default (64 KiB), which is slower but correct.
pub(crate) fn enlarge_pipe(fd: BorrowedFd<'_>) {
    // SAFETY: F_SETPIPE_SZ only reads its integer argument.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BUFFER);
    }
}

/// A new pipe, `(read end, write end)`, closed on exec.
///
/// # Errors
///
/// When the process is out of descriptors.
pub(crate) fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn a_pipe_is_closed_on_exec_and_carries_bytes() {
        let (read, write) = cloexec_pipe().unwrap();
        for fd in [&read, &write] {
            // SAFETY: F_GETFD only reads the descriptor's flags.
            let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
            assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        }
        enlarge_pipe(write.as_fd());
        // SAFETY: F_GETPIPE_SZ only reads the pipe's size.
        let size = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        assert!(size == PIPE_BUFFER || size == 64 * 1024, "pipe size {size}");
        let (mut read, mut write) = (std::fs::File::from(read), std::fs::File::from(write));
        write.write_all(b"abc").unwrap();
        drop(write);
        let mut got = String::new();
        read.read_to_string(&mut got).unwrap();
        assert_eq!(got, "abc");
    }
}
