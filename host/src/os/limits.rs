//! How many guests this process can hold: each costs the host a few open
//! files (its control channel, and in an app its piped stdout and stderr),
//! so the open-files limit decides. The control channel is two pipes while
//! the host's descriptors fill less than half of the limit and one socket
//! after that (see [`crate::os::pipe`]); the sandbox report is a mapped
//! page and the runner's process a pid, neither a descriptor.

use std::io;

/// Open files the host holds per app guest while pipes fit: two control
/// pipes and the read ends of a piped stdout and stderr.
pub(crate) const FILES_PER_GUEST: u64 = 4;
/// The same once the control channel is one socket.
pub(crate) const FILES_PER_GUEST_ON_SOCKETS: u64 = 3;
/// Open files kept for the host itself (its runtime, the cache, the CLI).
const FILES_RESERVED: u64 = 64;

/// Raise this process's soft open-files limit to its hard limit (what any
/// process may do for itself) and return the soft limit now in force. The
/// hard limit is the operator's: it is never raised.
///
/// # Errors
///
/// When the limit cannot be read.
pub(crate) fn raise_open_files() -> io::Result<u64> {
    let mut limit = open_files()?;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Ok(limit.rlim_cur)
}

/// This process's soft open-files limit now (0 if it cannot be read).
pub(crate) fn open_files_limit() -> u64 {
    open_files().map_or(0, |limit| limit.rlim_cur)
}

/// This process's open-files limits.
fn open_files() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit)
}

/// How many app guests the open-files limit `files` leaves room for: the
/// first half of it holds guests on pipes, the second half guests on
/// sockets.
pub(crate) fn guests_for(files: u64) -> u64 {
    let half = files / 2;
    half.saturating_sub(FILES_RESERVED) / FILES_PER_GUEST
        + (files - half) / FILES_PER_GUEST_ON_SOCKETS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_cost_four_files_in_the_first_half_and_three_in_the_second() {
        assert_eq!(guests_for(2048), 240 + 341);
        assert_eq!(guests_for(1024), 112 + 170);
        assert_eq!(guests_for(0), 0);
        assert!(raise_open_files().unwrap() >= 64);
    }
}
