//! One guest in its store: load the precompiled artifact, wire WASI (and
//! `ipc` for a component), run it under its memory limit, and turn how it
//! ended into an [`ExitReport`]: a trap with its wasm backtrace, a refused
//! memory growth, an exit code.

use std::sync::Arc;

use wasmproc_protocol::{ExitReport, LaunchSpec, ModuleKind};
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{
    Engine, Linker, Module, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap,
    WasmBacktrace,
};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;

use super::ipc;
use super::link::Link;
use crate::{engine, sandbox};

/// The component linker of every guest: WASI and `ipc`.
type ComponentLinker = wasmtime::component::Linker<ipc::GuestState>;

/// The stack of the thread that builds the linker: the ticker's size or
/// up to four times it, so that the ticker thread started later reuses it
/// (the C library keeps a finished thread's stack for the next).
const LINKER_STACK: usize = 256 * 1024;

/// The engine and the component linker: the same for every guest.
///
/// The linker is built on a thread of its own, started by
/// [`Prepared::new`], while the runner reads its spec and maps its
/// artifact (each takes about 0.2 ms). [`Prepared::linked`] waits for that
/// thread to end; the runner calls it before hardening, so no thread but
/// the main one exists when Landlock and seccomp bind the process.
pub(super) struct Prepared {
    engine: Engine,
    building: Option<std::thread::JoinHandle<wasmtime::Result<ComponentLinker>>>,
    linker: Result<ComponentLinker, String>,
}

impl Prepared {
    pub(super) fn new() -> anyhow::Result<Prepared> {
        let engine = Engine::new(&engine::runtime_config())?;
        let for_linker = engine.clone();
        let building = std::thread::Builder::new()
            .name("linker".into())
            .stack_size(LINKER_STACK)
            .spawn(move || {
                let mut linker = ComponentLinker::new(&for_linker);
                wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
                ipc::add_to_linker(&mut linker)?;
                Ok(linker)
            })?;
        Ok(Prepared {
            engine,
            building: Some(building),
            linker: Err("it is still being built".to_owned()),
        })
    }

    /// The linker, once the thread building it has ended.
    pub(super) fn linked(&mut self) -> anyhow::Result<&ComponentLinker> {
        if let Some(building) = self.building.take() {
            self.linker = match building.join() {
                Ok(built) => built.map_err(|err| format!("{err:#}")),
                Err(_) => Err("the thread building it panicked".to_owned()),
            };
        }
        self.linker
            .as_ref()
            .map_err(|why| anyhow::anyhow!("cannot build the linker: {why}"))
    }

    /// Map the precompiled `artifact` and, for a component, resolve its
    /// imports: all that starting its guest needs before a store exists.
    pub(super) fn load(&mut self, artifact: &str, kind: ModuleKind) -> anyhow::Result<Loaded> {
        let cannot_load = |err| anyhow::anyhow!("cannot load artifact {artifact}: {err}");
        let code = match kind {
            ModuleKind::Component => {
                // SAFETY: the host compiled this artifact itself with the
                // same engine configuration, and wrote it atomically to its
                // cache.
                let component = unsafe { Component::deserialize_file(&self.engine, artifact) }
                    .map_err(cannot_load)?;
                let linked = self
                    .linked()?
                    .instantiate_pre(&component)
                    .and_then(CommandPre::new)
                    .map_err(|err| anyhow::anyhow!("cannot instantiate the guest: {err}"))?;
                Code::Component(linked)
            }
            // SAFETY: as above.
            ModuleKind::Module => Code::Module(
                unsafe { Module::deserialize_file(&self.engine, artifact) }.map_err(cannot_load)?,
            ),
        };
        Ok(Loaded {
            artifact: artifact.to_owned(),
            kind,
            code,
        })
    }

    /// The launch's artifact: `ahead` if it is that one (see `Preload`),
    /// else loaded now.
    pub(super) fn load_for(
        &mut self,
        spec: &LaunchSpec,
        ahead: Option<Loaded>,
    ) -> anyhow::Result<Loaded> {
        match ahead {
            Some(loaded) if loaded.artifact == spec.artifact && loaded.kind == spec.kind => {
                Ok(loaded)
            }
            other => {
                drop(other);
                self.load(&spec.artifact, spec.kind)
            }
        }
    }
}

