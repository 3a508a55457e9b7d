//! Shared by the probe helpers: this process's peak resident set size.

/// `VmHWM` from `/proc/self/status`, in KiB (0 if unreadable).
pub fn peak_rss_kib() -> u64 {
    peak_of("/proc/self/status")
}

/// `VmHWM` of process `pid`, in KiB (0 if unreadable).
#[allow(dead_code)]
pub fn peak_rss_kib_of(pid: u32) -> u64 {
    peak_of(&format!("/proc/{pid}/status"))
}

fn peak_of(status: &str) -> u64 {
    std::fs::read_to_string(status)
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
