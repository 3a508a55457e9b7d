//! What runs inside each guest's OS process.
//!
//! The host starts `wasmproc-runner` with the control pipes on fds 3 (host
//! to runner) and 4 (runner to host), its shared memory on 5 and the
//! guest's stdio on 0, 1 and 2.
//! The runner:
//!
//! 1. asks to be killed when the host ends (the parent-death signal), and
//!    maps its shared memory (fd 5: the sandbox report page and the
//!    payload rings, [`crate::os::ring`]);
//! 2. says `Hello` with its protocol version, builds the engine and (on a
//!    thread of its own) the linker, the same for every guest: a pooled
//!    runner has them ready;
//! 3. reads the launch spec, blocking, and maps the precompiled artifact
//!    the host named (it never compiles) while the linker is built, unless
//!    a pooled runner was told it ahead (`Preload`) and has it mapped and
//!    linked already; the linker's thread has ended before
//! 4. it hardens itself (the second wall, [`crate::sandbox::os`]);
//! 5. starts a single-threaded runtime and runs the guest (`wasi:cli/run`
//!    for a component, `_start` for a core module) beside two I/O loops
//!    (inbox in, sends out, see [`link`]), all three in one future
//!    ([`drive`]);
//! 6. reports how the guest ended (`Exit`) and exits.
//!
//! It also exits as soon as the host closes the control pipe.

mod drive;
mod guest;
mod ipc;
mod link;
mod probe;
mod ticker;

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

use wasmproc_protocol::contract::{
    CONTROL_IN_FD, CONTROL_OUT_FD, EXIT_FAILED, EXIT_HOST_GONE, SANDBOX_REPORT_FD,
};
use wasmproc_protocol::{
    ExitReport, FrameError, HardeningStep, HostToRunner, LaunchSpec, PROTOCOL_VERSION,
    RunnerToHost, check_version, read_frame_blocking, write_frame_blocking,
};

use crate::connection::{ControlFd, FrameReader, FrameWriter, WriteStats};
use crate::os::ring::Rings;
use crate::sandbox::os::OsPolicy;
use guest::{Loaded, Prepared, run_guest};
use link::Link;

/// Run the guest the host sends. Never returns.
pub(crate) fn main() -> ! {
    let (mut from_host, mut to_host) = match control_pipes() {
        Some(pipes) => pipes,
        None => {
            eprintln!(
                "wasmproc-runner runs guests for the wasmproc host and is started by it; \
                 use `wasmproc run MODULE` instead"
            );
            std::process::exit(2);
        }
    };
    die_with_host();
    take_terminal();
    // The shared memory: the sandbox report page and the payload rings.
    let rings = crate::os::report::map_in_runner(SANDBOX_REPORT_FD)
        .map_err(|err| eprintln!("wasmproc-runner: {err}; large payloads go by pipe"))
        .ok();
    crate::os::keep_large_buffers_in_heap();
    crate::os::one_heap_for_all_threads();
    let hello = RunnerToHost::Hello {
        protocol_version: PROTOCOL_VERSION,
    };
    if write_frame_blocking(&mut to_host, &hello).is_err() {
        std::process::exit(EXIT_HOST_GONE);
    }
    // Everything that does not depend on the guest, before its spec: a
    // runner waiting in the host's pool has this done already, and the
    // artifact the host expects mapped and linked too (`Preload`). The
    // linker is built beside the main thread (see `Prepared`).
    let mut prepared = Prepared::new();
    let filters = crate::sandbox::os::build_filters(std::process::id());
    let mut ahead = None;
    let mut read_ahead = Vec::new();
    let (spec, leftover) = loop {
        match read_frame_blocking::<HostToRunner>(&mut from_host, read_ahead) {
            Ok((HostToRunner::Launch(spec), leftover)) => break (spec, leftover),
            Ok((HostToRunner::Preload { artifact, kind }, rest)) => {
                // A guess: when it fails, the launch loads again and says why.
                ahead = prepared
                    .as_mut()
                    .ok()
                    .and_then(|p| p.load(&artifact, kind).ok());
                read_ahead = rest;
            }
            Ok((other, _)) => fail(
                &mut to_host,
                format!("protocol error: expected a launch spec first, got {other:?}"),
            ),
            Err(FrameError::Truncated { .. }) => std::process::exit(EXIT_HOST_GONE),
            Err(err) => fail(&mut to_host, format!("protocol error: {err}")),
        }
    };
    if let Err(err) = check_version(spec.protocol_version) {
        fail(&mut to_host, err.to_string());
    }
    // The artifact, mapped while the linker is still being built; what went
    // wrong is reported once the runner is hardened. Then the linker's
    // thread has ended: no thread but this one is left for the walls.
    let loaded = match &mut prepared {
        Ok(prepared) => {
            let loaded = spec
                .probe
                .is_none()
                .then(|| prepared.load_for(&spec, ahead));
            let _ = prepared.linked();
            loaded
        }
        Err(_) => None,
    };

    // The second wall, before any other thread exists and before guest code.
    let policy = OsPolicy::for_spec(&spec, std::process::id());
    let steps: Vec<HardeningStep> = policy
        .apply(&filters)
        .into_iter()
        .map(|step| HardeningStep {
            name: step.name.to_owned(),
            applied: step.outcome.is_ok(),
            detail: step.outcome.unwrap_or_else(|why| why),
        })
        .collect();
    if write_frame_blocking(&mut to_host, &RunnerToHost::Hardened { steps }).is_err() {
        std::process::exit(EXIT_HOST_GONE);
    }
    if spec.probe.is_some() {
        probe::run(&spec);
        let report = RunnerToHost::Exit(ExitReport::Exited { code: 0 });
        let _ = write_frame_blocking(&mut to_host, &report);
        std::process::exit(0);
    }

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => fail(
            &mut to_host,
            format!("cannot start the runner's runtime: {err}"),
        ),
    };
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(err) => fail(
            &mut to_host,
            format!("cannot set up the runner's engine: {err:#}"),
        ),
    };
    runtime.block_on(run(
        prepared, loaded, spec, from_host, to_host, leftover, rings,
    ))
}