/// An artifact [`Prepared::load`]ed: at the launch, or ahead of it by a
/// runner waiting in the pool (`Preload`).
pub(super) struct Loaded {
    artifact: String,
    kind: ModuleKind,
    code: Code,
}

enum Code {
    /// Linked: instantiating it only builds the instance.
    Component(CommandPre<ipc::GuestState>),
    /// Its WASI preview 1 linker is built at the launch.
    Module(Module),
}

/// Run the guest from its artifact, `loaded` before the runner hardened
/// itself (loaded now if it was not); `Err` only when it could not start.
///
/// The linker is dropped once the guest is instantiated, and the heap pages
/// it and the loading freed go back to the kernel (`drop_after_start`): the
/// WASI linker's tables are about 117 KiB of a runner's heap, and an idle
/// runner's resident heap is 48 KiB smaller without them.
pub(super) async fn run_guest(
    mut prepared: Prepared,
    loaded: Option<anyhow::Result<Loaded>>,
    spec: &LaunchSpec,
    link: Arc<Link>,
) -> anyhow::Result<ExitReport> {
    let wasi = sandbox::wasi_builder(spec)?;
    let loaded = match loaded {
        Some(loaded) => loaded?,
        None => prepared.load_for(spec, None)?,
    };
    let Prepared { engine, linker, .. } = prepared;
    match loaded.code {
        Code::Component(linked) => run_component(&engine, linker, &linked, wasi, link).await,
        Code::Module(module) => {
            drop(linker);
            run_module(&engine, &module, wasi, spec.limits.max_memory).await
        }
    }
}

async fn run_component(
    engine: &Engine,
    linker: Result<ComponentLinker, String>,
    linked: &CommandPre<ipc::GuestState>,
    mut wasi: wasmtime_wasi::WasiCtxBuilder,
    link: Arc<Link>,
) -> anyhow::Result<ExitReport> {
    let max_memory = link.limits.max_memory;
    let max_message_size = link.limits.max_message_size;
    let state = ipc::GuestState {
        wasi: wasi.build(),
        table: ResourceTable::new(),
        limiter: MemoryLimiter::new(max_memory, Some(link.clone())),
        link,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    // However large a list a guest hands the host, the runner copies at most
    // a message's worth (plus room for names): beyond, the call traps.
    store.set_hostcall_fuel(
        usize::try_from(max_message_size)
            .unwrap_or(usize::MAX)
            .saturating_add(1024 * 1024),
    );
    let command = linked
        .instantiate_async(&mut store)
        .await
        .map_err(|err| anyhow::anyhow!("cannot instantiate the guest: {err}"))?;
    drop_after_start(linker);
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
        limiter: MemoryLimiter::new(max_memory, None),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    let instance = linker
        .instantiate_async(&mut store, module)
        .await
        .map_err(|err| anyhow::anyhow!("cannot instantiate the guest: {err}"))?;
    drop_after_start(linker);
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

/// What only starting the guest needed: gone once it is instantiated, and
/// the heap pages it held given back.
fn drop_after_start<L>(linker: L) {
    drop(linker);
    crate::os::release_free_heap();
}

/// Wasmtime's own limiter, plus a record of the growth it refused: the
/// status says `memory limit` from this record, not from an error's text.
pub(crate) struct MemoryLimiter {
    limits: StoreLimits,
    max: u64,
    refused: Option<u64>,
    /// Where the size it allowed is published, for the host's `top`.
    link: Option<Arc<Link>>,
}

impl MemoryLimiter {
    fn new(max: u64, link: Option<Arc<Link>>) -> MemoryLimiter {
        MemoryLimiter {
            limits: StoreLimitsBuilder::new()
                .memory_size(usize::try_from(max).unwrap_or(usize::MAX))
                .trap_on_grow_failure(true)
                .build(),
            max,
            refused: None,
            link,
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
        if matches!(verdict, Ok(true))
            && let Some(link) = &self.link
        {
            link.memory_grew(desired as u64);
        }
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
