//! The builder and the handle, shaped like `tokio::process::Command` and
//! `Child`, with Node's `fork` messaging on top.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;
use wasmproc_protocol::{GuestId, InboxItem, Limits, Preopen};

use crate::process::{ChildStderr, ChildStdin, ChildStdout, Handles};
use crate::relay::{Entry, Relay, SendError};
use crate::status::{ExitStatus, Limit};
use crate::supervisor::{Host, KillReason, SpawnError};

/// Where a guest's stdin, stdout or stderr goes.
#[derive(Debug)]
pub enum Stdio {
    /// The host's own.
    Inherit,
    /// Nothing: reads see end of file, writes vanish.
    Null,
    /// A pipe to the host: the handle is on [`Child::stdin`] and friends.
    Piped,
    /// An open file.
    File(std::fs::File),
    /// Any open descriptor, such as the read end of another guest's stdout
    /// (this is how a pipeline connects its stages without the host copying).
    Fd(OwnedFd),
}

impl Stdio {
    pub fn inherit() -> Stdio {
        Stdio::Inherit
    }
    pub fn null() -> Stdio {
        Stdio::Null
    }
    pub fn piped() -> Stdio {
        Stdio::Piped
    }
}

impl From<OwnedFd> for Stdio {
    fn from(fd: OwnedFd) -> Self {
        Stdio::Fd(fd)
    }
}

