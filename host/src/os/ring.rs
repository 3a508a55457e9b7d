//! Shared payload rings: large payloads cross between the host and a runner
//! through memory both map, not through the control pipe.
//!
//! Each runner's shared memory (the sealed `memfd` that also holds its
//! sandbox report page, [`super::report`]) has two rings after that page:
//! one the host writes and the runner reads, one the other way round. A
//! payload of [`crate::connection::OUT_OF_LINE`] bytes or more is copied
//! into the writer's ring, and its frame, sent on the pipe as always, says
//! where it is ([`wasmproc_protocol::framing`]): the pipe carries only the
//! frame's head, and the two kernel copies a pipe costs (in, out, each
//! under the pipe's lock) become two plain `memcpy`s. When a ring has no
//! room, the payload goes through the pipe as before, so a slow reader
//! holds nothing up and order never changes: frames are read in the order
//! they were written, and each ring is used in that order too.
//!
//! A ring is a run of bytes and two counters of bytes in all: the writer's
//! `head`, kept to itself, and the reader's `tail`, shared, stored by the
//! reader once it has copied a payload out. A payload lies whole at one
//! place: one that would run past the ring's end starts again at its
//! start, and the writer counts the bytes it skipped. The pipe orders the
//! rest: the writer copies a payload in before it writes its frame, and
//! the reader copies it out after it has read that frame.
//!
//! Neither side trusts the other. A reader checks that a frame's payload
//! lies inside the ring and after the previous one; a writer that reads a
//! tail no honest reader could have stored stops using that ring. Both
//! only ever copy bytes: whatever the other side stores there changes the
//! contents of its own messages and nothing else. The seals keep a runner
//! from shrinking the memory under the host's mapping.

use std::io;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The bytes in each ring. A payload larger than half of it always goes
/// through the pipe. Pages are only used once written: an idle guest's
/// rings cost nothing; one that streams large messages holds up to twice
/// this in shared memory, until its rings have been idle for [`RING_IDLE`].
pub(crate) const RING_LEN: usize = 4 * 1024 * 1024;

/// A ring whose reader has taken every payload gives its pages back to
/// the system once its writer has had nothing to write for this long
/// ([`RingWriter::release_if_drained`]), as a pipe's pages go once read:
/// a guest that once moved large messages does not keep their memory.
pub(crate) const RING_IDLE: Duration = Duration::from_secs(2);

/// The largest payload a ring takes.
pub(crate) const MAX_RING_PAYLOAD: usize = RING_LEN / 2;

/// Where things are in the shared memory.
pub(crate) mod layout {
    use super::RING_LEN;

    /// The sandbox report page.
    pub(crate) const REPORT: usize = 0;
    /// The page of the rings' tails.
    const TAILS: usize = 4096;
    /// The tail of the ring the host writes (stored by the runner).
    pub(crate) const TO_RUNNER_TAIL: usize = TAILS;
    /// The tail of the ring the runner writes (stored by the host), on a
    /// cache line of its own.
    pub(crate) const FROM_RUNNER_TAIL: usize = TAILS + 128;
    /// The ring the host writes.
    pub(crate) const TO_RUNNER: usize = 2 * 4096;
    /// The ring the runner writes.
    pub(crate) const FROM_RUNNER: usize = TO_RUNNER + RING_LEN;
    /// All of it.
    pub(crate) const LEN: usize = FROM_RUNNER + RING_LEN;
}

