//! What runs inside each guest's OS process.
//!
//! The host starts `wasmproc-runner` with the control pipes on fds 3 (host
//! to runner) and 4 (runner to host) and the guest's stdio on 0, 1 and 2.
//! The runner:
//!
//! 1. asks to be killed when the host ends (the parent-death signal);
//! 2. says `Hello` with its protocol version, builds the engine and the
//!    linker (the same for every guest: a pooled runner has them ready),
//!    and reads the launch spec, blocking, before any thread exists;
//! 3. maps the precompiled artifact the host named (it never compiles);
//! 4. starts a single-threaded runtime and runs the guest (`wasi:cli/run`
//!    for a component, `_start` for a core module) beside two I/O loops
//!    (inbox in, sends out, see [`link`]), all three in one future
//!    ([`drive`]);
//! 5. reports how the guest ended (`Exit`) and exits.
//!
//! It also exits as soon as the host closes the control pipe.

mod drive;
mod ipc;
mod link;
mod probe;

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

use tokio::net::unix::pipe;
use wasmproc_protocol::{
    ExitReport, FrameError, HardeningStep, HostToRunner, LaunchSpec, ModuleKind, PROTOCOL_VERSION,
    RunnerToHost, check_version,
};
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{
    Engine, Linker, Module, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap,
    WasmBacktrace,
};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::connection::{
    FrameReader, FrameWriter, WriteStats, read_frame_blocking, write_frame_blocking,
};
use crate::sandbox::os::OsPolicy;
use crate::{engine, sandbox};
use link::{EXIT_HOST_GONE, Link};

/// The fd on which the runner reads frames from the host.
pub const CONTROL_IN_FD: i32 = 3;
/// The fd on which the runner writes frames to the host.
pub const CONTROL_OUT_FD: i32 = 4;

/// The runner's exit code when it could not start its guest.
const EXIT_FAILED: i32 = 71;

