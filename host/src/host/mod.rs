//! The host: one relay and the guests started in it.
//!
//! Forking a guest: compile (or find) its artifact in the [`crate::cache`],
//! register it with the [`crate::relay`] (*reserve*), take a runner from the
//! [`pool`] or start one from the [`spawner`] thread (then while the module
//! is looked up: a runner needs its launch spec only once it is up), and
//! hand both to a [`session`], which runs the runner's writer, reader and
//! waiter tasks and returns the [`Child`] handle.
//!
//! - [`pool`]: runners started ahead of time.
//! - [`spawner`]: the runner binary and the long-lived spawner thread.
//! - [`session`]: one runner's session, from launch spec to status.
//! - [`spec`]: what the host consumes: a built command.

mod delivered;
mod pool;
mod session;
mod spawner;
mod spec;

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wasmproc_protocol::{Address, CallError, LaunchSpec, ReplyError, RequestId};

use crate::cache::{Cache, CompileError};
use crate::child::Child;
use crate::relay::{Entry, RegisterError, Registration, Relay, SendError};
use crate::status::ExitStatus;
use pool::Pool;
use session::Session;
pub use spawner::{RUNNER_ENV, RUNNER_NAME};
use spawner::{runner_path, spawn_runner};
pub(crate) use spec::Spec;

/// Why a guest could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error(transparent)]
    Module(#[from] CompileError),
    #[error(transparent)]
    Name(#[from] RegisterError),
    #[error(
        "cannot find the runner binary `{RUNNER_NAME}` (looked in {searched}); install it with \
         `cargo install --path host` (from a wasmproc checkout) or name it in ${RUNNER_ENV}"
    )]
    RunnerNotFound { searched: String },
    #[error("cannot give the guest a terminal of its own: {0}")]
    Terminal(#[source] io::Error),
    #[error(
        "cannot start another runner: this process has used up its {limit} open files (a guest \
         holds 4, and 2 more for a piped stdout and stderr): raise the limit with `ulimit -n`"
    )]
    OutOfFiles { limit: u64 },
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

/// What a swap did with the messages sent to the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swapped {
    /// Held by the host for the old instance, moved to the new one in order.
    pub moved: u64,
    /// Delivered to the old instance, and taken by it while it drained.
    pub drained: u64,
    /// Delivered to the old instance and not taken before it ended: back
    /// to their senders as `recipient exited`.
    pub returned: u64,
    /// How the old instance ended.
    pub old_status: ExitStatus,
}

/// Why a swap did not happen; the old instance runs on.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("the standby must have the running guest's name (`{old}`, not `{new}`)")]
    Names { old: String, new: String },
    #[error("the new instance ended before it was ready: {0}")]
    StandbyEnded(ExitStatus),
    #[error("the new instance was not ready (waiting for its inbox) within {0:?}")]
    NotReady(Duration),
}

/// A guest registered with the relay whose runner is not started yet.
struct Reserved {
    entry: Arc<Entry>,
    launch: LaunchSpec,
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

impl Host {
    /// A new host with an empty relay.
    pub fn new() -> Host {
        Host::default()
    }

    /// The host that [`Command::fork`](crate::Command::fork) uses when no
    /// other is given.
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
    /// process (the pool refills in the background). Each runner started
    /// for the pool maps and links the artifact the pool launched last while
    /// it waits, so a fork of the same module only instantiates it. Idle
    /// pooled runners cost about one idle guest each.
    pub fn with_pool(size: usize) -> Host {
        Host {
            pool: Some(Arc::new(Pool::new(size))),
            ..Host::default()
        }
    }

    /// The pids of the pooled runners waiting for a launch (none without a pool).
    pub(crate) fn pooled_pids(&self) -> Vec<u32> {
        self.pool
            .as_ref()
            .map(|p| p.idle_pids())
            .unwrap_or_default()
    }

    /// The relay, for the crate's own layers (apps, test hooks).
    pub(crate) fn relay(&self) -> &Relay {
        &self.relay
    }