/// A shared mapping, unmapped when the last user lets it go.
#[derive(Debug)]
pub(crate) struct Region {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping belongs to the value alone; what is read or written
// through it is bytes copied with raw pointers and atomics, and the other
// process may change them at any time, which no reader relies on.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// Take over the mapping of `len` bytes at `base`.
    ///
    /// # Safety
    ///
    /// `base` must be a mapping of at least `len` bytes that nothing else
    /// unmaps.
    pub(crate) unsafe fn from_raw(base: NonNull<u8>, len: usize) -> Region {
        Region { base, len }
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// The shared counter at `offset`.
    pub(crate) fn counter(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= self.len);
        // SAFETY: inside the mapping and aligned (the mapping is page
        // aligned), and only ever accessed atomically.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU64>() }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping this value took over.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// The writing end of one ring.
#[derive(Debug)]
pub struct RingWriter {
    region: Arc<Region>,
    data: usize,
    tail: usize,
    /// Bytes written (and skipped at the ring's end) in all.
    head: u64,
    /// `head` when the ring last gave its pages back.
    released: u64,
    /// The reader stored a tail no honest reader could have: not used again.
    broken: bool,
}

impl RingWriter {
    pub(crate) fn new(region: Arc<Region>, data: usize, tail: usize) -> RingWriter {
        assert!(data + RING_LEN <= region.len);
        RingWriter {
            region,
            data,
            tail,
            head: 0,
            released: 0,
            broken: false,
        }
    }

    /// Whether the ring may hold pages: written since it last gave them
    /// back.
    pub fn holds_pages(&self) -> bool {
        self.head != self.released
    }

    /// Give the ring's pages back to the system if its reader has taken
    /// every payload (or broke the protocol, which ends the ring's use);
    /// whether it did. The next payload then uses fresh, zeroed pages.
    ///
    /// # Errors
    ///
    /// When `madvise` refuses (not shared memory).
    pub fn release_if_drained(&mut self) -> io::Result<bool> {
        let tail = self.region.counter(self.tail).load(Ordering::Acquire);
        if !self.broken && tail != self.head {
            return Ok(false);
        }
        // SAFETY: the ring's bytes, page-aligned, inside the mapping; no
        // payload in them is still to be read, and only this writer
        // writes them.
        let freed = unsafe {
            libc::madvise(
                self.region.as_ptr().add(self.data).cast(),
                RING_LEN,
                libc::MADV_REMOVE,
            )
        };
        if freed != 0 {
            return Err(io::Error::last_os_error());
        }
        self.released = self.head;
        Ok(true)
    }

    /// Copy `payload` into the ring and return where it starts (for its
    /// frame), or `None` when there is no room (or it is too large), for
    /// the pipe to carry it instead.
    pub fn put(&mut self, payload: &[u8]) -> Option<u64> {
        if self.broken || payload.len() > MAX_RING_PAYLOAD {
            return None;
        }
        let tail = self.region.counter(self.tail).load(Ordering::Acquire);
        if tail > self.head || self.head - tail > RING_LEN as u64 {
            self.broken = true;
            return None;
        }
        let len = payload.len() as u64;
        let mut start = self.head;
        let offset = (start % RING_LEN as u64) as usize;
        if offset + payload.len() > RING_LEN {
            // It would run past the end: it starts at the ring's start.
            start += (RING_LEN - offset) as u64;
        }
        if start + len - tail > RING_LEN as u64 {
            return None;
        }
        let at = (start % RING_LEN as u64) as usize;
        // SAFETY: `at + len` is inside the ring, inside the mapping (checked
        // in `new`); `payload` is a separate, live buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(
                payload.as_ptr(),
                self.region.as_ptr().add(self.data + at),
                payload.len(),
            );
        }
        self.head = start + len;
        Some(start)
    }
}

/// Why a frame's payload could not be taken from the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "its payload of {len} bytes at position {pos} is not in the shared ring \
     ({RING_LEN} bytes, read up to position {read})"
)]
pub struct OutsideRing {
    pub pos: u64,
    pub len: usize,
    pub read: u64,
}

/// The reading end of one ring.
#[derive(Debug)]
pub struct RingReader {
    region: Arc<Region>,
    data: usize,
    tail: usize,
    /// Bytes read (and skipped) in all: the tail last stored.
    read: u64,
}

impl RingReader {
    pub(crate) fn new(region: Arc<Region>, data: usize, tail: usize) -> RingReader {
        assert!(data + RING_LEN <= region.len);
        RingReader {
            region,
            data,
            tail,
            read: 0,
        }
    }

    /// Copy out the payload of `len` bytes a frame says starts at `pos`,
    /// and give its room back to the writer.
    ///
    /// # Errors
    ///
    /// [`OutsideRing`] when it does not lie in the ring after the payload
    /// read before it (a writer that breaks the protocol).
    pub fn take(&mut self, pos: u64, len: usize) -> Result<Vec<u8>, OutsideRing> {
        let outside = OutsideRing {
            pos,
            len,
            read: self.read,
        };
        let at = (pos % RING_LEN as u64) as usize;
        if pos < self.read || pos - self.read >= RING_LEN as u64 || at + len > RING_LEN {
            return Err(outside);
        }
        let mut payload = Vec::with_capacity(len);
        // SAFETY: `at + len` is inside the ring, inside the mapping (checked
        // in `new`); `payload` has room for `len` bytes, all written here.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.region.as_ptr().add(self.data + at),
                payload.as_mut_ptr(),
                len,
            );
            payload.set_len(len);
        }
        self.read = pos + len as u64;
        self.region
            .counter(self.tail)
            .store(self.read, Ordering::Release);
        Ok(payload)
    }
}

/// The two rings of one shared memory, from one side: the ring it writes
/// and the ring it reads.
#[derive(Debug)]
pub struct Rings {
    pub writer: RingWriter,
    pub reader: RingReader,
}

impl Rings {
    /// The host's ends: it writes the ring to the runner.
    pub(crate) fn host(region: &Arc<Region>) -> Rings {
        use layout::*;
        Rings {
            writer: RingWriter::new(region.clone(), TO_RUNNER, TO_RUNNER_TAIL),
            reader: RingReader::new(region.clone(), FROM_RUNNER, FROM_RUNNER_TAIL),
        }
    }

