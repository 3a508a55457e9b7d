//! The pty proxy: a guest run on the user's terminal gets a terminal of its
//! own (see [`crate::os::pty`]), and the host copies between the two.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use wasmproc_protocol::InboxItem;

use crate::child::Child;
use crate::command::Command;
use crate::host::SpawnError;
use crate::os::Stdio;
use crate::os::pipe::cloexec_pipe;
use crate::os::pty::{self, RawMode, is_terminal};
use crate::status::ExitStatus;

/// How long the output copy may take to drain after the guest has ended.
const DRAIN: Duration = Duration::from_secs(2);

impl Command {
    /// Run the guest to the end with stdio inherited and return its status.
    ///
    /// When stdin and stdout are the user's terminal, the guest gets a
    /// terminal of its own instead (a pseudo-terminal, with the user's
    /// window size, kept up to date), which the host copies to and from
    /// the user's terminal, in raw mode until the guest ends. The guest
    /// sees a terminal but never holds the user's: it cannot type into the
    /// user's shell, and it reads its terminal in the foreground.
    ///
    /// # Errors
    ///
    /// As [`fork`](Self::fork), and when no pseudo-terminal can be had.
    pub async fn status(&mut self) -> Result<ExitStatus, SpawnError> {
        self.status_with(|_| {}).await
    }

    /// [`status`](Self::status), handing each item the guest sends to its
    /// parent (messages, calls, notices) to `to_parent` as it comes.
    ///
    /// # Errors
    ///
    /// As [`status`](Self::status).
    pub async fn status_with(
        &mut self,
        mut to_parent: impl FnMut(InboxItem),
    ) -> Result<ExitStatus, SpawnError> {
        if self.inherits_stdio() && is_terminal(0) && is_terminal(1) {
            return on_terminal(self, &mut to_parent).await;
        }
        let child = self.spawn().await?;
        Ok(wait_reading(&child, &mut to_parent).await)
    }
}

/// Wait for `child` to end, handing what it sends its parent on meanwhile.
async fn wait_reading(child: &Child, to_parent: &mut impl FnMut(InboxItem)) -> ExitStatus {
    loop {
        tokio::select! {
            status = child.wait() => {
                while let Some(item) = child.try_recv() {
                    to_parent(item);
                }
                return status;
            }
            Some(item) = child.recv() => to_parent(item),
        }
    }
}

async fn on_terminal(
    command: &mut Command,
    to_parent: &mut impl FnMut(InboxItem),
) -> Result<ExitStatus, SpawnError> {
    let (master, slave) = pty::open().map_err(SpawnError::Terminal)?;
    pty::copy_window_size(1, master.as_fd());
    let slave_copy = || {
        slave
            .try_clone()
            .map(Stdio::Fd)
            .map_err(SpawnError::Terminal)
    };
    command.stdin(slave_copy()?).stdout(slave_copy()?);
    if is_terminal(2) {
        command.stderr(slave_copy()?);
    } else {
        command.stderr(Stdio::Inherit);
    }
    let child = command.fork().await?;
    // From here only the runner holds the guest's terminal: when it ends,
    // reading the master fails and the output copy stops.
    drop(slave);

    let raw = RawMode::enter(0).ok();
    let master = Arc::new(master);
    let (stop_input, stop) = cloexec_pipe().map_err(SpawnError::Terminal)?;
    let input = {
        let master = master.clone();
        std::thread::spawn(move || pty::copy(0, master.as_raw_fd(), Some(stop_input.as_raw_fd())))
    };
    let output = {
        let master = master.clone();
        tokio::task::spawn_blocking(move || pty::copy(master.as_raw_fd(), 1, None))
    };

    let signals = (
        signal(SignalKind::window_change()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
        signal(SignalKind::interrupt()),
    );
    let status = match signals {
        (Ok(mut winch), Ok(mut term), Ok(mut hup), Ok(mut int)) => loop {
            // Keys typed on the raw terminal go to the guest's terminal
            // (Ctrl-C there interrupts the guest); these come from outside:
            // end the guest, then restore the terminal.
            tokio::select! {
                status = wait_reading(&child, to_parent) => break status,
                _ = winch.recv() => pty::copy_window_size(1, master.as_fd()),
                _ = term.recv() => child.kill(),
                _ = hup.recv() => child.kill(),
                _ = int.recv() => child.kill(),
            }
        },
        _ => wait_reading(&child, to_parent).await,
    };
    let _ = tokio::time::timeout(DRAIN, output).await;
    drop(stop);
    let _ = input.join();
    drop(raw);
    Ok(status)
}
