//! Starting runners and watching them until they end.
//!
//! [`Host`] owns a relay. Forking a guest: compile (or find) its artifact,
//! register it with the relay, start a runner process from the *spawner
//! thread*, and start three tasks for it:
//!
//! - the **writer** sends the launch spec, then moves items from the
//!   guest's mailbox to its runner, many frames per `write`;
//! - the **reader** checks the runner's `Hello`, routes every `Send` through
//!   the relay and keeps the `Exit` report; anything malformed or out of
//!   order ends the runner as a protocol violation;
//! - the **waiter** waits for the process, combines what the OS and the
//!   reader saw into an [`ExitStatus`], unregisters the guest (its monitors
//!   get `down`) and publishes the status to [`Child::wait`].
//!
//! Runners are spawned (see [`crate::process`]) from one long-lived thread
//! because the parent-death signal each runner asks for fires when the
//! *thread* that spawned it exits: a runner spawned from a short-lived
//! worker thread would die with it.

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use tokio::net::unix::pipe;
use tokio::sync::{oneshot, watch};
use wasmproc_protocol::{HostToRunner, InboxItem, LaunchSpec, RunnerToHost, check_version};

use crate::cache::{Cache, CompileError};
use crate::command::{Child, Command, Stdio};
use crate::connection::{self, FrameReader, FrameWriter};
use crate::process::{Handles, Process};
use crate::relay::{Entry, RegisterError, Registration, Relay, SendError};
use crate::status::{ExitStatus, Limit};

/// Why the host kills a runner; decides the status when the runner could
/// not report one itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KillReason {
    /// `Child::kill`, or a protocol violation (which the reader reports).
    Host,
    /// The guest's `timeout` ran out.
    Timeout(Duration),
    /// The guest broke a limit.
    Limit(Limit),
}

/// The environment variable naming the runner binary, overriding the search.
pub const RUNNER_ENV: &str = "WASMPROC_RUNNER";
/// The runner binary's file name.
pub const RUNNER_NAME: &str = "wasmproc-runner";

/// Frames per write when a guest's mailbox holds many.
const WRITE_BATCH_ITEMS: usize = 512;
/// Payload bytes per write batch (one larger message still goes alone).
const WRITE_BATCH_BYTES: usize = 1024 * 1024;
/// How long the waiter waits for the reader after the process has ended.
const READER_GRACE: Duration = Duration::from_secs(2);

/// Why a guest could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error(transparent)]
    Module(#[from] CompileError),
    #[error(transparent)]
    Name(#[from] RegisterError),
    #[error(
        "cannot find the runner binary `{RUNNER_NAME}` (looked in {searched}); build it with \
         `cargo build` or name it in ${RUNNER_ENV}"
    )]
    RunnerNotFound { searched: String },
    #[error("cannot start the runner {}: {source}", path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Why [`Host::fork_all`] started none of its guests.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct ForkAllError {
    /// The command that failed, by its index.
    pub index: usize,
    pub error: SpawnError,
}

/// A guest registered with the relay whose runner is not started yet.
struct Reserved {
    entry: Arc<Entry>,
    spec: LaunchSpec,
    runner: PathBuf,
}

/// A host: one relay (one namespace of guest ids, names and groups) and the
/// guests started in it.
#[derive(Debug, Clone, Default)]
pub struct Host {
    relay: Relay,
    runner: Option<PathBuf>,
    pool: Option<Arc<Pool>>,
}

/// Runners started ahead of time, waiting for a launch spec: a fork with the
/// default stdio takes one instead of starting a process.
struct Pool {
    size: usize,
    idle: Mutex<Vec<Spawned>>,
    refilling: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Pool {
    fn take(&self) -> Option<Spawned> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// Top the pool up in the background, one runner at a time.
    fn refill(self: &Arc<Self>, runner: PathBuf) {
        use std::sync::atomic::Ordering;
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            loop {
                let missing = pool.size > pool.idle.lock().unwrap_or_else(|e| e.into_inner()).len();
                if !missing {
                    break;
                }
                match spawn_runner(runner.clone(), default_stdio()).await {
                    Ok(spawned) => pool
                        .idle
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(spawned),
                    Err(err) => {
                        tracing::warn!("cannot pre-start a runner: {err}");
                        break;
                    }
                }
            }
            pool.refilling.store(false, Ordering::Release);
        });
    }
}