    /// The runner's ends: it writes the ring to the host.
    pub(crate) fn runner(region: &Arc<Region>) -> Rings {
        use layout::*;
        Rings {
            writer: RingWriter::new(region.clone(), FROM_RUNNER, FROM_RUNNER_TAIL),
            reader: RingReader::new(region.clone(), TO_RUNNER, TO_RUNNER_TAIL),
        }
    }
}

/// A shared anonymous mapping as large as a runner's shared memory, for
/// tests that need both sides of the rings in one process.
#[cfg(test)]
pub(crate) fn test_region() -> Arc<Region> {
    // SAFETY: a fresh anonymous mapping; the kernel picks the address.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            layout::LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED);
    // SAFETY: just mapped, `layout::LEN` bytes, owned by the region.
    Arc::new(unsafe { Region::from_raw(NonNull::new(base.cast()).unwrap(), layout::LEN) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region() -> Arc<Region> {
        test_region()
    }

    fn payload(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
    }

    #[test]
    fn payloads_go_round_the_ring_whole_and_in_order() {
        let region = region();
        let (mut host, mut runner) = (Rings::host(&region), Rings::runner(&region));
        // Two payloads of about 1 MiB at a time, of sizes that do not
        // divide the ring: every few rounds one starts over at its start.
        let mut wrapped = 0;
        for round in 0..40u8 {
            let sent: Vec<(u64, Vec<u8>)> = (0..2)
                .map(|i| {
                    let p = payload(RING_LEN / 4 - 1000 + 97 * round as usize, round ^ i);
                    (host.writer.put(&p).expect("room for two"), p)
                })
                .collect();
            for (pos, p) in sent {
                wrapped += usize::from(pos % RING_LEN as u64 == 0 && pos > 0);
                assert_eq!(runner.reader.take(pos, p.len()).unwrap(), p);
            }
        }
        assert!(wrapped >= 5, "started over {wrapped} times");
        // And the other way.
        let p = payload(MAX_RING_PAYLOAD, 9);
        let pos = runner.writer.put(&p).unwrap();
        assert_eq!(host.reader.take(pos, p.len()).unwrap(), p);
    }

    #[test]
    fn a_full_ring_or_a_payload_over_half_of_it_is_refused() {
        let region = region();
        let (mut host, mut runner) = (Rings::host(&region), Rings::runner(&region));
        assert_eq!(host.writer.put(&vec![1; MAX_RING_PAYLOAD + 1]), None);
        let first = host.writer.put(&vec![1; MAX_RING_PAYLOAD]).unwrap();
        let second = host.writer.put(&vec![2; MAX_RING_PAYLOAD]).unwrap();
        assert_eq!((first, second), (0, MAX_RING_PAYLOAD as u64));
        assert_eq!(host.writer.put(&[3]), None, "full until read");
        runner.reader.take(first, MAX_RING_PAYLOAD).unwrap();
        assert_eq!(host.writer.put(&[3]), Some(2 * MAX_RING_PAYLOAD as u64));
    }

    #[test]
    fn a_frame_pointing_outside_the_ring_or_backwards_is_refused() {
        let region = region();
        let (mut host, mut runner) = (Rings::host(&region), Rings::runner(&region));
        let pos = host.writer.put(&[5; 100]).unwrap();
        assert_eq!(
            runner.reader.take(RING_LEN as u64 - 10, 100),
            Err(OutsideRing {
                pos: RING_LEN as u64 - 10,
                len: 100,
                read: 0
            })
        );
        assert!(
            runner.reader.take(RING_LEN as u64, 1).is_err(),
            "a lap ahead"
        );
        assert_eq!(runner.reader.take(pos, 100).unwrap(), vec![5; 100]);
        assert!(runner.reader.take(50, 10).is_err(), "before what was read");
        let message = runner.reader.take(u64::MAX, 1).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "its payload of 1 bytes at position {} is not in the shared ring \
                 (4194304 bytes, read up to position 100)",
                u64::MAX
            )
        );
    }

    #[test]
    fn a_reader_that_stores_an_impossible_tail_ends_the_writers_use_of_the_ring() {
        let region = region();
        let mut host = Rings::host(&region);
        host.writer.put(&[1; 10]).unwrap();
        // Further than anything written.
        region
            .counter(layout::TO_RUNNER_TAIL)
            .store(1 << 40, Ordering::Release);
        assert_eq!(host.writer.put(&[2; 10]), None);
        region
            .counter(layout::TO_RUNNER_TAIL)
            .store(10, Ordering::Release);
        assert_eq!(host.writer.put(&[2; 10]), None, "for good");
    }
}
