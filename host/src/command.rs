//! The builder and the handle, shaped like `tokio::process::Command` and
//! `Child`, with Node's `fork` messaging on top.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::watch;
use wasmproc_protocol::{GuestId, InboxItem, Limits, Preopen};

use crate::relay::{Entry, Relay, SendError};
use crate::status::ExitStatus;
use crate::supervisor::{Host, SpawnError};

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

    pub(crate) fn into_std(self) -> std::io::Result<std::process::Stdio> {
        Ok(match self {
            Stdio::Inherit => std::process::Stdio::inherit(),
            Stdio::Null => std::process::Stdio::null(),
            Stdio::Piped => std::process::Stdio::piped(),
            Stdio::File(file) => std::process::Stdio::from(file),
        })
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
    host: Option<Host>,
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

    /// Fork into `host` instead of [`Host::global`].
    pub fn host(&mut self, host: &Host) -> &mut Command {
        self.host = Some(host.clone());
        self
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
    /// meanwhile wait in the guest's mailbox.
    ///
    /// # Errors
    ///
    /// When the module is missing or not wasm, does not compile, the name is
    /// taken, or the runner cannot be started.
    pub async fn fork(&mut self) -> Result<Child, SpawnError> {
        let host = self.host.clone().unwrap_or_else(|| Host::global().clone());
        host.fork(self).await
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
    kill: tokio::sync::mpsc::Sender<()>,
    status: watch::Receiver<Option<ExitStatus>>,
    relay: Relay,
}

impl Child {
    pub(crate) fn new(
        entry: Arc<Entry>,
        pid: u32,
        kill: tokio::sync::mpsc::Sender<()>,
        status: watch::Receiver<Option<ExitStatus>>,
        (stdin, stdout, stderr): (Option<ChildStdin>, Option<ChildStdout>, Option<ChildStderr>),
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

    /// Kill the guest's runner (SIGKILL). Its status says `killed by the host`.
    pub fn kill(&self) {
        let _ = self.kill.try_send(());
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
