//! How a guest ended.

use std::fmt;
use std::time::Duration;

use wasmproc_protocol::ExitReport;

/// How a guest ended: Node's `'exit'` event, with more to say.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitStatus {
    /// The guest returned from `main` or called `exit`.
    Exited { code: i32 },
    /// The guest trapped: a wasm fault such as `unreachable` (a Rust panic
    /// ends this way), with the wasm backtrace, innermost frame first.
    Trapped {
        message: String,
        backtrace: Vec<String>,
    },
    /// The runner was killed by a signal: by the host (`Child::kill`) or from
    /// outside.
    Killed { signal: i32, by_host: bool },
    /// The guest ran longer than its `timeout` and was killed.
    TimedOut { after: Duration },
    /// The guest went past one of its limits and was stopped.
    LimitExceeded(Limit),
    /// The runner broke the protocol (garbage, out-of-order or oversized
    /// frames) and the host ended it.
    ProtocolViolation { reason: String },
    /// The runner's sandbox refused a system call it does not allow, and the
    /// runner was stopped (named by the call).
    SandboxRefused { syscall: String },
    /// The guest could not start: a bad artifact, imports the host does not
    /// provide, a folder that cannot be opened, or a runner that died before
    /// reporting.
    Failed { reason: String },
}

impl ExitStatus {
    /// Whether the guest exited with code 0.
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Exited { code: 0 })
    }

    /// The exit code, if the guest exited by itself.
    pub fn code(&self) -> Option<i32> {
        match self {
            ExitStatus::Exited { code } => Some(*code),
            _ => None,
        }
    }

    /// The exit code a process standing for this guest should use: the
    /// guest's own code, 128 + signal when killed, 1 for anything else.
    pub fn process_code(&self) -> i32 {
        match self {
            ExitStatus::Exited { code } => *code & 0xff,
            ExitStatus::Killed { signal, .. } => 128 + signal,
            ExitStatus::Trapped { .. } => exit_code::TRAP,
            ExitStatus::TimedOut { .. } => exit_code::TIMED_OUT,
            ExitStatus::LimitExceeded(Limit::Cpu { .. }) => exit_code::CPU_LIMIT,
            ExitStatus::LimitExceeded(Limit::Memory { .. }) => exit_code::MEMORY_LIMIT,
            ExitStatus::LimitExceeded(Limit::Output { .. }) => exit_code::OUTPUT_LIMIT,
            ExitStatus::ProtocolViolation { .. } => exit_code::PROTOCOL_VIOLATION,
            ExitStatus::SandboxRefused { .. } => exit_code::SANDBOX_REFUSED,
            ExitStatus::Failed { .. } => exit_code::FAILED_TO_START,
        }
    }

    pub(crate) fn from_report(report: ExitReport) -> ExitStatus {
        match report {
            ExitReport::Exited { code } => ExitStatus::Exited { code },
            ExitReport::Trapped { message, backtrace } => {
                ExitStatus::Trapped { message, backtrace }
            }
            ExitReport::MemoryLimit { limit, requested } => {
                ExitStatus::LimitExceeded(Limit::Memory { limit, requested })
            }
            ExitReport::Failed { message } => ExitStatus::Failed { reason: message },
        }
    }
}

/// The process exit codes of [`ExitStatus::process_code`], one per cause:
/// `wasmtime run`'s where it has one, coreutils `timeout`'s for a timeout.
pub mod exit_code {
    /// A trap (as `wasmtime run`: 128 + SIGABRT).
    pub const TRAP: i32 = 134;
    /// The guest's timeout ran out (as `timeout`).
    pub const TIMED_OUT: i32 = 124;
    /// The guest could not start: a bad module, a missing import, a folder
    /// that cannot be opened (as `timeout` and `docker run` say their own
    /// failures).
    pub const FAILED_TO_START: i32 = 125;
    /// The CPU limit (128 + SIGXCPU, as the kernel's RLIMIT_CPU ends a process).
    pub const CPU_LIMIT: i32 = 152;
    /// The sandbox refused a system call (128 + SIGSYS, as a seccomp kill).
    pub const SANDBOX_REFUSED: i32 = 159;
    /// The memory limit.
    pub const MEMORY_LIMIT: i32 = 122;
    /// The output limit.
    pub const OUTPUT_LIMIT: i32 = 123;
    /// The runner broke the host's protocol.
    pub const PROTOCOL_VIOLATION: i32 = 121;
}

