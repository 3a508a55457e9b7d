//! A guest on a terminal gets a terminal of its own: a pseudo-terminal
//! whose other side the host copies to and from the user's terminal.
//!
//! The guest never holds a descriptor of the user's terminal, so it cannot
//! type into the user's shell (`TIOCSTI`) or change its settings, and as
//! the session leader of its own terminal it reads it in the foreground
//! (a runner in a process group of its own that read the user's terminal
//! would be stopped by `SIGTTIN`). The user's terminal is raw while the
//! guest runs, so keys (Ctrl-C included) reach the guest's terminal, whose
//! own line discipline does what a terminal does; it is restored when the
//! guest ends.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Whether `fd` is a terminal.
pub(crate) fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// A new pseudo-terminal: `(master, slave)`, both closed on exec.
///
/// # Errors
///
/// When the system has no pseudo-terminal to give.
pub(crate) fn open() -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: posix_openpt returns a new descriptor or -1.
    let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if master < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: grantpt and unlockpt take the master; ptsname_r writes at
    // most `name.len()` bytes, NUL-terminated.
    unsafe {
        if libc::grantpt(master.as_raw_fd()) != 0
            || libc::unlockpt(master.as_raw_fd()) != 0
            || libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: `name` is NUL-terminated by ptsname_r.
    let slave = unsafe {
        libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok((master, unsafe { OwnedFd::from_raw_fd(slave) }))
}

/// Give `to` the window size of the terminal `from` (best effort).
pub(crate) fn copy_window_size(from: RawFd, to: BorrowedFd<'_>) {
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize; TIOCSWINSZ reads one.
    unsafe {
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut size) == 0 {
            libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &size);
        }
    }
}

/// The user's terminal in raw mode until this is dropped, which restores
/// the settings it found.
pub(crate) struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl std::fmt::Debug for RawMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawMode").field("fd", &self.fd).finish()
    }
}

impl RawMode {
    /// Put the terminal `fd` in raw mode.
    ///
    /// # Errors
    ///
    /// When `fd` is not a terminal or its settings cannot be changed.
    pub(crate) fn enter(fd: RawFd) -> io::Result<RawMode> {
        // SAFETY: tcgetattr writes one termios; cfmakeraw edits our copy;
        // tcsetattr reads it.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut saved) != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(fd, libc::TCSANOW, &raw) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(RawMode { fd, saved })
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: tcsetattr reads the settings saved in `enter`.
        unsafe {
            libc::tcsetattr(self.fd, libc::TCSADRAIN, &self.saved);
        }
    }
}

/// Copy bytes from `from` to `to` until `from` ends or fails (a pty master
/// reads `EIO` once its slave is closed everywhere), or until `stop` (the
/// read end of a pipe) becomes readable.
pub(crate) fn copy(from: RawFd, to: RawFd, stop: Option<RawFd>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: from,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll reads and writes the two pollfds we own.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if ready < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        // SAFETY: read writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::read(from, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            return;
        }
        let mut rest = &buf[..n as usize];
        while !rest.is_empty() {
            // SAFETY: write reads at most `rest.len()` bytes from `rest`.
            let w = unsafe { libc::write(to, rest.as_ptr().cast(), rest.len()) };
            if w < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if w <= 0 {
                return;
            }
            rest = &rest[w as usize..];
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn a_pty_pair_carries_bytes_and_its_slave_is_a_terminal() {
        let (master, slave) = open().unwrap();
        assert!(is_terminal(slave.as_raw_fd()));
        assert!(!is_terminal(-1));
        copy_window_size(slave.as_raw_fd(), master.as_fd());
        let line = b"ping\n";
        // SAFETY: write reads `line`.
        let w = unsafe { libc::write(master.as_raw_fd(), line.as_ptr().cast(), line.len()) };
        assert_eq!(w, line.len() as isize);
        let mut buf = [0u8; 16];
        // SAFETY: read writes at most 16 bytes into `buf`.
        let n = unsafe { libc::read(slave.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        assert_eq!(&buf[..n as usize], b"ping\n");
    }
}
