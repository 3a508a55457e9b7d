//! Frames over control pipes, the one place where a frame's head and its
//! payload are laid out for a write.
//!
//! [`FrameReader`] turns a pipe into a stream of typed frames (reading in
//! large chunks, so a burst of small frames costs one `read`). A [`Batch`]
//! collects encoded frames, keeping large payloads aside uncopied, and
//! [`FrameWriter`] writes a batch with as few `writev` calls as the pipe
//! allows: under load, many frames share a syscall. (The blocking helpers
//! for the runner's start live in the protocol crate; guests' stdio streams
//! are read where they are used: [`crate::child`], [`crate::app`].)

use std::io::{self, IoSlice};
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncReadExt;
use tokio_util::codec::Decoder;
use wasmproc_protocol::framing::{
    self, FrameCodec, FrameError, Header, MAX_FRAME_LEN, WithPayload,
};

pub use crate::os::pipe::ControlFd;
use crate::os::ring::{RingReader, RingWriter};

/// The read buffer a reader starts with, and so the most a read takes while
/// frames are small. A frame larger than this makes the buffer grow to hold
/// it whole (the codec reserves its length); an idle guest's runner keeps
/// only this much, of which it touches what its largest read filled.
const READ_CHUNK: usize = 16 * 1024;

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
///
/// Frames are read in chunks of up to [`READ_CHUNK`] bytes, so a burst of
/// small frames costs one `read`. A marked frame (one that ends with a large
/// payload, see [`framing`]) is read in two parts: its head into the chunk
/// buffer, its payload straight from the pipe into the buffer the frame
/// keeps, which is then not copied again; or, for a frame whose payload
/// the writer put in the shared ring, from the ring.
#[derive(Debug)]
pub struct FrameReader<In> {
    pipe: ControlFd,
    buf: BytesMut,
    max_len: usize,
    ring: Option<RingReader>,
    _frames: PhantomData<fn() -> In>,
}

impl<In: DeserializeOwned + WithPayload> FrameReader<In> {
    /// Read frames from `pipe`, starting with the bytes in `leftover` (read
    /// earlier by a blocking reader).
    pub fn new(pipe: ControlFd, leftover: &[u8]) -> Self {
        let mut buf = BytesMut::with_capacity(READ_CHUNK.max(leftover.len()));
        buf.extend_from_slice(leftover);
        FrameReader {
            pipe,
            buf,
            max_len: MAX_FRAME_LEN,
            ring: None,
            _frames: PhantomData,
        }
    }

    /// Take payloads from `ring` where frames say they are there (without
    /// one, such a frame is an error).
    pub fn with_ring(mut self, ring: Option<RingReader>) -> Self {
        self.ring = ring;
        self
    }

    /// The next frame, or `None` at a clean end of the stream.
    ///
    /// Not cancel-safe: dropped while it reads a marked frame's payload, it
    /// loses that frame. Both readers (the host's, the runner's) await it
    /// to the end.
    ///
    /// # Errors
    ///
    /// A [`FrameError`] for malformed, oversized or truncated frames and I/O errors.
    pub async fn next(&mut self) -> Result<Option<In>, FrameError> {
        loop {
            if let Some(header) = framing::header(&self.buf, self.max_len)? {
                if let (Some(pos), Some(payload_len)) = (header.ring_pos, header.payload_len) {
                    if self.buf.len() >= header.header_len + header.pipe_len() {
                        return self.take_from_ring(header, pos, payload_len).map(Some);
                    }
                } else if let Some(payload_len) = header.payload_len {
                    let head_len = header.len - payload_len;
                    if self.buf.len() >= header.header_len + head_len {
                        return self.read_marked(header, payload_len).await.map(Some);
                    }
                } else if let Some(frame) =
                    FrameCodec::<In>::new(self.max_len).decode(&mut self.buf)?
                {
                    return Ok(Some(frame));
                }
            }
            // More bytes are needed: the codec reserved room for the rest
            // of a frame whose length it knows; otherwise read a chunk.
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            if self.pipe.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated {
                        buffered: self.buf.len(),
                    })
                };
            }
        }
    }

    /// The frame at the start of the buffer, whose head is there and whose
    /// payload is at `pos` in the ring.
    fn take_from_ring(
        &mut self,
        header: Header,
        pos: u64,
        payload_len: usize,
    ) -> Result<In, FrameError> {
        let len = header.len;
        let Some(ring) = self.ring.as_mut() else {
            return Err(FrameError::Ring {
                len,
                reason: "its payload is in a shared ring, and this reader has none".to_owned(),
            });
        };
        let payload = ring
            .take(pos, payload_len)
            .map_err(|outside| FrameError::Ring {
                len,
                reason: outside.to_string(),
            })?;
        self.buf.advance(header.header_len);
        let head = self.buf.split_to(header.pipe_len());
        framing::decode_head(&head, payload)
    }

    /// The marked frame at the start of the buffer, whose head is there:
    /// the payload bytes already read, then the rest from the pipe.
    async fn read_marked(&mut self, header: Header, payload_len: usize) -> Result<In, FrameError> {
        let head_len = header.len - payload_len;
        self.buf.advance(header.header_len);
        let head = self.buf.split_to(head_len);
        let mut payload = Vec::with_capacity(payload_len);
        let buffered = self.buf.len().min(payload_len);
        payload.extend_from_slice(&self.buf[..buffered]);
        self.buf.advance(buffered);
        while payload.len() < payload_len {
            let want = payload_len - payload.len();
            if self.pipe.read_buf(&mut (&mut payload).limit(want)).await? == 0 {
                return Err(FrameError::Truncated {
                    buffered: head_len + payload.len(),
                });
            }
        }
        framing::decode_head(&head, payload)
    }
}