/// Run the guest the host sends. Never returns.
pub fn main() -> ! {
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
    crate::connection::keep_large_buffers_in_heap();
    let hello = RunnerToHost::Hello {
        protocol_version: PROTOCOL_VERSION,
    };
    if write_frame_blocking(&mut to_host, &hello).is_err() {
        std::process::exit(EXIT_HOST_GONE);
    }
    // Everything that does not depend on the guest, before its spec: a
    // runner waiting in the host's pool has this done already.
    let prepared = Prepared::new();
    let (spec, leftover) = match read_frame_blocking::<HostToRunner>(&mut from_host) {
        Ok((HostToRunner::Launch(spec), leftover)) => (spec, leftover),
        Ok((other, _)) => fail(
            &mut to_host,
            format!("protocol error: expected a launch spec first, got {other:?}"),
        ),
        Err(FrameError::Truncated { .. }) => std::process::exit(EXIT_HOST_GONE),
        Err(err) => fail(&mut to_host, format!("protocol error: {err}")),
    };
    if let Err(err) = check_version(spec.protocol_version) {
        fail(&mut to_host, err.to_string());
    }

    // The second wall, before any other thread exists and before guest code.
    let policy = OsPolicy::for_spec(&spec, std::process::id());
    let steps: Vec<HardeningStep> = policy
        .apply()
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
    if spec.probe {
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
    runtime.block_on(run(prepared, spec, from_host, to_host, leftover))
}

/// The engine and the component linker (WASI and `ipc`): the same for
/// every guest.
struct Prepared {
    engine: Engine,
    linker: wasmtime::component::Linker<ipc::GuestState>,
}

impl Prepared {
    fn new() -> anyhow::Result<Prepared> {
        let engine = Engine::new(&engine::runtime_config())?;
        let mut linker = wasmtime::component::Linker::<ipc::GuestState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        ipc::add_to_linker(&mut linker)?;
        Ok(Prepared { engine, linker })
    }
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
    spec: LaunchSpec,
    from_host: File,
    to_host: File,
    leftover: Vec<u8>,
) -> ! {
    let io = pipe::Receiver::from_owned_fd(OwnedFd::from(from_host))
        .and_then(|rx| pipe::Sender::from_owned_fd(OwnedFd::from(to_host)).map(|tx| (rx, tx)));
    let (rx, tx) = match io {
        Ok(pipes) => pipes,
        Err(err) => {
            eprintln!("wasmproc-runner: cannot use the control pipes: {err}");
            std::process::exit(EXIT_FAILED);
        }
    };
    let link = Arc::new(Link::new(spec.id, spec.name.clone(), spec.limits.clone()));
    let reader: drive::Branch = Box::pin({
        let link = link.clone();
        async move { link.read_from_host(FrameReader::new(rx, &leftover)).await }
    });
    let writer: drive::Branch = Box::pin({
        let link = link.clone();
        async move {
            link.write_to_host(FrameWriter::new(tx, Arc::new(WriteStats::default())))
                .await
        }
    });
    let guest: drive::Branch = Box::pin(async move {
        let report = match run_guest(&prepared, &spec, link.clone()).await {
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

/// Load and run the guest; `Err` only when it could not start.
async fn run_guest(
    prepared: &Prepared,
    spec: &LaunchSpec,
    link: Arc<Link>,
) -> anyhow::Result<ExitReport> {
    let engine = &prepared.engine;
    let wasi = sandbox::wasi_builder(spec)?;
    match spec.kind {
        ModuleKind::Component => {
            // SAFETY: the host compiled this artifact itself with the same
            // engine configuration, and wrote it atomically to its cache.
            let component = unsafe { Component::deserialize_file(engine, &spec.artifact) }
                .map_err(|err| anyhow::anyhow!("cannot load artifact {}: {err}", spec.artifact))?;
            run_component(engine, &prepared.linker, &component, wasi, link).await
        }
        ModuleKind::Module => {
            // SAFETY: as above.
            let module = unsafe { Module::deserialize_file(engine, &spec.artifact) }
                .map_err(|err| anyhow::anyhow!("cannot load artifact {}: {err}", spec.artifact))?;
            run_module(engine, &module, wasi, spec.limits.max_memory).await
        }
    }
}

fn prepare_store<T>(store: &mut Store<T>) -> anyhow::Result<()> {
    store.set_fuel(u64::MAX)?;
    store.fuel_async_yield_interval(Some(engine::FUEL_YIELD_INTERVAL))?;
    Ok(())
}

async fn run_component(
    engine: &Engine,
    linker: &wasmtime::component::Linker<ipc::GuestState>,
    component: &Component,
    mut wasi: wasmtime_wasi::WasiCtxBuilder,
    link: Arc<Link>,
) -> anyhow::Result<ExitReport> {
    let max_memory = link.limits.max_memory;
    let max_message_size = link.limits.max_message_size;
    let state = ipc::GuestState {
        wasi: wasi.build(),
        table: ResourceTable::new(),
        link,
        limiter: MemoryLimiter::new(max_memory),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    prepare_store(&mut store)?;
    // However large a list a guest hands the host, the runner copies at most
    // a message's worth (plus room for names): beyond, the call traps.
    store.set_hostcall_fuel(
        usize::try_from(max_message_size)
            .unwrap_or(usize::MAX)
            .saturating_add(1024 * 1024),
    );
    let command =
        wasmtime_wasi::p2::bindings::Command::instantiate_async(&mut store, component, linker)
            .await
            .map_err(|err| anyhow::anyhow!("cannot instantiate the guest: {err}"))?;
    Ok(match command.wasi_cli_run().call_run(&mut store).await {
        Ok(Ok(())) => ExitReport::Exited { code: 0 },
        Ok(Err(())) => ExitReport::Exited { code: 1 },
        Err(err) => store
            .data()
            .limiter
            .report()
            .unwrap_or_else(|| report_error(&err)),
    })
}

/// What a core module guest's store holds.
struct P1State {
    wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
}

async fn run_module(
    engine: &Engine,
    module: &Module,
    mut wasi: wasmtime_wasi::WasiCtxBuilder,
    max_memory: u64,
) -> anyhow::Result<ExitReport> {
    let mut linker = Linker::<P1State>::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |state| &mut state.wasi)?;
    let state = P1State {
        wasi: wasi.build_p1(),
        limiter: MemoryLimiter::new(max_memory),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    prepare_store(&mut store)?;
    let instance = linker
        .instantiate_async(&mut store, module)
        .await
        .map_err(|err| anyhow::anyhow!("cannot instantiate the guest: {err}"))?;
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .map_err(|err| anyhow::anyhow!("the module has no `_start` function: {err}"))?;
    Ok(match start.call_async(&mut store, ()).await {
        Ok(()) => ExitReport::Exited { code: 0 },
        Err(err) => store
            .data()
            .limiter
            .report()
            .unwrap_or_else(|| report_error(&err)),
    })
}

/// Wasmtime's own limiter, plus a record of the growth it refused: the
/// status says `memory limit` from this record, not from an error's text.
pub(crate) struct MemoryLimiter {
    limits: StoreLimits,
    max: u64,
    refused: Option<u64>,
}

impl MemoryLimiter {
    fn new(max: u64) -> MemoryLimiter {
        MemoryLimiter {
            limits: StoreLimitsBuilder::new()
                .memory_size(usize::try_from(max).unwrap_or(usize::MAX))
                .trap_on_grow_failure(true)
                .build(),
            max,
            refused: None,
        }
    }

    /// The report, if the guest ended because a growth was refused.
    fn report(&self) -> Option<ExitReport> {
        self.refused.map(|requested| ExitReport::MemoryLimit {
            limit: self.max,
            requested,
        })
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let verdict = self.limits.memory_growing(current, desired, maximum);
        if !matches!(verdict, Ok(true)) {
            self.refused = Some(desired as u64);
        }
        verdict
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }
}

/// Turn the error a guest ended with into its report.
fn report_error(err: &wasmtime::Error) -> ExitReport {
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return ExitReport::Exited { code: exit.0 };
    }
    let backtrace = err
        .downcast_ref::<WasmBacktrace>()
        .map(|bt| {
            bt.frames()
                .iter()
                .map(|frame| match frame.func_name() {
                    // `{:#}` leaves out the hash suffix of Rust symbols.
                    Some(name) => format!("{:#}", rustc_demangle::demangle(name)),
                    None => format!("<wasm function {}>", frame.func_index()),
                })
                .collect()
        })
        .unwrap_or_default();
    let message = match err.downcast_ref::<Trap>() {
        Some(trap) => {
            let text = trap.to_string();
            text.strip_prefix("wasm trap: ").unwrap_or(&text).to_owned()
        }
        None => err.root_cause().to_string(),
    };
    ExitReport::Trapped { message, backtrace }
}
