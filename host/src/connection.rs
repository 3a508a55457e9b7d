//! The only code that moves frames over pipes.
//!
//! [`FrameReader`] turns a pipe into a stream of typed frames (reading in
//! large chunks, so a burst of small frames costs one `read`), and
//! [`FrameWriter`] queues frames into one buffer and writes it with as few
//! `write` calls as the pipe allows: under load, many frames share a syscall.
//! The blocking helpers serve the runner's start, before any thread or async
//! runtime exists.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio_util::codec::{Decoder, FramedRead};
use wasmproc_protocol::framing::{self, FrameCodec, FrameError, MAX_FRAME_LEN};

/// Bytes read from a pipe at a time.
const READ_CHUNK: usize = 256 * 1024;

/// The pipe buffer size asked of the kernel for control pipes: large enough
/// that a burst of frames or one large message moves in few syscalls.
pub const PIPE_BUFFER: i32 = 1024 * 1024;

/// Counters of what a writer did, to see batching at work.
#[derive(Debug, Default)]
pub struct WriteStats {
    /// Frames queued.
    pub frames: AtomicU64,
    /// `write` calls that moved them.
    pub writes: AtomicU64,
}

impl WriteStats {
    /// `(frames, writes)` so far.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.frames.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
        )
    }
}

/// Reads typed frames from a pipe.
#[derive(Debug)]
pub struct FrameReader<In> {
    inner: FramedRead<pipe::Receiver, FrameCodec<In, ()>>,
    leftover: BytesMut,
}

impl<In: DeserializeOwned> FrameReader<In> {
    /// Read frames from `pipe`, starting with the bytes in `leftover` (read
    /// earlier by a blocking reader).
    pub fn new(pipe: pipe::Receiver, leftover: &[u8]) -> Self {
        let inner = FramedRead::with_capacity(pipe, FrameCodec::new(MAX_FRAME_LEN), READ_CHUNK);
        FrameReader {
            inner,
            leftover: BytesMut::from(leftover),
        }
    }

    /// The next frame, or `None` at a clean end of the stream.
    ///
    /// # Errors
    ///
    /// A [`FrameError`] for malformed, oversized or truncated frames and I/O errors.
    pub async fn next(&mut self) -> Result<Option<In>, FrameError> {
        // `FramedRead` reads before it decodes: frames already buffered by a
        // blocking read must not wait for more bytes to arrive.
        if !self.leftover.is_empty() {
            if let Some(frame) =
                FrameCodec::<In, ()>::new(MAX_FRAME_LEN).decode(&mut self.leftover)?
            {
                return Ok(Some(frame));
            }
            let partial = std::mem::take(&mut self.leftover);
            self.inner.read_buffer_mut().extend_from_slice(&partial);
        }
        self.inner.next().await.transpose()
    }
}

/// Queues frames and writes them in batches.
#[derive(Debug)]
pub struct FrameWriter {
    pipe: pipe::Sender,
    buf: Vec<u8>,
    stats: Arc<WriteStats>,
}

impl FrameWriter {
    /// A writer to `pipe` that counts into `stats`.
    pub fn new(pipe: pipe::Sender, stats: Arc<WriteStats>) -> Self {
        FrameWriter {
            pipe,
            buf: Vec::with_capacity(64 * 1024),
            stats,
        }
    }

    /// Add a frame to the next write.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLarge`] when the frame is over the protocol's limit.
    pub fn queue<T: Serialize>(&mut self, frame: &T) -> Result<(), FrameError> {
        framing::encode_into(frame, &mut self.buf, MAX_FRAME_LEN)?;
        self.stats.frames.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Write bytes that already hold whole encoded frames.
    ///
    /// # Errors
    ///
    /// When the pipe is closed or fails.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut written = 0;
        while written < bytes.len() {
            let n = self.pipe.write(&bytes[written..]).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            written += n;
            self.stats.writes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Write everything queued.
    ///
    /// # Errors
    ///
    /// When the pipe is closed or fails.
    pub async fn flush(&mut self) -> io::Result<()> {
        let buf = std::mem::take(&mut self.buf);
        let result = self.write_raw(&buf).await;
        self.buf = buf;
        result?;
        self.buf.clear();
        // Do not keep a huge buffer around after one large message.
        if self.buf.capacity() > 4 * 1024 * 1024 {
            self.buf.shrink_to(64 * 1024);
        }
        Ok(())
    }
}

/// Write one frame to a blocking pipe.
///
/// # Errors
///
/// When the frame is too large or the write fails.
pub fn write_frame_blocking<T: Serialize>(
    out: &mut impl Write,
    frame: &T,
) -> Result<(), FrameError> {
    let mut buf = Vec::new();
    framing::encode_into(frame, &mut buf, MAX_FRAME_LEN)?;
    out.write_all(&buf)?;
    Ok(())
}

/// Read one frame from a blocking pipe. Returns the frame and any bytes read
/// past it (the start of later frames).
///
/// # Errors
///
/// [`FrameError::Truncated`] when the pipe ends first, or any decoding error.
pub fn read_frame_blocking<T: DeserializeOwned>(
    input: &mut impl Read,
) -> Result<(T, Vec<u8>), FrameError> {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if let Some((frame, used)) = framing::decode::<T>(&buf, MAX_FRAME_LEN)? {
            return Ok((frame, buf.split_off(used)));
        }
        let n = match input.read(&mut chunk) {
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err.into()),
        };
        if n == 0 {
            return Err(FrameError::Truncated {
                buffered: buf.len(),
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Ask the kernel for a larger pipe buffer. Best effort: a kernel that
/// refuses leaves the default (64 KiB), which is slower but correct.
pub fn enlarge_pipe(fd: std::os::fd::BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
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
pub fn cloexec_pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are new descriptors that nothing else owns.
    Ok(unsafe {
        (
            std::os::fd::FromRawFd::from_raw_fd(fds[0]),
            std::os::fd::FromRawFd::from_raw_fd(fds[1]),
        )
    })
}
