//! The only code that moves frames over pipes.
//!
//! [`FrameReader`] turns a pipe into a stream of typed frames (reading in
//! large chunks, so a burst of small frames costs one `read`), and
//! [`FrameWriter`] queues frames into one buffer and writes it with as few
//! `write` calls as the pipe allows: under load, many frames share a syscall.
//! The blocking helpers serve the runner's start, before any thread or async
//! runtime exists.

use std::io::{self, IoSlice, Read, Write};
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

/// Payloads at least this large are written from where they are, after
/// their frame's head, instead of being copied into the batch.
pub const OUT_OF_LINE: usize = 64 * 1024;

/// At most this many buffers per `writev` (the kernel's `IOV_MAX` is 1024).
const MAX_IOVECS: usize = 1024;

/// Encoded frames waiting to be written: one buffer of bytes, with large
/// payloads kept aside (each one goes right after the bytes up to its
/// offset), so queueing a large message copies only its head.
#[derive(Debug, Default)]
pub struct Batch {
    bytes: Vec<u8>,
    /// (offset in `bytes`, payload), offsets in order.
    tails: Vec<(usize, Vec<u8>)>,
    tail_bytes: usize,
}

impl Batch {
    /// An empty batch with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Batch {
        Batch {
            bytes: Vec::with_capacity(capacity),
            ..Batch::default()
        }
    }

    /// Add a frame.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLarge`] when the frame is over the protocol's limit.
    pub fn push<T: Serialize>(&mut self, frame: &T) -> Result<(), FrameError> {
        framing::encode_into(frame, &mut self.bytes, MAX_FRAME_LEN)
    }

    /// Add a frame given as its `head` (the frame with an empty payload as
    /// its last field) and its `payload`, which is moved, not copied, when it
    /// is large.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLarge`] when the frame is over the protocol's limit.
    pub fn push_split<T: Serialize>(
        &mut self,
        head: &T,
        payload: Vec<u8>,
    ) -> Result<(), FrameError> {
        framing::encode_head_into(head, payload.len(), &mut self.bytes, MAX_FRAME_LEN)?;
        if payload.len() < OUT_OF_LINE {
            self.bytes.extend_from_slice(&payload);
        } else {
            self.tail_bytes += payload.len();
            self.tails.push((self.bytes.len(), payload));
        }
        Ok(())
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.bytes.len() + self.tail_bytes
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forget everything queued, keeping a modest buffer.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.tails.clear();
        self.tail_bytes = 0;
        // Do not keep a huge buffer around after a burst.
        if self.bytes.capacity() > 4 * 1024 * 1024 {
            self.bytes.shrink_to(64 * 1024);
        }
    }

    /// The queued bytes in order, as buffers for `writev`.
    fn slices(&self) -> Vec<IoSlice<'_>> {
        let mut slices = Vec::with_capacity(self.tails.len() * 2 + 1);
        let mut at = 0;
        for (offset, payload) in &self.tails {
            slices.push(IoSlice::new(&self.bytes[at..*offset]));
            slices.push(IoSlice::new(payload));
            at = *offset;
        }
        slices.push(IoSlice::new(&self.bytes[at..]));
        slices.retain(|slice| !slice.is_empty());
        slices
    }
}

/// Queues frames and writes them in batches.
#[derive(Debug)]
pub struct FrameWriter {
    pipe: pipe::Sender,
    batch: Batch,
    stats: Arc<WriteStats>,
}

impl FrameWriter {
    /// A writer to `pipe` that counts into `stats`.
    pub fn new(pipe: pipe::Sender, stats: Arc<WriteStats>) -> Self {
        FrameWriter {
            pipe,
            batch: Batch::with_capacity(64 * 1024),
            stats,
        }
    }

    /// Add a frame to the next write.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLarge`] when the frame is over the protocol's limit.
    pub fn queue<T: Serialize>(&mut self, frame: &T) -> Result<(), FrameError> {
        self.batch.push(frame)?;
        self.stats.frames.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Add a frame given as its head and payload (see [`Batch::push_split`]).
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLarge`] when the frame is over the protocol's limit.
    pub fn queue_split<T: Serialize>(
        &mut self,
        head: &T,
        payload: Vec<u8>,
    ) -> Result<(), FrameError> {
        self.batch.push_split(head, payload)?;
        self.stats.frames.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.batch.len()
    }

    /// Write a batch of whole encoded frames, with as few `writev` calls as
    /// the pipe allows.
    ///
    /// # Errors
    ///
    /// When the pipe is closed or fails.
    pub async fn write_batch(&mut self, batch: &Batch) -> io::Result<()> {
        let mut all = batch.slices();
        let mut slices = &mut all[..];
        while !slices.is_empty() {
            let count = slices.len().min(MAX_IOVECS);
            let n = self.pipe.write_vectored(&slices[..count]).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.stats.writes.fetch_add(1, Ordering::Relaxed);
            IoSlice::advance_slices(&mut slices, n);
        }
        Ok(())
    }

    /// Write everything queued.
    ///
    /// # Errors
    ///
    /// When the pipe is closed or fails.
    pub async fn flush(&mut self) -> io::Result<()> {
        let batch = std::mem::take(&mut self.batch);
        let result = self.write_batch(&batch).await;
        self.batch = batch;
        self.batch.clear();
        result
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

/// Keep large message buffers in the heap: with glibc's defaults every
/// buffer over 128 KiB is mapped, zeroed page by page and unmapped again,
/// which costs a third of a 1 MiB message's trip. Buffers up to 8 MiB come
/// from the heap instead, and up to 32 MiB of free heap is kept for the
/// next ones. The runner and the `wasmproc` CLI call this first thing; a
/// host application that moves large messages can do the same.
pub fn keep_large_buffers_in_heap() {
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 8 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 * 1024 * 1024);
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