/// The stdio of a fork that sets none: stdin null, stdout and stderr inherited.
fn default_stdio() -> [Stdio; 3] {
    [Stdio::Null, Stdio::Inherit, Stdio::Inherit]
}

impl Host {
    /// A new host with an empty relay.
    pub fn new() -> Host {
        Host::default()
    }

    /// The host that [`Command::fork`] uses when no other is given.
    pub fn global() -> &'static Host {
        static HOST: OnceLock<Host> = OnceLock::new();
        HOST.get_or_init(Host::new)
    }

    /// A host whose guests run in the runner binary at `path` instead of the
    /// one found by default (for a runner built elsewhere, or a test double).
    pub fn with_runner(path: impl Into<PathBuf>) -> Host {
        Host {
            runner: Some(path.into()),
            ..Host::default()
        }
    }

    /// A host that keeps `size` runners started ahead of time, so that a
    /// fork with the default stdio only sends a launch spec to a waiting
    /// process (the pool refills in the background). Idle pooled runners
    /// cost about one idle guest each.
    pub fn with_pool(size: usize) -> Host {
        Host {
            pool: Some(Arc::new(Pool {
                size,
                idle: Mutex::new(Vec::with_capacity(size)),
                refilling: std::sync::atomic::AtomicBool::new(false),
            })),
            ..Host::default()
        }
    }

    /// A command that forks into this host.
    pub fn command(&self, module: impl AsRef<Path>) -> Command {
        let mut command = Command::new(module);
        command.host(self);
        command
    }

    /// The relay.
    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    /// Send from the parent to any address: a guest by id or name, one
    /// member of a group (round-robin) or all of them.
    ///
    /// # Errors
    ///
    /// When nobody has the address, or a recipient's mailbox is full.
    pub fn send(&self, to: &wasmproc_protocol::Address, payload: Vec<u8>) -> Result<(), SendError> {
        self.relay.send_from_parent_to(to, payload)
    }

    /// `(frames, writes)`: frames the host has written to runners and the
    /// `write` calls that carried them. Fewer writes than frames means
    /// batching is at work.
    pub fn write_stats(&self) -> (u64, u64) {
        self.relay.stats().snapshot()
    }

    /// The launch spec `command` would send its runner (with id 0 and no
    /// name registered), compiling the module if needed.
    ///
    /// # Errors
    ///
    /// When the module is missing, not wasm, or does not compile.
    pub async fn launch_spec(&self, command: &Command) -> Result<LaunchSpec, SpawnError> {
        let artifact = Cache::global().artifact(&command.module).await?;
        Ok(command.launch_spec(
            wasmproc_protocol::GuestId(0),
            command.name.clone(),
            &artifact,
        ))
    }

    /// Start the guest described by `command`.
    pub(crate) async fn fork(&self, command: &mut Command) -> Result<Child, SpawnError> {
        let reserved = self.reserve(command).await?;
        self.start(reserved, command).await
    }

    /// Start guests that may talk to each other from their first
    /// instruction. Every module is compiled and every guest registered (its
    /// name, its group) before any runner starts, so no guest finds another
    /// missing because it happened to start first. Either all start or none
    /// does: on an error, those already started are killed.
    ///
    /// # Errors
    ///
    /// The first command that could not be started, by its index in
    /// `commands`, and why (as [`Command::fork`]).
    pub async fn fork_all(&self, commands: &mut [Command]) -> Result<Vec<Child>, ForkAllError> {
        // Compile the distinct modules side by side; the cache compiles each
        // once however many commands name it.
        let mut compiling = tokio::task::JoinSet::new();
        for (index, command) in commands.iter().enumerate() {
            let module = command.module.clone();
            compiling.spawn(async move { (index, Cache::global().artifact(&module).await) });
        }
        let mut failed: Option<(usize, CompileError)> = None;
        while let Some(done) = compiling.join_next().await {
            if let Ok((index, Err(err))) = done
                && failed.as_ref().is_none_or(|(first, _)| index < *first)
            {
                failed = Some((index, err));
            }
        }
        if let Some((index, err)) = failed {
            return Err(ForkAllError {
                index,
                error: err.into(),
            });
        }

        let mut reserved = Vec::with_capacity(commands.len());
        for (index, command) in commands.iter().enumerate() {
            match self.reserve(command).await {
                Ok(r) => reserved.push(r),
                Err(error) => {
                    self.release(reserved).await;
                    return Err(ForkAllError { index, error });
                }
            }
        }

        let mut children = Vec::with_capacity(commands.len());
        let mut reserved = reserved.into_iter();
        for (index, command) in commands.iter_mut().enumerate() {
            let Some(r) = reserved.next() else { break };
            match self.start(r, command).await {
                Ok(child) => children.push(child),
                Err(error) => {
                    self.release(reserved).await;
                    for child in &children {
                        child.kill();
                    }
                    for child in &children {
                        child.wait().await;
                    }
                    return Err(ForkAllError { index, error });
                }
            }
        }
        Ok(children)
    }

    /// Unregister guests that were reserved but will not start.
    async fn release(&self, reserved: impl IntoIterator<Item = Reserved>) {
        for r in reserved {
            self.relay.unregister(r.entry.id, "failed to start").await;
        }
    }

    /// Compile (or find) the module and register the guest with the relay:
    /// from here on it is reachable, and what is sent to it waits in its
    /// mailbox until its runner starts.
    async fn reserve(&self, command: &Command) -> Result<Reserved, SpawnError> {
        let artifact = Cache::global().artifact(&command.module).await?;
        let runner = match &self.runner {
            Some(path) => path.clone(),
            None => runner_path()?,
        };
        let entry = self.relay.register(Registration {
            name: command.name.clone(),
            group: command.group.clone(),
            max_message_size: command.limits.max_message_size,
            talks_to: command.talks_to.clone(),
            max_cpu: command.limits.max_cpu_ms.map(Duration::from_millis),
        })?;
        let spec = command.launch_spec(entry.id, entry.name.clone(), &artifact);
        Ok(Reserved {
            entry,
            spec,
            runner,
        })
    }

    /// Start the runner of a reserved guest: a pooled one when the command
    /// keeps the default stdio, else a new process.
    async fn start(&self, reserved: Reserved, command: &mut Command) -> Result<Child, SpawnError> {
        let Reserved {
            entry,
            spec,
            runner,
        } = reserved;
        let defaults =
            command.stdin.is_none() && command.stdout.is_none() && command.stderr.is_none();
        let pooled = match &self.pool {
            Some(pool) if defaults => {
                let taken = pool.take();
                pool.refill(runner.clone());
                taken
            }
            _ => None,
        };
        if let Some(spawned) = pooled {
            return Ok(self.watch(entry, spec, spawned, command.timeout));
        }
        let [stdin, stdout, stderr] = default_stdio();
        let stdio = [
            command.stdin.take().unwrap_or(stdin),
            command.stdout.take().unwrap_or(stdout),
            command.stderr.take().unwrap_or(stderr),
        ];
        let spawned = match spawn_runner(runner.clone(), stdio).await {
            Ok(spawned) => spawned,
            Err(source) => {
                self.relay.unregister(entry.id, "failed to start").await;
                return Err(SpawnError::Spawn {
                    path: runner,
                    source,
                });
            }
        };
        Ok(self.watch(entry, spec, spawned, command.timeout))
    }

    fn watch(
        &self,
        entry: Arc<Entry>,
        spec: LaunchSpec,
        spawned: Spawned,
        timeout: Option<Duration>,
    ) -> Child {
        let Spawned {
            process,
            handles,
            to_runner,
            from_runner,
        } = spawned;
        let pid = process.id();
        let (kill_tx, kill_rx) = tokio::sync::mpsc::channel(4);
        let (status_tx, status_rx) = watch::channel(None);

        let writer = FrameWriter::new(to_runner, self.relay.stats().clone());
        tokio::spawn(write_runner(writer, spec, entry.clone()));
        let reader = tokio::spawn(read_runner(
            FrameReader::new(from_runner, &[]),
            entry.clone(),
            self.relay.clone(),
            kill_tx.clone(),
        ));
        tokio::spawn(wait_runner(
            process,
            kill_rx,
            reader,
            entry.clone(),
            self.relay.clone(),
            status_tx,
            timeout,
        ));
        Child::new(entry, pid, kill_tx, status_rx, handles, self.relay.clone())
    }
}

