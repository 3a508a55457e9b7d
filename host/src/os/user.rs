//! Who this process runs as, and detaching from the terminal.

/// This process's effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// Start a new session for the calling process (for a daemon, before it
/// runs), so that the terminal's signals no longer reach it.
///
/// # Errors
///
/// When the process leads a process group already.
pub fn new_session() -> std::io::Result<()> {
    // SAFETY: setsid touches no memory.
    if unsafe { libc::setsid() } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
