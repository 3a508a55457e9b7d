//! What the kernel says about a runner process: its resident memory and
//! the CPU time it has used.

/// A process's resident set size in bytes and CPU time (user + system) in
/// milliseconds; `None` once it is gone.
pub fn usage(pid: u32) -> Option<(u64, u64)> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: the fields after it follow its `)`.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after `)`.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf reads a constant and touches no memory.
    let (page, hz) = unsafe {
        (
            libc::sysconf(libc::_SC_PAGESIZE),
            libc::sysconf(libc::_SC_CLK_TCK),
        )
    };
    let (page, hz) = (u64::try_from(page).ok()?, u64::try_from(hz).ok()?.max(1));
    Some((pages * page, ticks * 1000 / hz))
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_memory_and_has_used_some_cpu() {
        let (rss, _cpu_ms) = super::usage(std::process::id()).unwrap();
        assert!(rss > 1024 * 1024, "{rss}");
        assert_eq!(super::usage(u32::MAX), None);
    }
}