/// Find the runner: `$WASMPROC_RUNNER`, else beside the current executable,
/// else in its parent folder (test binaries live in `target/*/deps`).
fn runner_path() -> Result<PathBuf, SpawnError> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        if let Some(path) = std::env::var_os(RUNNER_ENV) {
            let path = PathBuf::from(path);
            return if path.is_file() {
                Ok(path)
            } else {
                Err(format!("${RUNNER_ENV}={}", path.display()))
            };
        }
        let exe =
            std::env::current_exe().map_err(|err| format!("the current executable ({err})"))?;
        let mut searched = Vec::new();
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join(RUNNER_NAME);
            if candidate.is_file() {
                return Ok(candidate);
            }
            searched.push(dir.display().to_string());
        }
        Err(searched.join(", "))
    });
    found
        .clone()
        .map_err(|searched| SpawnError::RunnerNotFound { searched })
}

struct Spawned {
    process: Process,
    handles: Handles,
    to_runner: pipe::Sender,
    from_runner: pipe::Receiver,
}

struct SpawnRequest {
    runtime: tokio::runtime::Handle,
    runner: PathBuf,
    stdio: [Stdio; 3],
    reply: oneshot::Sender<io::Result<Spawned>>,
}

/// Start a runner process from the spawner thread.
async fn spawn_runner(runner: PathBuf, stdio: [Stdio; 3]) -> io::Result<Spawned> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        // The thread lives as long as the process: see the module docs.
        std::thread::Builder::new()
            .name("wasmproc-spawner".into())
            .spawn(move || {
                for request in rx {
                    let _entered = request.runtime.enter();
                    let result = spawn_now(&request.runner, request.stdio);
                    let _ = request.reply.send(result);
                }
            })
            .map(|_| ())
            .unwrap_or_else(|err| tracing::error!("cannot start the spawner thread: {err}"));
        Mutex::new(tx)
    });
    let (reply, answer) = oneshot::channel();
    let request = SpawnRequest {
        runtime: tokio::runtime::Handle::current(),
        runner,
        stdio,
        reply,
    };
    sender
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(request)
        .map_err(|_| io::Error::other("the spawner thread has stopped"))?;
    answer
        .await
        .map_err(|_| io::Error::other("the spawner thread has stopped"))?
}