impl From<std::fs::File> for Stdio {
    fn from(file: std::fs::File) -> Self {
        Stdio::File(file)
    }
}

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
    pub(crate) module: PathBuf,
    pub(crate) argv0: Option<String>,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) name: Option<String>,
    pub(crate) group: Option<String>,
    pub(crate) preopens: Vec<Preopen>,
    pub(crate) stdin: Option<Stdio>,
    pub(crate) stdout: Option<Stdio>,
    pub(crate) stderr: Option<Stdio>,
    pub(crate) limits: Limits,
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_output: Option<u64>,
    pub(crate) talks_to: Option<Vec<String>>,
    pub(crate) probe: bool,
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
            probe: false,
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
    /// past it ends the guest with [`Limit::Memory`].
    pub fn max_memory(&mut self, bytes: u64) -> &mut Command {
        self.limits.max_memory = bytes;
        self
    }

    /// The CPU time the guest's process may use (whole seconds, rounded
    /// up; default: no limit). The kernel stops it past that, and the status
    /// is [`Limit::Cpu`].
    pub fn max_cpu(&mut self, limit: Duration) -> &mut Command {
        self.limits.max_cpu_ms = Some(u64::try_from(limit.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// How many items the guest's runner holds before the host's mailbox
    /// takes over (default 65,536).
    pub fn inbox_size(&mut self, items: u32) -> &mut Command {
        self.limits.inbox_items = items.max(1);
        self
    }

    /// Test mode: the runner hardens itself, then tries forbidden operations
    /// natively and prints each result on stdout instead of running the
    /// guest. For checking the second wall from outside.
    #[doc(hidden)]
    pub fn probe_sandbox(&mut self) -> &mut Command {
        self.probe = true;
        self
    }

    /// Fork into `host` instead of [`Host::global`].
    pub fn host(&mut self, host: &Host) -> &mut Command {
        self.host = Some(host.clone());
        self
    }

    pub(crate) fn launch_spec(
        &self,
        id: GuestId,
        name: Option<String>,
        artifact: &crate::cache::Artifact,
    ) -> wasmproc_protocol::LaunchSpec {
        wasmproc_protocol::LaunchSpec {
            protocol_version: wasmproc_protocol::PROTOCOL_VERSION,
            id,
            name,
            artifact: artifact.path.to_string_lossy().into_owned(),
            kind: artifact.kind,
            args: self.argv(),
            env: self.env.clone(),
            preopens: self.preopens.clone(),
            limits: self.limits.clone(),
            probe: self.probe,
        }
    }

    pub(crate) fn argv(&self) -> Vec<String> {
        let arg0 = self.argv0.clone().unwrap_or_else(|| {
            self.module
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        std::iter::once(arg0)
            .chain(self.args.iter().cloned())
            .collect()
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
        let host = self.host.clone().unwrap_or_else(|| Host::global().clone());
        host.fork(self).await
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

    /// Run the guest to the end with stdio inherited and return its status.
    ///
    /// # Errors
    ///
    /// As [`fork`](Self::fork).
    pub async fn status(&mut self) -> Result<ExitStatus, SpawnError> {
        let child = self.spawn().await?;
        Ok(child.wait().await)
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
        let (stdout, stderr) = tokio::join!(
            collect(out, max, &child.kill),
            collect(err, max, &child.kill)
        );
        Ok(Output {
            status: child.wait().await,
            stdout,
            stderr,
        })
    }
}

/// A running guest.
#[derive(Debug)]
pub struct Child {
    /// The guest's stdin, if it was [`Stdio::Piped`].
    pub stdin: Option<ChildStdin>,
    /// The guest's stdout, if it was [`Stdio::Piped`].
    pub stdout: Option<ChildStdout>,
    /// The guest's stderr, if it was [`Stdio::Piped`].
    pub stderr: Option<ChildStderr>,
    entry: Arc<Entry>,
    pid: u32,
    kill: tokio::sync::mpsc::Sender<KillReason>,
    status: watch::Receiver<Option<ExitStatus>>,
    relay: Relay,
}

/// Read a guest's output stream to its end, or up to `max` bytes, past which
/// the guest is stopped (the stream is then drained, so the guest never
/// blocks on a full pipe before it dies).
pub(crate) async fn collect<R: AsyncRead + Unpin>(
    stream: Option<R>,
    max: u64,
    kill: &tokio::sync::mpsc::Sender<KillReason>,
) -> Vec<u8> {
    let Some(mut stream) = stream else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut over = false;
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if over {
            continue;
        }
        let room = max.saturating_sub(kept.len() as u64) as usize;
        kept.extend_from_slice(&chunk[..n.min(room)]);
        if n > room {
            over = true;
            let _ = kill.try_send(KillReason::Limit(Limit::Output { bytes: max }));
        }
    }
    kept
}

impl Child {
    pub(crate) fn new(
        entry: Arc<Entry>,
        pid: u32,
        kill: tokio::sync::mpsc::Sender<KillReason>,
        status: watch::Receiver<Option<ExitStatus>>,
        Handles {
            stdin,
            stdout,
            stderr,
        }: Handles,
        relay: Relay,
    ) -> Child {
        Child {
            stdin,
            stdout,
            stderr,
            entry,
            pid,
            kill,
            status,
            relay,
        }
    }

    /// The id the host gave the guest.
    pub fn id(&self) -> GuestId {
        self.entry.id
    }

    /// The guest's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.entry.name.as_deref()
    }

    /// The runner's OS process id (for diagnostics: the OS reuses pids, so
    /// address guests by [`id`](Self::id)).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Send bytes to the guest (Node's `child.send`).
    ///
    /// # Errors
    ///
    /// When the guest has exited, its mailbox is full, or the message is
    /// over its size limit.
    pub fn send(&self, payload: impl Into<Vec<u8>>) -> Result<(), SendError> {
        self.relay.send_from_parent(&self.entry, payload.into())
    }

    /// Send a value encoded with postcard.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn send_value<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), SendError> {
        // Encoding serde types into a Vec cannot fail for postcard's data model.
        self.send(postcard::to_allocvec(value).unwrap_or_default())
    }

    /// The next item the guest sent to its parent (messages, and notices
    /// about messages the parent sent that could not be delivered). `None`
    /// once the guest has ended and everything it sent has been read.
    pub async fn recv(&self) -> Option<InboxItem> {
        self.entry.parent_inbox.pop().await
    }

    /// The next message's payload decoded as a `T`, skipping nothing: any
    /// other item is an error.
    ///
    /// # Errors
    ///
    /// When the guest ended, the next item is not a message, or it does not decode.
    pub async fn recv_value<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        match self.recv().await {
            Some(InboxItem::Message { payload, .. }) => Ok(postcard::from_bytes(&payload)?),
            Some(other) => {
                anyhow::bail!("expected a message from guest {}, got {other:?}", self.id())
            }
            None => anyhow::bail!(
                "guest {} ended without sending a message: {}",
                self.id(),
                self.wait().await
            ),
        }
    }

    /// The next item, if one is waiting.
    pub fn try_recv(&self) -> Option<InboxItem> {
        self.entry.parent_inbox.try_pop()
    }

    pub(crate) fn killer(&self) -> tokio::sync::mpsc::Sender<KillReason> {
        self.kill.clone()
    }

    /// Ask the guest to finish: a `shutdown` item arrives in its inbox.
    pub async fn shutdown(&self) {
        let _ = self.entry.mailbox.push_notice(InboxItem::Shutdown).await;
    }

    /// Kill the guest's runner (SIGKILL). Its status says `killed by the host`.
    pub fn kill(&self) {
        let _ = self.kill.try_send(KillReason::Host);
    }

    /// Wait for the guest to end.
    pub async fn wait(&self) -> ExitStatus {
        let mut status = self.status.clone();
        loop {
            if let Some(status) = status.borrow_and_update().clone() {
                return status;
            }
            if status.changed().await.is_err() {
                return status.borrow().clone().unwrap_or(ExitStatus::Failed {
                    reason: "the host stopped watching the guest".to_owned(),
                });
            }
        }
    }

    /// The status if the guest has ended.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.status.borrow().clone()
    }
}
