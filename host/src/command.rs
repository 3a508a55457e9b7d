//! The builder, shaped like `tokio::process::Command`, with Node's `fork`
//! messaging on top. `Command::build` turns it into the host's `Spec`,
//! which is all the host consumes (the handle it returns is in
//! `crate::child`). The ways to start a command are here too, so the host
//! never needs to know the builder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use wasmproc_manifest::GuestLimits;
use wasmproc_protocol::{Limits, Preopen, Walls};

use crate::child::Child;
use crate::host::{ForkAllError, Host, SpawnError, Spec};
use crate::os::Stdio;
use crate::status::ExitStatus;

/// A guest to start: the module, its arguments, environment, folders,
/// stdio and limits.
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// use wasmproc::Command;
///
/// let child = Command::new("guests/target/wasm32-wasip2/release/echo.wasm")
///     .name("echo")
///     .fork()
///     .await?;
/// child.send(b"hello".to_vec())?;
/// let reply = child.recv().await;
/// child.kill();
/// # let _ = reply; Ok(()) }
/// ```
#[derive(Debug)]
pub struct Command {
    module: PathBuf,
    argv0: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    name: Option<String>,
    group: Option<String>,
    preopens: Vec<Preopen>,
    stdin: Option<Stdio>,
    stdout: Option<Stdio>,
    stderr: Option<Stdio>,
    limits: Limits,
    timeout: Option<Duration>,
    max_output: Option<u64>,
    talks_to: Option<Vec<String>>,
    probe: Option<Walls>,
    standby: bool,
    host: Option<Host>,
}

