//! A runner's shared memory, and in it the sandbox report page: where a
//! runner's `SIGSYS` handler says which system call its seccomp filter
//! refused, for the host to read once the runner has ended.
//!
//! Each runner gets shared memory of its own, a sealed `memfd` that the
//! host maps and then closes (a mapping does not count against the
//! open-files limit, so 10,000 guests cost no descriptor for it). It is the
//! report page and then the two payload rings ([`super::ring`]); only pages
//! that are written use memory. The runner maps it when it starts, and its
//! `SIGSYS` handler stores the number on the report page, which is
//! async-signal-safe and can never land inside a frame. A hostile runner
//! could only write its own memory: it cannot make another guest look
//! refused. The seals keep it from shrinking the memory, which would make
//! the host's reads fault.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::ring::{Region, Rings, layout};

/// Set in the report's high half once a number is stored.
const REPORTED: u64 = 1 << 32;

/// The host's view of one runner's shared memory.
#[derive(Debug)]
pub(crate) struct ReportPage {
    region: Arc<Region>,
}

impl ReportPage {
    /// New shared memory, mapped here, and the descriptor the runner gets
    /// (the host closes its copy once the runner has started).
    ///
    /// # Errors
    ///
    /// When the process is out of descriptors or memory.
    pub(crate) fn new() -> io::Result<(ReportPage, OwnedFd)> {
        // SAFETY: memfd_create takes a NUL-terminated name and flags.
        let fd = unsafe {
            libc::memfd_create(
                c"wasmproc-sandbox-report".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just returned by memfd_create; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ftruncate and fcntl on a descriptor this function owns.
        let sealed = unsafe {
            libc::ftruncate(fd.as_raw_fd(), layout::LEN as libc::off_t) == 0
                && libc::fcntl(
                    fd.as_raw_fd(),
                    libc::F_ADD_SEALS,
                    libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
                ) == 0
        };
        if !sealed {
            return Err(io::Error::last_os_error());
        }
        let region = map(fd.as_raw_fd())?;
        Ok((ReportPage { region }, fd))
    }

    /// The number of the system call the runner's sandbox refused, if it
    /// said so (read once the runner has ended).
    pub(crate) fn refused(&self) -> Option<i64> {
        let report = self.region.counter(layout::REPORT).load(Ordering::Acquire);
        (report >> 32 == REPORTED >> 32).then(|| i64::from(report as u32 as i32))
    }

    /// The host's ends of the payload rings (taken once, by the session).
    pub(crate) fn rings(&self) -> Rings {
        Rings::host(&self.region)
    }
}

/// Map all of `fd`'s shared memory, readable and writable.
fn map(fd: RawFd) -> io::Result<Arc<Region>> {
    // SAFETY: a fresh shared mapping of `fd`; the kernel picks the address.
    let address = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            layout::LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if address == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let base = NonNull::new(address.cast::<u8>())
        .ok_or_else(|| io::Error::other("mmap returned address 0"))?;
    // SAFETY: just mapped, `layout::LEN` bytes, owned by the region alone.
    Ok(Arc::new(unsafe { Region::from_raw(base, layout::LEN) }))
}

/// The runner's writable view of its report page, mapped by
/// [`map_in_runner`].
static RUNNER_PAGE: AtomicPtr<AtomicU64> = AtomicPtr::new(std::ptr::null_mut());

/// The runner's shared memory, kept mapped for good: the `SIGSYS` handler
/// may store into it up to the runner's last instruction.
static RUNNER_REGION: OnceLock<Arc<Region>> = OnceLock::new();

/// In the runner, as it starts: map the shared memory the host passed on
/// `fd`, close `fd`, and return the runner's ends of the payload rings.
///
/// # Errors
///
/// When `fd` is not shared memory to map (a runner started by something
/// other than a host).
pub(crate) fn map_in_runner(fd: RawFd) -> io::Result<Rings> {
    let region = map(fd).map_err(|err| {
        io::Error::new(
            err.kind(),
            format!("cannot map the runner's shared memory (fd {fd}): {err}"),
        )
    })?;
    // SAFETY: the host's descriptor is no longer needed once mapped.
    unsafe { libc::close(fd) };
    let region = RUNNER_REGION.get_or_init(|| region);
    let page = region.counter(layout::REPORT);
    RUNNER_PAGE.store(std::ptr::from_ref(page).cast_mut(), Ordering::Release);
    Ok(Rings::runner(region))
}

/// Whether [`map_in_runner`] has mapped the report page.
pub(crate) fn mapped_in_runner() -> bool {
    !RUNNER_PAGE.load(Ordering::Acquire).is_null()
}

/// In the runner's `SIGSYS` handler: store the refused call's number.
/// Async-signal-safe (an atomic store, no call at all).
pub(crate) fn store_in_runner(nr: i32) {
    let page = RUNNER_PAGE.load(Ordering::Acquire);
    // SAFETY: a page mapped by `map_in_runner`, never unmapped.
    if let Some(page) = unsafe { page.as_ref() } {
        page.store(REPORTED | u64::from(nr as u32), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_stored_through_the_runners_mapping_is_read_by_the_host() {
        let (host, fd) = ReportPage::new().unwrap();
        assert_eq!(host.refused(), None);
        let runner = map(fd.as_raw_fd()).unwrap();
        runner
            .counter(layout::REPORT)
            .store(REPORTED | 41, Ordering::Release);
        assert_eq!(host.refused(), Some(41));
        // A page the runner cannot shrink or grow (which would make the
        // host's read fault).
        // SAFETY: ftruncate on a descriptor this test owns.
        assert_ne!(unsafe { libc::ftruncate(fd.as_raw_fd(), 0) }, 0);
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EPERM));
    }

    #[test]
    fn a_payload_the_runner_puts_in_its_ring_is_read_by_the_host() {
        let (host, fd) = ReportPage::new().unwrap();
        let mut host = host.rings();
        let mut runner = Rings::runner(&map(fd.as_raw_fd()).unwrap());
        let payload: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let pos = runner.writer.put(&payload).unwrap();
        assert_eq!(host.reader.take(pos, payload.len()).unwrap(), payload);
        let pos = host.writer.put(&payload[..70_000]).unwrap();
        assert_eq!(runner.reader.take(pos, 70_000).unwrap(), payload[..70_000]);
    }

    /// Bytes of memory the shared memory behind `fd` uses.
    fn used(fd: &OwnedFd) -> u64 {
        // SAFETY: fstat fills the struct for a descriptor this test owns.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) }, 0);
        stat.st_blocks as u64 * 512
    }

    #[test]
    fn a_drained_ring_gives_its_pages_back_and_one_still_read_keeps_them() {
        let (host, fd) = ReportPage::new().unwrap();
        let mut host = host.rings();
        let mut runner = Rings::runner(&map(fd.as_raw_fd()).unwrap());
        assert_eq!(used(&fd), 0, "nothing written, nothing used");
        assert!(!host.writer.holds_pages());
        let first = host.writer.put(&[1; 1 << 20]).unwrap();
        let second = host.writer.put(&[2; 1 << 20]).unwrap();
        assert!(used(&fd) >= 2 << 20, "{} bytes", used(&fd));
        runner.reader.take(first, 1 << 20).unwrap();
        assert!(
            !host.writer.release_if_drained().unwrap(),
            "one still to read"
        );
        assert!(used(&fd) >= 2 << 20);
        assert_eq!(
            runner.reader.take(second, 1 << 20).unwrap(),
            vec![2; 1 << 20]
        );
        assert!(host.writer.release_if_drained().unwrap());
        assert!(!host.writer.holds_pages());
        // Only the page of the tails is left.
        assert_eq!(used(&fd), 4096);
        // The ring goes on where it was, on fresh pages.
        let third = host.writer.put(&[3; 100_000]).unwrap();
        assert_eq!(third, 2 << 20);
        assert_eq!(
            runner.reader.take(third, 100_000).unwrap(),
            vec![3; 100_000]
        );
    }
}
