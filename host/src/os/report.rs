//! The sandbox report page: where a runner's `SIGSYS` handler says which
//! system call its seccomp filter refused, for the host to read once the
//! runner has ended.
//!
//! Each runner gets a page of its own, a sealed `memfd` that the host maps
//! and then closes (a mapping does not count against the open-files limit,
//! so 10,000 guests cost no descriptor for it). The runner maps the same
//! page before its sandbox goes up and stores the number there, which is
//! async-signal-safe and can never land inside a frame. A hostile runner
//! could only write its own page: it cannot make another guest look
//! refused. The seals keep it from shrinking the page, which would make
//! the host's read fault.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// The page's size: the report is one `u64` at its start.
const PAGE: usize = 4096;
/// Set in the report's high half once a number is stored.
const REPORTED: u64 = 1 << 32;

/// The host's read-only view of one runner's report page.
#[derive(Debug)]
pub(crate) struct ReportPage {
    page: NonNull<AtomicU64>,
}

// SAFETY: the mapping belongs to the value alone and is only read through
// an atomic.
unsafe impl Send for ReportPage {}
// SAFETY: as above.
unsafe impl Sync for ReportPage {}

impl ReportPage {
    /// A new page, mapped here, and the descriptor the runner gets (the
    /// host closes its copy once the runner has started).
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
            libc::ftruncate(fd.as_raw_fd(), PAGE as libc::off_t) == 0
                && libc::fcntl(
                    fd.as_raw_fd(),
                    libc::F_ADD_SEALS,
                    libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
                ) == 0
        };
        if !sealed {
            return Err(io::Error::last_os_error());
        }
        let page = map(fd.as_raw_fd(), libc::PROT_READ)?;
        Ok((ReportPage { page: page.cast() }, fd))
    }

    /// The number of the system call the runner's sandbox refused, if it
    /// said so (read once the runner has ended).
    pub(crate) fn refused(&self) -> Option<i64> {
        // SAFETY: the page stays mapped while `self` lives.
        let report = unsafe { self.page.as_ref() }.load(Ordering::Acquire);
        (report >> 32 == REPORTED >> 32).then(|| i64::from(report as u32 as i32))
    }
}

impl Drop for ReportPage {
    fn drop(&mut self) {
        // SAFETY: unmaps the page mapped in `new`, which nothing else uses.
        unsafe { libc::munmap(self.page.as_ptr().cast(), PAGE) };
    }
}

/// Map `fd`'s first page, shared.
fn map(fd: RawFd, protection: libc::c_int) -> io::Result<NonNull<u8>> {
    // SAFETY: a fresh shared mapping of one page of `fd`; the kernel picks
    // the address.
    let address = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            protection,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if address == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(address.cast()).ok_or_else(|| io::Error::other("mmap returned address 0"))
}

/// The runner's writable view of its page, mapped by [`map_in_runner`].
static RUNNER_PAGE: AtomicPtr<AtomicU64> = AtomicPtr::new(std::ptr::null_mut());

/// In the runner, before its sandbox goes up: map the report page the
/// host passed on `fd`, and close `fd`.
///
/// # Errors
///
/// When `fd` is not a page to map (a runner started by something other
/// than a host).
pub(crate) fn map_in_runner(fd: RawFd) -> io::Result<()> {
    let page = map(fd, libc::PROT_READ | libc::PROT_WRITE).map_err(|err| {
        io::Error::new(
            err.kind(),
            format!("cannot map the sandbox report page (fd {fd}): {err}"),
        )
    })?;
    RUNNER_PAGE.store(page.as_ptr().cast(), Ordering::Release);
    // SAFETY: the host's descriptor is no longer needed once mapped.
    unsafe { libc::close(fd) };
    Ok(())
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
        let runner = map(fd.as_raw_fd(), libc::PROT_READ | libc::PROT_WRITE).unwrap();
        // SAFETY: the mapping just made, one page long.
        let runner = unsafe { runner.cast::<AtomicU64>().as_ref() };
        runner.store(REPORTED | 41, Ordering::Release);
        assert_eq!(host.refused(), Some(41));
        // A page the runner cannot shrink or grow (which would make the
        // host's read fault).
        // SAFETY: ftruncate on a descriptor this test owns.
        assert_ne!(unsafe { libc::ftruncate(fd.as_raw_fd(), 0) }, 0);
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EPERM));
        // SAFETY: unmaps the test's own mapping.
        unsafe { libc::munmap((runner as *const AtomicU64).cast_mut().cast(), PAGE) };
    }
}