/// Start one runner (on the spawner thread, inside a runtime context).
fn spawn_now(runner: &Path, stdio: [Stdio; 3]) -> io::Result<Spawned> {
    let (runner_in, host_out) = connection::cloexec_pipe()?;
    let (host_in, runner_out) = connection::cloexec_pipe()?;
    connection::enlarge_pipe(host_out.as_fd());
    connection::enlarge_pipe(host_in.as_fd());
    let (process, handles) = Process::spawn(runner, stdio, [runner_in, runner_out])?;
    Ok(Spawned {
        process,
        handles,
        to_runner: pipe::Sender::from_owned_fd(host_out)?,
        from_runner: pipe::Receiver::from_owned_fd(host_in)?,
    })
}

/// The writer task: the launch spec, then the mailbox, in batches.
async fn write_runner(mut writer: FrameWriter, spec: LaunchSpec, entry: Arc<Entry>) {
    if let Err(err) = writer.queue(&HostToRunner::Launch(spec)) {
        tracing::error!(guest = %entry.id, "cannot encode the launch spec: {err}");
        return;
    }
    let mut batch = Vec::with_capacity(WRITE_BATCH_ITEMS);
    loop {
        if writer.flush().await.is_err() {
            // The runner has ended; the waiter reports how.
            return;
        }
        if !entry
            .mailbox
            .pop_batch(&mut batch, WRITE_BATCH_ITEMS, WRITE_BATCH_BYTES)
            .await
        {
            return;
        }
        for item in batch.drain(..) {
            let queued = match item {
                // The payload goes from the mailbox to the pipe, uncopied.
                InboxItem::Message {
                    from,
                    from_name,
                    payload,
                } => {
                    let head = HostToRunner::Deliver(InboxItem::Message {
                        from,
                        from_name,
                        payload: Vec::new(),
                    });
                    writer.queue_split(&head, payload)
                }
                other => writer.queue(&HostToRunner::Deliver(other)),
            };
            if let Err(err) = queued {
                tracing::error!(guest = %entry.id, "cannot encode an inbox item: {err}");
            }
        }
    }
}