/// A limit a guest can break.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// More than this many bytes on stdout or on stderr (Node's `maxBuffer`);
    /// the output up to the limit is kept.
    Output { bytes: u64 },
    /// The guest asked for `requested` bytes of linear memory; its limit is `limit`.
    Memory { limit: u64, requested: u64 },
    /// The runner used more CPU time than this (enforced by the kernel).
    Cpu { limit: Duration },
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Output { bytes } => write!(f, "output limit of {bytes} bytes exceeded"),
            Limit::Memory { limit, requested } => write!(
                f,
                "memory limit of {} MiB exceeded (asked for {} MiB)",
                limit / (1024 * 1024),
                requested.div_ceil(1024 * 1024)
            ),
            Limit::Cpu { limit } => write!(f, "CPU limit of {limit:?} exceeded"),
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGSYS => "SIGSYS",
        libc::SIGBUS => "SIGBUS",
        libc::SIGXCPU => "SIGXCPU",
        _ => "signal",
    }
}

impl fmt::Display for ExitStatus {
    /// One line a person understands, e.g. `trap: wasm \`unreachable\`
    /// instruction executed (in crasher::crash_on_purpose)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited { code } => write!(f, "exit code {code}"),
            ExitStatus::Trapped { message, backtrace } => {
                write!(f, "trap: {message}")?;
                if let Some(frame) = backtrace.first() {
                    write!(f, " (in {frame})")?;
                }
                Ok(())
            }
            ExitStatus::Killed { signal, by_host } => {
                let name = signal_name(*signal);
                if *by_host {
                    write!(f, "killed by the host ({name})")
                } else {
                    write!(f, "killed by {name} ({signal}) from outside")
                }
            }
            ExitStatus::TimedOut { after } => write!(f, "timed out after {after:?}"),
            ExitStatus::LimitExceeded(limit) => write!(f, "stopped: {limit}"),
            ExitStatus::ProtocolViolation { reason } => write!(f, "protocol violation: {reason}"),
            ExitStatus::SandboxRefused { syscall } => {
                write!(f, "stopped: the sandbox refused system call {syscall}")
            }
            ExitStatus::Failed { reason } => write!(f, "failed to start: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_reasons() {
        let trap = ExitStatus::Trapped {
            message: "wasm `unreachable` instruction executed".into(),
            backtrace: vec!["crasher::crash_on_purpose".into(), "main".into()],
        };
        assert_eq!(
            trap.to_string(),
            "trap: wasm `unreachable` instruction executed (in crasher::crash_on_purpose)"
        );
        assert_eq!(ExitStatus::Exited { code: 42 }.to_string(), "exit code 42");
        assert_eq!(
            ExitStatus::Killed {
                signal: 9,
                by_host: false
            }
            .to_string(),
            "killed by SIGKILL (9) from outside"
        );
        assert_eq!(
            ExitStatus::Killed {
                signal: 9,
                by_host: true
            }
            .process_code(),
            137
        );
        let trapped = ExitStatus::Trapped {
            message: "unreachable".into(),
            backtrace: Vec::new(),
        };
        let codes = [
            trapped.process_code(),
            ExitStatus::TimedOut {
                after: Duration::ZERO,
            }
            .process_code(),
            ExitStatus::Failed {
                reason: String::new(),
            }
            .process_code(),
            ExitStatus::LimitExceeded(Limit::Cpu {
                limit: Duration::ZERO,
            })
            .process_code(),
            ExitStatus::LimitExceeded(Limit::Memory {
                limit: 1,
                requested: 2,
            })
            .process_code(),
            ExitStatus::LimitExceeded(Limit::Output { bytes: 1 }).process_code(),
            ExitStatus::SandboxRefused {
                syscall: "uname".into(),
            }
            .process_code(),
            ExitStatus::ProtocolViolation {
                reason: String::new(),
            }
            .process_code(),
        ];
        assert_eq!(codes, [134, 124, 125, 152, 122, 123, 159, 121]);
        assert_eq!(
            ExitStatus::TimedOut {
                after: Duration::from_millis(1500)
            }
            .to_string(),
            "timed out after 1.5s"
        );
        assert_eq!(
            ExitStatus::LimitExceeded(Limit::Output { bytes: 4096 }).to_string(),
            "stopped: output limit of 4096 bytes exceeded"
        );
    }
}