/// What [`Command::output`] collected (Node's `execFile`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Command {
    /// A command for the module (a `.wasm` core module or component) at `module`.
    pub fn new(module: impl AsRef<Path>) -> Command {
        Command {
            module: module.as_ref().to_owned(),
            argv0: None,
            args: Vec::new(),
            env: Vec::new(),
            name: None,
            group: None,
            preopens: Vec::new(),
            stdin: None,
            stdout: None,
            stderr: None,
            limits: Limits::default(),
            timeout: None,
            max_output: None,
            talks_to: None,
            probe: None,
            standby: false,
            host: None,
        }
    }

    /// Add an argument.
    pub fn arg(&mut self, arg: impl Into<String>) -> &mut Command {
        self.args.push(arg.into());
        self
    }

    /// Add arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Command
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// What the guest sees as `argv[0]` (default: the module's file name).
    pub fn arg0(&mut self, arg0: impl Into<String>) -> &mut Command {
        self.argv0 = Some(arg0.into());
        self
    }

    /// Set an environment variable. The guest sees only what is set here.
    pub fn env(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Command {
        let key = key.into();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
        self
    }

    /// Set several environment variables.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Command
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        for (k, v) in vars {
            self.env(k, v);
        }
        self
    }

    /// Remove every environment variable set so far.
    pub fn env_clear(&mut self) -> &mut Command {
        self.env.clear();
        self
    }

    /// Give the guest a unique name other guests can send to.
    pub fn name(&mut self, name: impl Into<String>) -> &mut Command {
        self.name = Some(name.into());
        self
    }

    /// Make the guest a member of `group` (round-robin sends, broadcasts).
    pub fn group(&mut self, group: impl Into<String>) -> &mut Command {
        self.group = Some(group.into());
        self
    }

    /// Let the guest send only to these names and groups (and its parent);
    /// the relay refuses anything else with `not allowed`.
    pub fn talks_to<I, S>(&mut self, targets: I) -> &mut Command
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.talks_to = Some(targets.into_iter().map(Into::into).collect());
        self
    }

    /// Let the guest see the host folder `host_dir` as `guest_dir`.
    pub fn preopen(
        &mut self,
        host_dir: impl AsRef<Path>,
        guest_dir: impl Into<String>,
        read_only: bool,
    ) -> &mut Command {
        self.preopens.push(Preopen {
            host_path: host_dir.as_ref().to_string_lossy().into_owned(),
            guest_path: guest_dir.into(),
            read_only,
        });
        self
    }

    /// The guest's stdin (default for `fork`: null).
    pub fn stdin(&mut self, stdio: impl Into<Stdio>) -> &mut Command {
        self.stdin = Some(stdio.into());
        self
    }

    /// The guest's stdout (default for `fork`: inherit).
    pub fn stdout(&mut self, stdio: impl Into<Stdio>) -> &mut Command {
        self.stdout = Some(stdio.into());
        self
    }

    /// The guest's stderr (default for `fork`: inherit).
    pub fn stderr(&mut self, stdio: impl Into<Stdio>) -> &mut Command {
        self.stderr = Some(stdio.into());
        self
    }

    /// The largest message the guest may send or receive, in bytes.
    pub fn max_message_size(&mut self, bytes: u64) -> &mut Command {
        self.limits.max_message_size =
            bytes.min(wasmproc_protocol::framing::MAX_PAYLOAD_LEN as u64);
        self
    }

    /// Kill the guest if it runs longer than `timeout`; its status is then
    /// [`ExitStatus::TimedOut`].
    pub fn timeout(&mut self, timeout: Duration) -> &mut Command {
        self.timeout = Some(timeout);
        self
    }

    /// For [`output`](Self::output): stop the guest once it writes more than
    /// `bytes` to stdout or to stderr (Node's `maxBuffer`). The output up to
    /// the limit is kept; the status is [`ExitStatus::LimitExceeded`].
    pub fn max_output(&mut self, bytes: u64) -> &mut Command {
        self.max_output = Some(bytes);
        self
    }

    /// The most linear memory the guest may use (default 512 MiB). Growing
    /// past it ends the guest with [`Limit::Memory`](crate::Limit::Memory).
    pub fn max_memory(&mut self, bytes: u64) -> &mut Command {
        self.limits.max_memory = bytes;
        self
    }

    /// The CPU time the guest's process may use (whole seconds, rounded
    /// up; default: no limit). The kernel stops it past that, and the status
    /// is [`Limit::Cpu`](crate::Limit::Cpu).
    pub fn max_cpu(&mut self, limit: Duration) -> &mut Command {
        self.limits.max_cpu_ms = Some(u64::try_from(limit.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// The longest a call the guest makes may wait for its reply (default
    /// 60 s): a call asking for longer waits this long. At least 1 ms.
    pub fn max_call_timeout(&mut self, limit: Duration) -> &mut Command {
        self.limits.max_call_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX).max(1);
        self
    }

    /// How many items the guest's runner holds before the host's mailbox
    /// takes over (default 65,536).
    pub fn inbox_size(&mut self, items: u32) -> &mut Command {
        self.limits.inbox_items = items.max(1);
        self
    }

    /// Apply a guest's limits from a manifest table or CLI flags: each one
    /// that is set replaces this command's.
    pub fn limits(&mut self, limits: &GuestLimits) -> &mut Command {
        if let Some(timeout) = limits.timeout {
            self.timeout(timeout);
        }
        if let Some(bytes) = limits.max_memory {
            self.max_memory(bytes);
        }
        if let Some(limit) = limits.max_cpu {
            self.max_cpu(limit);
        }
        if let Some(bytes) = limits.max_message_size {
            self.max_message_size(bytes);
        }
        if let Some(items) = limits.inbox_size {
            self.inbox_size(items);
        }
        if let Some(limit) = limits.max_call_timeout {
            self.max_call_timeout(limit);
        }
        self
    }

    /// Fork into `host` instead of [`Host::global`].
    pub fn host(&mut self, host: &Host) -> &mut Command {
        self.host = Some(host.clone());
        self
    }

    /// The module this command runs.
    pub fn get_module(&self) -> &Path {
        &self.module
    }

    /// Test mode: the runner hardens itself, then tries forbidden
    /// operations natively and prints each result on stdout instead of
    /// running the guest (see [`crate::testing`]).
    pub(crate) fn probe_sandbox(&mut self, walls: Walls) -> &mut Command {
        self.probe = Some(walls);
        self
    }

    /// Start as a standby for the running guest of this command's name: it
    /// takes over the name only in a swap ([`Host::swap`]).
    pub fn standby(&mut self) -> &mut Command {
        self.standby = true;
        self
    }

    /// Whether stdin, stdout and stderr are all left to inherit.
    pub(crate) fn inherits_stdio(&self) -> bool {
        [&self.stdin, &self.stdout, &self.stderr]
            .iter()
            .all(|s| matches!(s, None | Some(Stdio::Inherit)))
    }

    /// The output limit set with [`max_output`](Self::max_output).
    pub(crate) fn output_limit(&self) -> Option<u64> {
        self.max_output
    }

    /// What the host needs to start this guest. The stdio set so far moves
    /// into the spec (descriptors are not copied), so a command started
    /// twice gets the defaults the second time, as `std::process` does.
    pub(crate) fn build(&mut self) -> Spec {
        let arg0 = self
            .argv0
            .clone()
            .unwrap_or_else(|| default_arg0(&self.module));
        Spec {
            module: self.module.clone(),
            argv: std::iter::once(arg0)
                .chain(self.args.iter().cloned())
                .collect(),
            env: self.env.clone(),
            name: self.name.clone(),
            group: self.group.clone(),
            preopens: self.preopens.clone(),
            stdio: [self.stdin.take(), self.stdout.take(), self.stderr.take()],
            limits: self.limits.clone(),
            timeout: self.timeout,
            talks_to: self.talks_to.clone(),
            probe: self.probe,
            standby: self.standby,
        }
    }

    fn host_or_global(&self) -> Host {
        self.host.clone().unwrap_or_else(|| Host::global().clone())
    }

    /// Start the guest in its own runner process, with messaging (Node's
    /// `fork`). Returns as soon as the runner is started; messages sent
    /// meanwhile wait in the guest's mailbox. Unless set, stdin is null and
    /// stdout and stderr are inherited.
    ///
    /// # Errors
    ///
    /// When the module is missing or not wasm, does not compile, the name is
    /// taken, or the runner cannot be started.
    pub async fn fork(&mut self) -> Result<Child, SpawnError> {
        self.host_or_global().fork(self.build()).await
    }

    /// Start the guest (Node's `spawn`). Unless set, stdin, stdout and
    /// stderr are all inherited. The guest may still use messaging.
    ///
    /// # Errors
    ///
    /// As [`fork`](Self::fork).
    pub async fn spawn(&mut self) -> Result<Child, SpawnError> {
        self.stdin.get_or_insert(Stdio::Inherit);
        self.fork().await
    }

    /// Run the guest to the end and collect its stdout and stderr (Node's
    /// `execFile`). Unless set, stdin is null and both outputs are piped.
    ///
    /// # Errors
    ///
    /// As [`fork`](Self::fork).
    pub async fn output(&mut self) -> Result<Output, SpawnError> {
        self.stdout.get_or_insert(Stdio::Piped);
        self.stderr.get_or_insert(Stdio::Piped);
        let max = self.max_output.unwrap_or(u64::MAX);
        let mut child = self.fork().await?;
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let (stdout, stderr) = tokio::join!(child.collect(out, max), child.collect(err, max));
        Ok(Output {
            status: child.wait().await,
            stdout,
            stderr,
        })
    }
}

impl Host {
    /// A command that forks into this host.
    pub fn command(&self, module: impl AsRef<Path>) -> Command {
        let mut command = Command::new(module);
        command.host(self);
        command
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
        let specs = commands.iter_mut().map(Command::build).collect();
        self.fork_all_specs(specs).await
    }
}

/// `argv[0]` when none is set: the module's file name.
pub(crate) fn default_arg0(module: &Path) -> String {
    module
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