/// What the reader saw of a runner.
#[derive(Debug, Default)]
struct ReaderOutcome {
    report: Option<wasmproc_protocol::ExitReport>,
    violation: Option<String>,
}

/// The reader task. Returns when the runner's pipe ends or it breaks the protocol.
async fn read_runner(
    mut reader: FrameReader<RunnerToHost>,
    entry: Arc<Entry>,
    relay: Relay,
    kill: tokio::sync::mpsc::Sender<KillReason>,
) -> ReaderOutcome {
    let mut outcome = ReaderOutcome::default();
    let violation = match read_frames(&mut reader, &entry, &relay, &mut outcome).await {
        Ok(()) => return outcome,
        Err(reason) => reason,
    };
    tracing::warn!(guest = %entry.id, "protocol violation: {violation}");
    outcome.violation = Some(violation);
    let _ = kill.send(KillReason::Host).await;
    outcome
}

async fn read_frames(
    reader: &mut FrameReader<RunnerToHost>,
    entry: &Entry,
    relay: &Relay,
    outcome: &mut ReaderOutcome,
) -> Result<(), String> {
    match reader.next().await.map_err(|err| err.to_string())? {
        Some(RunnerToHost::Hello { protocol_version }) => {
            check_version(protocol_version).map_err(|err| err.to_string())?;
        }
        Some(other) => return Err(format!("expected Hello first, got {}", frame_kind(&other))),
        None => return Ok(()),
    }
    match reader.next().await.map_err(|err| err.to_string())? {
        Some(RunnerToHost::Hardened { steps }) => report_hardening(&steps),
        // A runner that failed before hardening reports that failure.
        Some(RunnerToHost::Exit(report)) => outcome.report = Some(report),
        Some(other) => {
            return Err(format!(
                "expected the hardening report after Hello, got {}",
                frame_kind(&other)
            ));
        }
        None => return Ok(()),
    }
    while let Some(frame) = reader.next().await.map_err(|err| err.to_string())? {
        if outcome.report.is_some() {
            return Err(format!("{} after the exit report", frame_kind(&frame)));
        }
        match frame {
            RunnerToHost::Send { to, payload } => {
                if payload.len() as u64 > entry.max_message_size {
                    return Err(format!(
                        "a {}-byte message, over the guest's {}-byte limit",
                        payload.len(),
                        entry.max_message_size
                    ));
                }
                let routed = relay.route(entry, to, payload);
                for notice in routed.notices {
                    let _ = entry.mailbox.push_notice(notice).await;
                }
                // A full mailbox holds this sender (and only it) a moment.
                for pending in routed.waiting {
                    if let Some(notice) = relay.deliver_pending(entry, pending).await {
                        let _ = entry.mailbox.push_notice(notice).await;
                    }
                }
            }
            RunnerToHost::Monitor { name } => {
                if let Some(down) = relay.monitor(entry.id, &name) {
                    let _ = entry.mailbox.push_notice(down).await;
                }
            }
            RunnerToHost::Exit(report) => outcome.report = Some(report),
            RunnerToHost::Hello { .. } => return Err("a second Hello".to_owned()),
            RunnerToHost::Hardened { .. } => return Err("a second hardening report".to_owned()),
        }
    }
    Ok(())
}