/// Payloads at least this large are written from where they are, after
/// their frame's head, instead of being copied into the batch: the size
/// from which frames are marked, and their payloads read in place too.
pub const OUT_OF_LINE: usize = framing::MARK_MIN_PAYLOAD;

/// At most this many buffers per `writev` (the kernel's `IOV_MAX` is 1024).
const MAX_IOVECS: usize = 1024;

/// Encoded frames waiting to be written: one buffer of bytes, with large
/// payloads kept aside (each one goes right after the bytes up to its
/// offset), so queueing a large message copies only its head.
#[derive(Debug, Default)]
pub struct Batch {
    bytes: Vec<u8>,
    /// (offset in `bytes`, payload), offsets in order.
    tails: Vec<(usize, Bytes)>,
    tail_bytes: usize,
    /// Frames pushed since the last clear.
    frames: u64,
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
        framing::encode_into(frame, &mut self.bytes, MAX_FRAME_LEN)?;
        self.frames += 1;
        Ok(())
    }

    /// Add a frame given as its `head` (the frame with an empty payload as
    /// its last field) and its `payload`. A large payload is copied into
    /// `ring` when it has room (the frame then says where it is), or else
    /// kept (shared, not copied) to be written after its head.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLarge`] when the frame is over the protocol's limit.
    pub fn push_split<T: Serialize>(
        &mut self,
        head: &T,
        payload: impl Into<Bytes>,
        ring: Option<&mut RingWriter>,
    ) -> Result<(), FrameError> {
        let payload = payload.into();
        if payload.len() >= OUT_OF_LINE {
            // (Should the frame then be refused, its room in the ring is
            // only skipped: the reader takes positions that leave gaps.)
            if let Some(pos) = ring.and_then(|ring| ring.put(&payload)) {
                framing::encode_ring_head_into(
                    head,
                    payload.len(),
                    pos,
                    &mut self.bytes,
                    MAX_FRAME_LEN,
                )?;
                self.frames += 1;
                return Ok(());
            }
        }
        framing::encode_head_into(head, payload.len(), &mut self.bytes, MAX_FRAME_LEN)?;
        if payload.len() < OUT_OF_LINE {
            self.bytes.extend_from_slice(&payload);
        } else {
            self.tail_bytes += payload.len();
            self.tails.push((self.bytes.len(), payload));
        }
        self.frames += 1;
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
        self.frames = 0;
        // Do not keep a huge buffer around after a burst.
        if self.bytes.capacity() > 4 * 1024 * 1024 {
            self.bytes.shrink_to(64 * 1024);
        }
    }

    /// Write every frame to `fd`, a non-blocking pipe, waiting (`poll`)
    /// while it is full, and clear the batch (also when the write fails):
    /// for a thread outside the runtime.
    ///
    /// # Errors
    ///
    /// When the pipe is closed or fails.
    pub fn write_blocking(&mut self, fd: RawFd) -> io::Result<()> {
        let result = self.write_all_blocking(fd);
        self.clear();
        result
    }

    fn write_all_blocking(&self, fd: RawFd) -> io::Result<()> {
        let mut all = self.slices();
        let mut slices = &mut all[..];
        while !slices.is_empty() {
            let count = slices.len().min(MAX_IOVECS);
            // SAFETY: `IoSlice` is ABI-compatible with `iovec`, and the
            // buffers outlive the call; `count` is at most `IOV_MAX`.
            let n = unsafe { libc::writev(fd, slices.as_ptr().cast(), count as libc::c_int) };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => {
                        let mut writable = libc::pollfd {
                            fd,
                            events: libc::POLLOUT,
                            revents: 0,
                        };
                        // SAFETY: one valid `pollfd`. An error or a hang-up
                        // shows in the next `writev`.
                        unsafe { libc::poll(&mut writable, 1, -1) };
                        continue;
                    }
                    _ => return Err(err),
                }
            }
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut slices, n.unsigned_abs());
        }
        Ok(())
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