    /// Send from the parent to any address: a guest by id or name, one
    /// member of a group (round-robin) or all of them.
    ///
    /// # Errors
    ///
    /// When nobody has the address, or a recipient's mailbox is full.
    pub fn send(&self, to: &Address, payload: Vec<u8>) -> Result<(), SendError> {
        self.relay.send_from_parent_to(to, payload)
    }

    /// Call a guest by any one-guest address (id, name, or a group's next
    /// member) and wait for its reply, at most `timeout`.
    ///
    /// # Errors
    ///
    /// Why no reply came; a broadcast address is [`CallError::NotAllowed`].
    pub async fn call(
        &self,
        to: &Address,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let reply = self.relay.call_from_parent(to, timeout, payload).await?;
        Ok(Vec::from(reply))
    }

    /// Answer a call a guest of this host made to its parent.
    ///
    /// # Errors
    ///
    /// As [`Child::reply`].
    pub fn reply(&self, request: RequestId, payload: Vec<u8>) -> Result<(), ReplyError> {
        self.relay.reply_from_parent(request, payload)
    }

    /// Replace the running guest `old` with `standby`, started under the same
    /// name with [`Command::standby`](crate::Command): wait until the
    /// standby is ready (its first wait on its inbox) within `ready_within`,
    /// switch the name to it atomically (what the host holds for `old` moves
    /// to it, in order; sends from then on go to it), then let `old` finish
    /// what it was delivered within `drain` (it gets `shutdown`, then a
    /// kill). Its replies to calls still reach their callers. Nothing is
    /// lost: every message is taken by one of the two, or returned.
    ///
    /// # Errors
    ///
    /// When the standby ends or is not ready in time (it is stopped, and
    /// `old` runs on: a rollback), or the names differ.
    pub async fn swap(
        &self,
        old: &Child,
        standby: &Child,
        ready_within: Duration,
        drain: Duration,
    ) -> Result<Swapped, SwapError> {
        if old.name().is_none() || old.name() != standby.name() {
            return Err(SwapError::Names {
                old: old.name().unwrap_or_default().to_owned(),
                new: standby.name().unwrap_or_default().to_owned(),
            });
        }
        tokio::select! {
            () = standby.ready() => {}
            status = standby.wait() => return Err(SwapError::StandbyEnded(status)),
            () = tokio::time::sleep(ready_within) => {
                standby.kill();
                standby.wait().await;
                return Err(SwapError::NotReady(ready_within));
            }
        }
        let moved = self.relay.switch(old.entry(), standby.entry()) as u64;
        let counters = &old.entry().counters;
        let outstanding = counters
            .outstanding
            .load(std::sync::atomic::Ordering::Relaxed);
        let old_status = old.stop(drain).await;
        let returned = counters.returned.load(std::sync::atomic::Ordering::Relaxed);
        Ok(Swapped {
            moved,
            drained: outstanding.saturating_sub(returned),
            returned,
            old_status,
        })
    }

    /// Replies that reached nobody because their call had ended first (the
    /// caller timed out, gave up or exited).
    pub fn late_replies(&self) -> u64 {
        self.relay.late_replies()
    }

    /// Notices (undeliverable, down, shutdown) that were dropped because
    /// their guest's mailbox had no room: the host never waits on a guest
    /// that does not read, and counts what that cost instead.
    pub fn dropped_notices(&self) -> u64 {
        self.relay.dropped_notices()
    }

    /// The launch spec a guest built as `spec` would send its runner (with id 0 and no
    /// name registered), compiling the module if needed.
    pub(crate) async fn launch_spec(&self, spec: &Spec) -> Result<LaunchSpec, SpawnError> {
        let artifact = Cache::global().artifact(&spec.module).await?;
        Ok(spec.launch_spec(wasmproc_protocol::GuestId(0), &artifact))
    }