/// No orphans: ask for SIGKILL when the host's spawner thread ends, even if
/// the host is SIGKILLed. If the host ended before this took effect, the
/// parent has changed: exit. (Had it ended even earlier, writing `Hello`
/// fails on the closed pipe and the runner exits then.)
fn die_with_host() {
    let parent = std::os::unix::process::parent_id();
    // SAFETY: prctl with integer arguments only.
    let set = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } == 0;
    if !set || std::os::unix::process::parent_id() != parent {
        std::process::exit(EXIT_HOST_GONE);
    }
}

/// A runner started on a terminal of its own (its session's leader, stdin
/// a terminal) makes it its controlling terminal, so the guest reads it in
/// the foreground and Ctrl-C on it reaches the guest. Best effort: without
/// it the guest still reads and writes the terminal.
fn take_terminal() {
    // SAFETY: isatty, getsid, getpid and ioctl(TIOCSCTTY) take integers only.
    unsafe {
        if libc::isatty(0) == 1 && libc::getsid(0) == libc::getpid() {
            libc::ioctl(0, libc::TIOCSCTTY, 0);
        }
    }
}

/// The control pipes, if fds 3 and 4 are open.
fn control_pipes() -> Option<(File, File)> {
    // SAFETY: F_GETFD only inspects the descriptor table.
    let open = |fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1;
    if !open(CONTROL_IN_FD) || !open(CONTROL_OUT_FD) {
        return None;
    }
    // SAFETY: the host passes these two fds to this process and nothing else
    // in it owns them.
    unsafe {
        Some((
            File::from_raw_fd(CONTROL_IN_FD),
            File::from_raw_fd(CONTROL_OUT_FD),
        ))
    }
}

/// Report that the guest could not start, and exit.
fn fail(to_host: &mut File, message: String) -> ! {
    let _ = write_frame_blocking(to_host, &RunnerToHost::Exit(ExitReport::Failed { message }));
    std::process::exit(EXIT_FAILED);
}

async fn run(
    prepared: Prepared,
    loaded: Option<anyhow::Result<Loaded>>,
    spec: LaunchSpec,
    from_host: File,
    to_host: File,
    leftover: Vec<u8>,
    rings: Option<Rings>,
) -> ! {
    let io = ControlFd::from_owned_fd(OwnedFd::from(from_host))
        .and_then(|rx| ControlFd::from_owned_fd(OwnedFd::from(to_host)).map(|tx| (rx, tx)));
    let (rx, tx) = match io {
        Ok(pipes) => pipes,
        Err(err) => {
            eprintln!("wasmproc-runner: cannot use the control pipes: {err}");
            std::process::exit(EXIT_FAILED);
        }
    };
    let (ring_out, ring_in) = rings.map(|r| (r.writer, r.reader)).unzip();
    let ticker = Arc::new(ticker::Ticker::default());
    let link = Arc::new(Link::new(
        spec.id,
        spec.name.clone(),
        spec.limits.clone(),
        ticker.clone(),
        ring_out,
    ));
    // After hardening: the ticker thread lives under both walls too. The
    // pipe stays open until the process ends.
    ticker.start(link.clone(), tx.as_raw_fd());
    let reader: drive::Branch = Box::pin({
        let link = link.clone();
        async move {
            link.read_from_host(FrameReader::new(rx, &leftover).with_ring(ring_in))
                .await
        }
    });
    let writer: drive::Branch = Box::pin({
        let link = link.clone();
        async move {
            link.write_to_host(FrameWriter::new(tx, Arc::new(WriteStats::default())))
                .await
        }
    });
    let guest: drive::Branch = Box::pin(async move {
        let report = match run_guest(prepared, loaded, &spec, link.clone()).await {
            Ok(report) => report,
            Err(err) => ExitReport::Failed {
                message: format!("{err:#}"),
            },
        };
        let code = match &report {
            ExitReport::Exited { code } => *code,
            ExitReport::Trapped { .. } | ExitReport::MemoryLimit { .. } => 134,
            ExitReport::Failed { .. } => EXIT_FAILED,
        };
        // Everything the guest sent goes before the report; then the report.
        let _ = link.queue(&RunnerToHost::Exit(report)).await;
        link.flushed().await;
        std::process::exit(code & 0xff);
    });
    // The reader first, so that a message it delivers reaches the guest in
    // the same turn; the writer last, so that what the guest sent leaves in
    // the same turn too.
    drive::Drive::new(vec![reader, guest, writer]).await;
    std::process::exit(EXIT_FAILED);
}