/// Writes batches of frames to a pipe.
#[derive(Debug)]
pub struct FrameWriter {
    pipe: ControlFd,
    stats: Arc<WriteStats>,
}

impl FrameWriter {
    /// A writer to `pipe` that counts into `stats`.
    pub fn new(pipe: ControlFd, stats: Arc<WriteStats>) -> Self {
        FrameWriter { pipe, stats }
    }

    /// The pipe back, for whoever writes to it next.
    pub fn into_pipe(self) -> ControlFd {
        self.pipe
    }

    /// Wait until the pipe takes bytes (at once, but for a pipe that is
    /// full or has never been written: its first readiness comes from the
    /// runtime's reactor).
    ///
    /// # Errors
    ///
    /// When the pipe fails.
    pub async fn writable(&self) -> io::Result<()> {
        self.pipe.writable().await
    }

    /// Write every frame in `batch`, with as few `writev` calls as the pipe
    /// allows, and clear it for reuse (also when the write fails).
    ///
    /// # Errors
    ///
    /// When the pipe is closed or fails.
    pub async fn write(&mut self, batch: &mut Batch) -> io::Result<()> {
        let result = self.write_all(batch).await;
        self.stats.frames.fetch_add(batch.frames, Ordering::Relaxed);
        batch.clear();
        result
    }