    /// Start the guest described by `spec`.
    ///
    /// Without a pooled runner to take, the runner starts while the module
    /// is looked up (or compiled): it needs the launch spec only once it is
    /// up, and starting a process is the longer of the two. A runner started
    /// for a module that then fails is killed and reaped.
    pub(crate) async fn fork(&self, mut spec: Spec) -> Result<Child, SpawnError> {
        let runner = match self.runner() {
            Ok(runner) if self.pool.is_none() || !spec.default_stdio() => runner,
            // A pooled runner, or the error a missing module comes first.
            _ => {
                let reserved = self.reserve(&spec).await?;
                return self.start(reserved, spec).await;
            }
        };
        let stdio = spec.take_stdio();
        let (reserved, spawned) =
            tokio::join!(self.reserve(&spec), spawn_runner(runner.clone(), stdio));
        let reserved = reserved?;
        match spawned {
            Ok(spawned) => Ok(self.session(reserved, &spec).start(spawned)),
            Err(source) => Err(self.failed_to_spawn(reserved, source).await),
        }
    }

    /// Start the guests built as `specs` together (see
    /// [`Host::fork_all`](crate::Host::fork_all)).
    pub(crate) async fn fork_all_specs(
        &self,
        specs: Vec<Spec>,
    ) -> Result<Vec<Child>, ForkAllError> {
        // Compile the distinct modules side by side; the cache compiles each
        // once however many commands name it.
        let mut compiling = tokio::task::JoinSet::new();
        for (index, spec) in specs.iter().enumerate() {
            let module = spec.module.clone();
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

        let mut reserved = Vec::with_capacity(specs.len());
        for (index, spec) in specs.iter().enumerate() {
            match self.reserve(spec).await {
                Ok(r) => reserved.push(r),
                Err(error) => {
                    self.release(reserved).await;
                    return Err(ForkAllError { index, error });
                }
            }
        }

        let mut children = Vec::with_capacity(specs.len());
        let mut reserved = reserved.into_iter();
        for (index, spec) in specs.into_iter().enumerate() {
            let Some(r) = reserved.next() else { break };
            match self.start(r, spec).await {
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
    async fn reserve(&self, spec: &Spec) -> Result<Reserved, SpawnError> {
        let artifact = Cache::global().artifact(&spec.module).await?;
        let runner = self.runner()?;
        let entry = self.relay.register(Registration {
            name: spec.name.clone(),
            group: spec.group.clone(),
            max_message_size: spec.limits.max_message_size,
            talks_to: spec.talks_to.clone(),
            max_cpu: spec.limits.max_cpu_ms.map(Duration::from_millis),
            standby: spec.standby,
            remote: None,
        })?;
        let launch = spec.launch_spec(entry.id, &artifact);
        Ok(Reserved {
            entry,
            launch,
            runner,
        })
    }

    /// The runner binary this host starts.
    fn runner(&self) -> Result<PathBuf, SpawnError> {
        match &self.runner {
            Some(path) => Ok(path.clone()),
            None => runner_path(),
        }
    }

    /// The session of a reserved guest, to start on a runner.
    fn session(&self, reserved: Reserved, spec: &Spec) -> Session {
        Session {
            entry: reserved.entry,
            relay: self.relay.clone(),
            spec: reserved.launch,
            timeout: spec.timeout,
        }
    }

    /// Start the runner of a reserved guest: a pooled one when the command
    /// keeps the default stdio, else a new process.
    async fn start(&self, reserved: Reserved, mut spec: Spec) -> Result<Child, SpawnError> {
        let pooled = match &self.pool {
            Some(pool) if spec.default_stdio() => {
                let taken = pool.take(&reserved.launch);
                pool.refill(reserved.runner.clone());
                taken
            }
            _ => None,
        };
        if let Some(spawned) = pooled {
            return Ok(self.session(reserved, &spec).start(spawned));
        }
        match spawn_runner(reserved.runner.clone(), spec.take_stdio()).await {
            Ok(spawned) => Ok(self.session(reserved, &spec).start(spawned)),
            Err(source) => Err(self.failed_to_spawn(reserved, source).await),
        }
    }

    /// Unregister a guest whose runner could not be started, and say why.
    async fn failed_to_spawn(&self, reserved: Reserved, source: io::Error) -> SpawnError {
        self.relay
            .unregister(reserved.entry.id, "failed to start")
            .await;
        match source.raw_os_error() {
            Some(libc::EMFILE) => SpawnError::OutOfFiles {
                limit: crate::os::limits::open_files_limit(),
            },
            _ => SpawnError::Spawn {
                path: reserved.runner,
                source,
            },
        }
    }
}