fn frame_kind(frame: &RunnerToHost) -> &'static str {
    match frame {
        RunnerToHost::Hello { .. } => "Hello",
        RunnerToHost::Send { .. } => "Send",
        RunnerToHost::Monitor { .. } => "Monitor",
        RunnerToHost::Exit(_) => "Exit",
        RunnerToHost::Hardened { .. } => "Hardened",
    }
}

/// Say once per process which hardening steps this kernel cannot do.
fn report_hardening(steps: &[wasmproc_protocol::HardeningStep]) {
    static REPORTED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    for step in steps.iter().filter(|s| !s.applied) {
        let mut reported = REPORTED.lock().unwrap_or_else(|e| e.into_inner());
        if !reported.contains(&step.name) {
            reported.push(step.name.clone());
            tracing::warn!(
                "runner hardening step `{}` is not in force: {}",
                step.name,
                step.detail
            );
        }
    }
}

/// The waiter task.
async fn wait_runner(
    mut process: Process,
    mut kill: tokio::sync::mpsc::Receiver<KillReason>,
    reader: tokio::task::JoinHandle<ReaderOutcome>,
    entry: Arc<Entry>,
    relay: Relay,
    status_tx: watch::Sender<Option<ExitStatus>>,
    timeout: Option<Duration>,
) {
    let mut killed: Option<KillReason> = None;
    let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::MAX));
    tokio::pin!(deadline);
    let os_status = loop {
        let reason = tokio::select! {
            status = process.wait() => break status,
            Some(reason) = kill.recv() => reason,
            () = &mut deadline, if timeout.is_some() && killed.is_none() => {
                KillReason::Timeout(timeout.unwrap_or_default())
            }
        };
        // The first reason is the one reported.
        if killed.is_none() {
            killed = Some(reason);
            process.kill();
        }
    };
    // Nothing can reach the guest any more. Closing its mailbox also frees a
    // reader waiting to queue a notice for it, so it can read the runner's
    // last frames (its exit report among them).
    entry.mailbox.close();
    let outcome = match tokio::time::timeout(READER_GRACE, reader).await {
        Ok(Ok(outcome)) => outcome,
        _ => ReaderOutcome::default(),
    };
    let cpu_limit = entry.max_cpu;
    let status = combine(os_status, outcome, killed, cpu_limit);
    tracing::debug!(guest = %entry.id, "ended: {status}");
    relay.unregister(entry.id, &status.to_string()).await;
    let _ = status_tx.send(Some(status));
}

fn combine(
    os_status: io::Result<std::process::ExitStatus>,
    outcome: ReaderOutcome,
    killed: Option<KillReason>,
    cpu_limit: Option<Duration>,
) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    if let Some(reason) = outcome.violation {
        return ExitStatus::ProtocolViolation { reason };
    }
    if let Some(report) = outcome.report {
        return ExitStatus::from_report(report);
    }
    match os_status {
        Ok(status) => match status.signal() {
            Some(libc::SIGXCPU) if killed.is_none() => ExitStatus::LimitExceeded(Limit::Cpu {
                limit: cpu_limit.unwrap_or_default(),
            }),
            Some(signal) => match killed {
                Some(KillReason::Timeout(after)) => ExitStatus::TimedOut { after },
                Some(KillReason::Limit(limit)) => ExitStatus::LimitExceeded(limit),
                Some(KillReason::Host) => ExitStatus::Killed {
                    signal,
                    by_host: true,
                },
                None => ExitStatus::Killed {
                    signal,
                    by_host: false,
                },
            },
            None => ExitStatus::Failed {
                reason: format!(
                    "the runner exited with code {} before reporting how the guest ended",
                    status.code().unwrap_or(-1)
                ),
            },
        },
        Err(err) => ExitStatus::Failed {
            reason: format!("cannot wait for the runner: {err}"),
        },
    }
}