    async fn write_all(&mut self, batch: &Batch) -> io::Result<()> {
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
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use wasmproc_protocol::framing::MARK_MIN_PAYLOAD;
    use wasmproc_protocol::{Address, RunnerToHost};

    use super::*;
    use crate::os::pipe::cloexec_pipe;

    fn send(to: &str, payload: Vec<u8>) -> RunnerToHost {
        RunnerToHost::Send {
            to: Address::Name(to.into()),
            taken: 3,
            payload,
        }
    }

    /// The frames of `batch`, as one run of bytes.
    fn bytes_of(batch: &Batch) -> Vec<u8> {
        batch
            .slices()
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect()
    }

    #[tokio::test]
    async fn marked_and_plain_frames_come_through_a_pipe_whole_and_in_order() {
        let (rx, tx) = cloexec_pipe().unwrap();
        let frames = vec![
            send("a", vec![1; 5]),
            send(
                "b",
                (0..MARK_MIN_PAYLOAD + 3).map(|i| (i % 251) as u8).collect(),
            ),
            send("c", Vec::new()),
            send("d", vec![4; 3 << 20]),
            RunnerToHost::Ready,
        ];
        let mut batch = Batch::default();
        for frame in &frames {
            match frame {
                RunnerToHost::Send { to, taken, payload } => {
                    let head = RunnerToHost::Send {
                        to: to.clone(),
                        taken: *taken,
                        payload: Vec::new(),
                    };
                    batch.push_split(&head, payload.clone(), None).unwrap();
                }
                other => batch.push(other).unwrap(),
            }
        }
        let bytes = bytes_of(&batch);
        // The first frame arrives as leftover of a blocking read; the rest
        // in odd pieces, so that heads and payloads straddle reads.
        let (leftover, rest) = bytes.split_at(7);
        let rest = rest.to_vec();
        let writer = std::thread::spawn(move || {
            let mut pipe = std::fs::File::from(tx);
            for piece in rest.chunks(40_000) {
                pipe.write_all(piece).unwrap();
            }
        });
        let mut reader =
            FrameReader::<RunnerToHost>::new(ControlFd::from_owned_fd(rx).unwrap(), leftover);
        for (i, want) in frames.iter().enumerate() {
            let got = reader.next().await.unwrap();
            assert!(got.as_ref() == Some(want), "frame {i}");
        }
        writer.join().unwrap();
        assert!(reader.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn payloads_in_the_ring_and_in_the_pipe_come_through_in_order() {
        let region = crate::os::ring::test_region();
        let host = crate::os::ring::Rings::host(&region);
        let runner = crate::os::ring::Rings::runner(&region);
        let (rx, tx) = cloexec_pipe().unwrap();
        // Eight payloads of 1 MiB into a ring of four: the first ones go
        // through the ring, the rest (the ring full, nobody reading yet)
        // through the pipe; small ones in between stay in the batch.
        let mut frames = Vec::new();
        for i in 0..8u8 {
            frames.push(send("big", vec![i; 1 << 20]));
            frames.push(send("small", vec![i; 10]));
        }
        frames.push(send("over half the ring", vec![9; 3 << 20]));
        let mut ring = host.writer;
        let mut batch = Batch::default();
        for frame in &frames {
            let RunnerToHost::Send { to, taken, payload } = frame else {
                unreachable!()
            };
            let head = RunnerToHost::Send {
                to: to.clone(),
                taken: *taken,
                payload: Vec::new(),
            };
            batch
                .push_split(&head, payload.clone(), Some(&mut ring))
                .unwrap();
        }
        let bytes = bytes_of(&batch);
        assert_eq!(batch.tails.len(), 5, "the pipe carries five payloads");
        assert!(
            bytes.len() < 9 * (1 << 20),
            "four payloads are not in the pipe: {} bytes",
            bytes.len()
        );
        let writer = std::thread::spawn(move || std::fs::File::from(tx).write_all(&bytes).unwrap());
        let mut reader =
            FrameReader::<RunnerToHost>::new(ControlFd::from_owned_fd(rx).unwrap(), &[])
                .with_ring(Some(runner.reader));
        for (i, want) in frames.iter().enumerate() {
            let got = reader.next().await.unwrap();
            assert!(got.as_ref() == Some(want), "frame {i}");
        }
        writer.join().unwrap();
        assert!(reader.next().await.unwrap().is_none());
        // Read, the ring has room again.
        assert!(ring.put(&[1; 1 << 20]).is_some());
    }

    #[tokio::test]
    async fn a_frame_whose_payload_is_in_a_ring_the_reader_lacks_is_refused() {
        let region = crate::os::ring::test_region();
        let mut ring = crate::os::ring::Rings::host(&region).writer;
        let (rx, tx) = cloexec_pipe().unwrap();
        let mut batch = Batch::default();
        let payload = vec![3; MARK_MIN_PAYLOAD];
        batch
            .push_split(&send("f", Vec::new()), payload, Some(&mut ring))
            .unwrap();
        std::fs::File::from(tx)
            .write_all(&bytes_of(&batch))
            .unwrap();
        let mut reader =
            FrameReader::<RunnerToHost>::new(ControlFd::from_owned_fd(rx).unwrap(), &[]);
        let err = reader.next().await.unwrap_err().to_string();
        assert!(
            err.ends_with("its payload is in a shared ring, and this reader has none"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_marked_frame_cut_short_is_truncated() {
        let (rx, tx) = cloexec_pipe().unwrap();
        let mut batch = Batch::default();
        let payload = vec![9; MARK_MIN_PAYLOAD];
        batch
            .push_split(&send("e", Vec::new()), payload, None)
            .unwrap();
        let bytes = bytes_of(&batch);
        let cut = bytes[..bytes.len() - 1].to_vec();
        // More than the pipe holds: written beside the reader, then closed.
        let writer = std::thread::spawn(move || std::fs::File::from(tx).write_all(&cut).unwrap());
        let mut reader =
            FrameReader::<RunnerToHost>::new(ControlFd::from_owned_fd(rx).unwrap(), &[]);
        assert!(matches!(
            reader.next().await,
            Err(FrameError::Truncated { buffered }) if buffered == bytes.len() - 1 - framing::MARKED_HEADER_LEN
        ));
        writer.join().unwrap();
    }
}
