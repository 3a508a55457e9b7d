//! Pipes for control channels and pipelines, and the socketpair a guest's
//! control channel becomes where pipes would not fit.
//!
//! A control channel is two pipes while the host's descriptors fill less
//! than half of its open-files limit (the pipes' own numbers say so: the
//! kernel gives out the lowest free one), and one `socketpair` after that.
//! A pipe is the cheaper of the two (a write to a Unix socket allocates a
//! buffer: on this project's 2-vCPU reference machine a 64-byte ping-pong
//! takes 6.6 µs over pipes and 12.8 µs over a socketpair), but it costs
//! the host two descriptors per guest where the socket costs one. With a
//! limit of 20,000, the first 5,000 guests get pipes and the next ones
//! sockets, so 10,000 guests hold 15,000 descriptors. The runner
//! sees no difference: its fds 3 and 4 are the two pipes, or the one socket
//! twice, and it reads one and writes the other.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, Interest, ReadBuf};

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

/// The host's end(s) of a new control channel and the runner's `(fd 3,
/// fd 4)`: two pipes while their descriptors are numbered below half of
/// the open-files limit, one socketpair (the runner's end twice) after that.
///
/// # Errors
///
/// When the process is out of descriptors.
pub(crate) fn control_channel() -> io::Result<((ControlFd, ControlFd), (OwnedFd, OwnedFd))> {
    let half = crate::os::limits::open_files_limit() / 2;
    let (runner_in, host_out) = cloexec_pipe()?;
    let (host_in, runner_out) = cloexec_pipe()?;
    let highest = [&runner_in, &host_out, &host_in, &runner_out]
        .iter()
        .map(|fd| fd.as_raw_fd())
        .max()
        .unwrap_or_default();
    if u64::try_from(highest).unwrap_or(u64::MAX) < half {
        enlarge_pipe(host_out.as_fd());
        enlarge_pipe(host_in.as_fd());
        let host = (
            ControlFd::from_owned_fd(host_out)?,
            ControlFd::from_owned_fd(host_in)?,
        );
        return Ok((host, (runner_in, runner_out)));
    }
    drop((runner_in, host_out, host_in, runner_out));
    let (host_end, runner_end) = cloexec_socketpair()?;
    for end in [&host_end, &runner_end] {
        enlarge_socket(end.as_fd());
    }
    let runner_out = runner_end.try_clone()?;
    let host = ControlFd::from_owned_fd(host_end)?;
    Ok(((host.clone(), host), (runner_end, runner_out)))
}

/// A new Unix stream socketpair, closed on exec.
fn cloexec_socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two new descriptors into `fds`.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Ask for a send buffer as large as a control pipe's. Best effort: the
/// kernel caps it at `net.core.wmem_max`.
fn enlarge_socket(fd: BorrowedFd<'_>) {
    let size: libc::c_int = PIPE_BUFFER;
    // SAFETY: SO_SNDBUF reads one int.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// One end of a control channel in non-blocking mode, registered with the
/// runtime: a pipe's end, or a socket shared by the channel's reader and
/// writer (clones share it).
#[derive(Debug, Clone)]
pub struct ControlFd(Arc<AsyncFd<OwnedFd>>);

impl ControlFd {
    /// `fd` (a pipe's end or a stream socket), made non-blocking and
    /// registered with the current runtime.
    ///
    /// # Errors
    ///
    /// Outside a runtime, or when `fd` cannot be registered.
    pub fn from_owned_fd(fd: OwnedFd) -> io::Result<ControlFd> {
        set_nonblocking(&fd)?;
        // SAFETY: an OwnedFd stays open and keeps its number until
        // dropped, which only the AsyncFd can do.
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
                .map_err(|err| err.into_parts().1)?;
        Ok(ControlFd(Arc::new(fd)))
    }

    /// The descriptor (for a thread outside the runtime that writes to it
    /// with [`crate::connection::Batch::write_blocking`]).
    pub fn as_raw_fd(&self) -> RawFd {
        self.0.get_ref().as_raw_fd()
    }

    /// Wait until it takes bytes.
    ///
    /// # Errors
    ///
    /// When the descriptor fails.
    pub async fn writable(&self) -> io::Result<()> {
        // Dropped without clearing: the next write finds it ready.
        self.0.writable().await.map(drop)
    }

    /// Write from `slices` (one `writev`), waiting while it is full.
    ///
    /// # Errors
    ///
    /// When the other end is closed or the write fails.
    pub async fn write_vectored(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            let mut ready = self.0.writable().await?;
            let count = slices.len().min(libc::c_int::MAX as usize) as libc::c_int;
            // SAFETY: `IoSlice` is ABI-compatible with `iovec` and the
            // buffers outlive the call.
            let written = ready.try_io(|fd| {
                let n = unsafe { libc::writev(fd.as_raw_fd(), slices.as_ptr().cast(), count) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n.unsigned_abs())
                }
            });
            if let Ok(result) = written {
                return result;
            }
        }
    }
}

impl AsyncRead for ControlFd {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut ready = ready!(self.0.poll_read_ready(cx))?;
            // SAFETY: the bytes are only written (by read) and then marked
            // initialized, never read before.
            let unfilled = unsafe { buf.unfilled_mut() };
            let room = unfilled.len();
            let read = ready.try_io(|fd| {
                // SAFETY: reads at most `room` bytes into it.
                let n = unsafe { libc::read(fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), room) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n.unsigned_abs())
                }
            });
            if let Ok(result) = read {
                let n = result?;
                // A short read took all the pipe (or stream socket) held:
                // forget the readiness, so that the next read waits for the
                // reactor's next event instead of trying a `read` that can
                // only say `EAGAIN` (one syscall per frame saved, on each
                // side of every hop). Bytes that came meanwhile raised a
                // new edge, which the reactor sees; `clear_ready` keeps a
                // readiness newer than this guard's.
                if n > 0 && n < room {
                    ready.clear_ready();
                }
                // SAFETY: read initialized the first `n` unfilled bytes.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// Put `fd` in non-blocking mode.
fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: F_GETFL and F_SETFL on a descriptor the caller owns.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

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

    /// A short read forgets the pipe's readiness; what is written after it
    /// must still wake the reader, on either kind of runtime.
    #[test]
    fn bytes_written_after_a_short_read_still_wake_the_reader() {
        use tokio::io::AsyncReadExt;
        for multi_thread in [false, true] {
            let runtime = if multi_thread {
                tokio::runtime::Builder::new_multi_thread()
            } else {
                tokio::runtime::Builder::new_current_thread()
            }
            .enable_all()
            .build()
            .unwrap();
            runtime.block_on(async {
                let (read, write) = cloexec_pipe().unwrap();
                let mut read = ControlFd::from_owned_fd(read).unwrap();
                let mut write = std::fs::File::from(write);
                write.write_all(b"one").unwrap();
                let mut buf = [0u8; 64];
                let n = read.read(&mut buf).await.unwrap();
                assert_eq!(&buf[..n], b"one");
                let writer = std::thread::spawn(move || {
                    for word in [&b"two"[..], b"three"] {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        write.write_all(word).unwrap();
                    }
                });
                let mut got = Vec::new();
                while got.len() < b"twothree".len() {
                    let n = tokio::time::timeout(
                        std::time::Duration::from_secs(5),
                        read.read(&mut buf),
                    )
                    .await
                    .expect("a write after a short read woke the reader")
                    .unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                assert_eq!(got, b"twothree");
                writer.join().unwrap();
            });
        }
    }
}
