//! One runner's session: from its launch spec to its status.
//!
//! A session is three tasks around one runner process, sharing the guest's
//! relay [`Entry`]:
//!
//! - the **writer** sends the launch spec, then moves items from the
//!   guest's mailbox to its runner, many frames per `write`;
//! - the **reader** checks the order of the runner's frames ([`Frames`]),
//!   routes every `Send`, `Call` and `Reply` through the relay and keeps the
//!   `Exit` report;
//!   anything malformed or out of order ends the runner as a protocol
//!   violation;
//! - the **waiter** waits for the process (or kills it, on a kill request
//!   or at the guest's timeout), combines what the OS and the reader saw
//!   into an [`ExitStatus`] ([`combine`]), unregisters the guest (its
//!   monitors get `down`) and publishes the status to [`Child::wait`].

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use wasmproc_protocol::{
    Address, ExitReport, HardeningStep, HostToRunner, InboxItem, LaunchSpec, RequestId,
    RunnerToHost, check_version,
};

use super::delivered::Delivered;
use super::spawner::Spawned;
use crate::child::{Child, KillReason, Killer, Watch};
use crate::connection::{Batch, FrameReader, FrameWriter};
use crate::os::process::Process;
use crate::os::ring::{RING_IDLE, RingWriter, Rings};
use crate::relay::{Entry, Item, MAILBOX_PATIENCE, Relay};
use crate::status::{ExitStatus, Limit};

/// Frames per write when a guest's mailbox holds many.
const WRITE_BATCH_ITEMS: usize = 512;
/// Payload bytes per write batch (one larger message still goes alone).
const WRITE_BATCH_BYTES: usize = 1024 * 1024;
/// How long the waiter waits for the reader after the process has ended.
const READER_GRACE: Duration = Duration::from_secs(2);
/// Kill requests a session holds; more are pointless (the first one wins).
const KILL_REQUESTS: usize = 4;

/// A runner just started, and what its session needs.
#[derive(Debug)]
pub(crate) struct Session {
    /// The guest as the relay knows it: its mailbox, its limits.
    pub(crate) entry: Arc<Entry>,
    /// The relay its sends are routed through.
    pub(crate) relay: Relay,
    /// What the runner is to run.
    pub(crate) spec: LaunchSpec,
    /// How long the guest may run before it is killed.
    pub(crate) timeout: Option<Duration>,
}

impl Session {
    /// Start the session's three tasks on `spawned` and return the guest's
    /// handle.
    pub(crate) fn start(self, spawned: Spawned) -> Child {
        let Session {
            entry,
            relay,
            spec,
            timeout,
        } = self;
        let Spawned {
            process,
            handles,
            to_runner,
            from_runner,
            report,
        } = spawned;
        let pid = process.id();
        let (kill, kill_rx) = mpsc::channel(KILL_REQUESTS);
        let (status_tx, status) = watch::channel(None);
        let delivered = Arc::new(Delivered::new(relay.clone()));

        let Rings {
            writer: ring_out,
            reader: ring_in,
        } = report.rings();
        let writer = FrameWriter::new(to_runner, relay.stats().clone());
        let max_call = Duration::from_millis(spec.limits.max_call_ms);
        let writer = tokio::spawn(write_runner(
            writer,
            ring_out,
            spec,
            entry.clone(),
            relay.clone(),
            delivered.clone(),
        ));
        let reader = Reader {
            frames: Frames::new(entry.max_message_size, max_call),
            entry: entry.clone(),
            relay: relay.clone(),
            delivered: delivered.clone(),
            kill: kill.clone(),
        };
        let reader =
            tokio::spawn(reader.run(FrameReader::new(from_runner, &[]).with_ring(Some(ring_in))));
        let waiter = Waiter {
            process,
            kill: kill_rx,
            entry: entry.clone(),
            relay: relay.clone(),
            delivered,
            report,
            status: status_tx,
            timeout,
        };
        tokio::spawn(waiter.run(writer, reader));
        let watch = Watch {
            entry,
            pid,
            kill,
            status,
        };
        Child::new(watch, handles, relay)
    }
}

/// The writer task: the launch spec, then the mailbox, in batches. Every
/// inbox item is recorded as delivered before it is written; a request
/// whose call has ended meanwhile is not written at all. Large payloads go
/// through `ring` where it has room.
async fn write_runner(
    mut writer: FrameWriter,
    mut ring: RingWriter,
    spec: LaunchSpec,
    entry: Arc<Entry>,
    relay: Relay,
    delivered: Arc<Delivered>,
) {
    let mut batch = Batch::with_capacity(64 * 1024);
    if let Err(err) = batch.push(&HostToRunner::Launch(spec)) {
        tracing::error!(guest = %entry.id, "cannot encode the launch spec: {err}");
        return;
    }
    let mut items = Vec::with_capacity(WRITE_BATCH_ITEMS);
    loop {
        if writer.write(&mut batch).await.is_err() {
            // The runner has ended; the waiter reports how.
            return;
        }
        if !next_items(&entry, &mut items, &mut ring).await {
            return;
        }
        items.retain(|item| match item {
            Item::Message {
                request: Some(request),
                ..
            } => relay.call_is_open(*request),
            _ => true,
        });
        delivered.record(&items, &entry.counters);
        entry.counters.delivering(&items);
        for item in items.drain(..) {
            let queued = match item {
                // The payload goes from the mailbox to the pipe, uncopied.
                Item::Message {
                    from,
                    from_name,
                    request,
                    payload,
                    ..
                } => {
                    let head = HostToRunner::Deliver(InboxItem::Message {
                        from,
                        from_name,
                        request,
                        payload: Vec::new(),
                    });
                    batch.push_split(&head, payload, Some(&mut ring))
                }
                Item::Notice(notice) => batch.push(&HostToRunner::Deliver(notice)),
                Item::Answer {
                    call,
                    answer: Ok(payload),
                } => batch.push_split(
                    &HostToRunner::Replied {
                        call,
                        payload: Vec::new(),
                    },
                    payload,
                    Some(&mut ring),
                ),
                Item::Answer {
                    call,
                    answer: Err(error),
                } => batch.push(&HostToRunner::CallFailed { call, error }),
                Item::Expired(request) => batch.push(&HostToRunner::Expired { request }),
            };
            if let Err(err) = queued {
                tracing::error!(guest = %entry.id, "cannot encode an inbox item: {err}");
            }
        }
    }
}

/// Wait for the mailbox's next items (`false` once it is closed and
/// empty). While the ring to the runner holds pages and nothing comes for
/// [`RING_IDLE`], it gives them back once the runner has read it all.
async fn next_items(entry: &Entry, items: &mut Vec<Item>, ring: &mut RingWriter) -> bool {
    loop {
        let next = entry
            .mailbox
            .pop_batch(items, WRITE_BATCH_ITEMS, WRITE_BATCH_BYTES);
        if !ring.holds_pages() {
            return next.await;
        }
        tokio::select! {
            biased;
            popped = next => return popped,
            () = tokio::time::sleep(RING_IDLE) => {
                if let Err(err) = ring.release_if_drained() {
                    tracing::warn!(guest = %entry.id, "cannot give the payload ring's memory back: {err}");
                }
            }
        }
    }
}

/// Where a runner is in its conversation with the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Nothing read yet: `Hello` must come first.
    Hello,
    /// `Hello` read: the hardening report (or an early exit report) is next.
    Hardening,
    /// The guest runs: sends, monitors, and at last its exit report.
    Running,
    /// The exit report is in: nothing may follow.
    Reported,
}

/// What the host does for a frame that came in order.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    /// Nothing more (a handshake frame, or the exit report, kept).
    None,
    /// Say which hardening steps are not in force.
    Hardened(Vec<HardeningStep>),
    /// Note what the guest had taken, then route its message.
    Send {
        to: Address,
        taken: u64,
        payload: Vec<u8>,
    },
    /// Note what the guest had taken, then place its call.
    Call {
        to: Address,
        call: u64,
        timeout: Duration,
        taken: u64,
        payload: Vec<u8>,
    },
    /// Note what the guest had taken, then deliver its reply.
    Reply {
        request: RequestId,
        taken: u64,
        payload: Vec<u8>,
    },
    /// The guest gives its call up.
    Abandon { call: u64 },
    /// Watch a guest for its end.
    Monitor { name: String },
    /// The guest has taken this many delivered items in all.
    Taken(u64),
    /// The guest is ready for work.
    Ready,
    /// The guest's linear memory, in bytes.
    Memory(u64),
}

/// The reader's state machine: checks that a runner's frames come in the
/// protocol's order and within the guest's limits, and keeps its report.
#[derive(Debug)]
struct Frames {
    stage: Stage,
    max_message_size: u64,
    /// The longest a call of this guest may wait.
    max_call: Duration,
    /// The number of the guest's last call: each is above the one before.
    last_call: Option<u64>,
    report: Option<ExitReport>,
}

impl Frames {
    fn new(max_message_size: u64, max_call: Duration) -> Frames {
        Frames {
            stage: Stage::Hello,
            max_message_size,
            max_call,
            last_call: None,
            report: None,
        }
    }

    fn check_size(&self, payload: &[u8]) -> Result<(), String> {
        if payload.len() as u64 > self.max_message_size {
            return Err(format!(
                "a {}-byte message, over the guest's {}-byte limit",
                payload.len(),
                self.max_message_size
            ));
        }
        Ok(())
    }

    /// Take the next frame. `Err` is a protocol violation, with its reason.
    fn accept(&mut self, frame: RunnerToHost) -> Result<Action, String> {
        match (self.stage, frame) {
            (Stage::Hello, RunnerToHost::Hello { protocol_version }) => {
                check_version(protocol_version).map_err(|err| err.to_string())?;
                self.stage = Stage::Hardening;
                Ok(Action::None)
            }
            (Stage::Hello, other) => {
                Err(format!("expected Hello first, got {}", frame_kind(&other)))
            }
            (Stage::Hardening, RunnerToHost::Hardened { steps }) => {
                self.stage = Stage::Running;
                Ok(Action::Hardened(steps))
            }
            // A runner that failed before hardening reports that failure.
            (Stage::Hardening, RunnerToHost::Exit(report)) => {
                self.stage = Stage::Reported;
                self.report = Some(report);
                Ok(Action::None)
            }
            (Stage::Hardening, other) => Err(format!(
                "expected the hardening report after Hello, got {}",
                frame_kind(&other)
            )),
            (Stage::Reported, other) => {
                Err(format!("{} after the exit report", frame_kind(&other)))
            }
            (Stage::Running, RunnerToHost::Send { to, taken, payload }) => {
                self.check_size(&payload)?;
                Ok(Action::Send { to, taken, payload })
            }
            (
                Stage::Running,
                RunnerToHost::Call {
                    to,
                    call,
                    timeout_ms,
                    taken,
                    payload,
                },
            ) => {
                self.check_size(&payload)?;
                if let Some(last) = self.last_call
                    && call <= last
                {
                    return Err(format!("call number {call} after call number {last}"));
                }
                self.last_call = Some(call);
                // Zero stays zero, for the relay to refuse; the rest is capped.
                let timeout = Duration::from_millis(timeout_ms).min(self.max_call);
                Ok(Action::Call {
                    to,
                    call,
                    timeout,
                    taken,
                    payload,
                })
            }
            (
                Stage::Running,
                RunnerToHost::Reply {
                    request,
                    taken,
                    payload,
                },
            ) => {
                self.check_size(&payload)?;
                Ok(Action::Reply {
                    request,
                    taken,
                    payload,
                })
            }
            (Stage::Running, RunnerToHost::Abandon { call }) => Ok(Action::Abandon { call }),
            (Stage::Running, RunnerToHost::Monitor { name }) => Ok(Action::Monitor { name }),
            (Stage::Running, RunnerToHost::Taken { count }) => Ok(Action::Taken(count)),
            (Stage::Running, RunnerToHost::Ready) => Ok(Action::Ready),
            (Stage::Running, RunnerToHost::Memory { bytes }) => Ok(Action::Memory(bytes)),
            (Stage::Running, RunnerToHost::Exit(report)) => {
                self.stage = Stage::Reported;
                self.report = Some(report);
                Ok(Action::None)
            }
            (Stage::Running, RunnerToHost::Hello { .. }) => Err("a second Hello".to_owned()),
            (Stage::Running, RunnerToHost::Hardened { .. }) => {
                Err("a second hardening report".to_owned())
            }
        }
    }
}

fn frame_kind(frame: &RunnerToHost) -> &'static str {
    match frame {
        RunnerToHost::Hello { .. } => "Hello",
        RunnerToHost::Send { .. } => "Send",
        RunnerToHost::Monitor { .. } => "Monitor",
        RunnerToHost::Exit(_) => "Exit",
        RunnerToHost::Hardened { .. } => "Hardened",
        RunnerToHost::Taken { .. } => "Taken",
        RunnerToHost::Call { .. } => "Call",
        RunnerToHost::Reply { .. } => "Reply",
        RunnerToHost::Abandon { .. } => "Abandon",
        RunnerToHost::Ready => "Ready",
        RunnerToHost::Memory { .. } => "Memory",
    }
}

/// What the reader saw of a runner.
#[derive(Debug, Default)]
struct ReaderOutcome {
    report: Option<ExitReport>,
    violation: Option<String>,
}

/// The reader task's state.
struct Reader {
    frames: Frames,
    entry: Arc<Entry>,
    relay: Relay,
    /// What the writer delivered; the runner's `Taken` frames settle it.
    delivered: Arc<Delivered>,
    /// To end the runner on a protocol violation.
    kill: Killer,
}

impl Reader {
    /// Read until the runner's pipe ends or it breaks the protocol.
    async fn run(mut self, mut input: FrameReader<RunnerToHost>) -> ReaderOutcome {
        let violation = loop {
            let frame = match input.next().await {
                Ok(Some(frame)) => frame,
                Ok(None) => break None,
                Err(err) => break Some(err.to_string()),
            };
            let acted = match self.frames.accept(frame) {
                Ok(action) => self.act(action).await,
                Err(reason) => Err(reason),
            };
            if let Err(reason) = acted {
                break Some(reason);
            }
        };
        if let Some(reason) = &violation {
            tracing::warn!(guest = %self.entry.id, "protocol violation: {reason}");
            let _ = self.kill.send(KillReason::Violation).await;
        }
        ReaderOutcome {
            report: self.frames.report,
            violation,
        }
    }

    async fn act(&mut self, action: Action) -> Result<(), String> {
        let (entry, relay) = (&self.entry, &self.relay);
        match action {
            Action::None => {}
            Action::Taken(count) => self.delivered.taken(count, &self.entry.counters)?,
            Action::Hardened(steps) => report_hardening(&steps),
            Action::Send { to, taken, payload } => {
                self.delivered.taken(taken, &self.entry.counters)?;
                entry.counters.sent(payload.len());
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
            Action::Call {
                to,
                call,
                timeout,
                taken,
                payload,
            } => {
                self.delivered.taken(taken, &self.entry.counters)?;
                entry.counters.sent(payload.len());
                if let Err(error) = relay
                    .call_from_guest(entry, &to, call, timeout, payload, MAILBOX_PATIENCE)
                    .await
                {
                    let answer = Item::Answer {
                        call,
                        answer: Err(error),
                    };
                    let _ = entry.mailbox.push_notice(answer).await;
                }
            }
            Action::Reply {
                request,
                taken,
                payload,
            } => {
                self.delivered.taken(taken, &self.entry.counters)?;
                entry.counters.sent(payload.len());
                relay
                    .reply_from_guest(entry, request, payload)
                    .map_err(|_| format!("a reply to {request}, which was delivered elsewhere"))?;
            }
            Action::Abandon { call } => relay.abandon(entry, call),
            Action::Ready => entry.set_ready(),
            Action::Memory(bytes) => entry
                .counters
                .memory
                .store(bytes, std::sync::atomic::Ordering::Relaxed),
            Action::Monitor { name } => {
                if let Some(down) = relay.monitor(entry, &name) {
                    let _ = entry.mailbox.push_notice(down).await;
                }
            }
        }
        Ok(())
    }
}

/// Say once per process which hardening steps this kernel cannot do.
fn report_hardening(steps: &[HardeningStep]) {
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

/// The waiter task's state.
struct Waiter {
    process: Process,
    kill: mpsc::Receiver<KillReason>,
    entry: Arc<Entry>,
    relay: Relay,
    /// What was delivered and not taken goes back when the runner ends.
    delivered: Arc<Delivered>,
    /// The runner's sandbox report page.
    report: crate::os::report::ReportPage,
    /// Where [`Child::wait`] reads the status.
    status: watch::Sender<Option<ExitStatus>>,
    timeout: Option<Duration>,
}

impl Waiter {
    async fn run(
        mut self,
        writer: tokio::task::JoinHandle<()>,
        reader: tokio::task::JoinHandle<ReaderOutcome>,
    ) {
        let mut killed: Option<KillReason> = None;
        let deadline = tokio::time::sleep(self.timeout.unwrap_or(Duration::MAX));
        tokio::pin!(deadline);
        let os_status = loop {
            let reason = tokio::select! {
                status = self.process.wait() => break status,
                Some(reason) = self.kill.recv() => reason,
                () = &mut deadline, if self.timeout.is_some() && killed.is_none() => {
                    KillReason::Timeout(self.timeout.unwrap_or_default())
                }
            };
            // The first reason is the one reported.
            if killed.is_none() {
                killed = Some(reason);
                self.process.kill();
            }
        };
        // Nothing can reach the guest any more. Closing its mailbox also
        // frees a reader waiting to queue a notice for it, so it can read
        // the runner's last frames (its exit report among them).
        self.entry.mailbox.close();
        let outcome = match tokio::time::timeout(READER_GRACE, reader).await {
            Ok(Ok(outcome)) => outcome,
            _ => ReaderOutcome::default(),
        };
        // The writer's last batch fails on the dead runner's pipe; once it
        // has stopped, nothing more is delivered.
        if tokio::time::timeout(READER_GRACE, writer).await.is_err() {
            tracing::warn!(guest = %self.entry.id, "the writer did not stop");
        }
        // Taken or returned: what the runner never took goes back first
        // (it is older), then what was still in the host's mailbox.
        self.relay
            .return_to_senders(&self.entry, self.delivered.drain(&self.entry.counters));
        let refused = self.report.refused().map(crate::os::syscalls::name);
        let status = combine(os_status, outcome, refused, killed, self.entry.max_cpu);
        tracing::debug!(guest = %self.entry.id, "ended: {status}");
        self.relay
            .unregister(self.entry.id, &status.to_string())
            .await;
        let _ = self.status.send(Some(status));
    }
}

/// The status of a guest from what the OS, the reader, the runner's sandbox
/// report and the host saw: a protocol violation that made the host kill
/// the runner first, then a system call the sandbox refused (the news,
/// whatever followed), then the runner's own report, then a kill the host ordered (timeout, limit,
/// `kill`: it decides even when the frame stream was cut mid-frame by it),
/// then a violation seen at the stream's end, then how the process ended.
fn combine(
    os_status: io::Result<std::process::ExitStatus>,
    outcome: ReaderOutcome,
    refused: Option<String>,
    killed: Option<KillReason>,
    cpu_limit: Option<Duration>,
) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    if killed == Some(KillReason::Violation)
        && let Some(reason) = outcome.violation.clone()
    {
        return ExitStatus::ProtocolViolation { reason };
    }
    if let Some(syscall) = refused {
        return ExitStatus::SandboxRefused { syscall };
    }
    if let Some(report) = outcome.report {
        return ExitStatus::from_report(report);
    }
    let signal = os_status.as_ref().ok().and_then(|s| s.signal());
    match (&killed, signal) {
        (Some(KillReason::Timeout(after)), _) => return ExitStatus::TimedOut { after: *after },
        (Some(KillReason::Limit(limit)), _) => return ExitStatus::LimitExceeded(limit.clone()),
        (Some(KillReason::Host), Some(signal)) => {
            return ExitStatus::Killed {
                signal,
                by_host: true,
            };
        }
        _ => {}
    }
    if let Some(reason) = outcome.violation {
        return ExitStatus::ProtocolViolation { reason };
    }
    match os_status {
        Ok(status) => match status.signal() {
            Some(libc::SIGXCPU) if killed.is_none() => ExitStatus::LimitExceeded(Limit::Cpu {
                limit: cpu_limit.unwrap_or_default(),
            }),
            Some(signal) => ExitStatus::Killed {
                signal,
                by_host: killed.is_some(),
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

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use wasmproc_protocol::{GuestId, PROTOCOL_VERSION};

    use super::*;

    fn hello() -> RunnerToHost {
        RunnerToHost::Hello {
            protocol_version: PROTOCOL_VERSION,
        }
    }

    fn hardened() -> RunnerToHost {
        RunnerToHost::Hardened { steps: Vec::new() }
    }

    fn send(len: usize) -> RunnerToHost {
        RunnerToHost::Send {
            to: Address::Id(GuestId(1)),
            taken: 0,
            payload: vec![7; len],
        }
    }

    fn exit(code: i32) -> RunnerToHost {
        RunnerToHost::Exit(ExitReport::Exited { code })
    }

    /// Feed `frames` to a fresh state machine; the first violation, if any.
    fn violation(frames: Vec<RunnerToHost>) -> Option<String> {
        let mut state = Frames::new(100, Duration::from_secs(60));
        frames.into_iter().find_map(|f| state.accept(f).err())
    }

    #[test]
    fn a_well_behaved_runner_is_accepted_and_its_report_kept() {
        let mut state = Frames::new(100, Duration::from_secs(60));
        assert_eq!(state.accept(hello()), Ok(Action::None));
        assert_eq!(state.accept(hardened()), Ok(Action::Hardened(Vec::new())));
        assert_eq!(
            state.accept(send(100)),
            Ok(Action::Send {
                to: Address::Id(GuestId(1)),
                taken: 0,
                payload: vec![7; 100]
            })
        );
        assert_eq!(
            state.accept(RunnerToHost::Monitor { name: "b".into() }),
            Ok(Action::Monitor { name: "b".into() })
        );
        assert_eq!(state.accept(exit(3)), Ok(Action::None));
        assert_eq!(state.report, Some(ExitReport::Exited { code: 3 }));
    }

    #[test]
    fn a_runner_that_fails_before_hardening_reports_it() {
        let mut state = Frames::new(100, Duration::from_secs(60));
        state.accept(hello()).unwrap();
        let failed = RunnerToHost::Exit(ExitReport::Failed {
            message: "bad spec".into(),
        });
        assert_eq!(state.accept(failed), Ok(Action::None));
        assert_eq!(
            state.report,
            Some(ExitReport::Failed {
                message: "bad spec".into()
            })
        );
    }

    #[test]
    fn each_out_of_order_frame_is_a_violation_with_its_reason() {
        let cases: Vec<(Vec<RunnerToHost>, String)> = vec![
            (vec![send(1)], "expected Hello first, got Send".into()),
            (
                vec![hardened()],
                "expected Hello first, got Hardened".into(),
            ),
            (vec![exit(0)], "expected Hello first, got Exit".into()),
            (
                vec![RunnerToHost::Monitor { name: "b".into() }],
                "expected Hello first, got Monitor".into(),
            ),
            (
                vec![RunnerToHost::Hello {
                    protocol_version: PROTOCOL_VERSION + 1,
                }],
                format!(
                    "protocol version mismatch: this side speaks {PROTOCOL_VERSION}, the peer speaks {}",
                    PROTOCOL_VERSION + 1
                ),
            ),
            (
                vec![hello(), hello()],
                "expected the hardening report after Hello, got Hello".into(),
            ),
            (
                vec![hello(), send(1)],
                "expected the hardening report after Hello, got Send".into(),
            ),
            (vec![hello(), hardened(), hello()], "a second Hello".into()),
            (
                vec![hello(), hardened(), hardened()],
                "a second hardening report".into(),
            ),
            (
                vec![hello(), hardened(), send(101)],
                "a 101-byte message, over the guest's 100-byte limit".into(),
            ),
            (
                vec![hello(), hardened(), exit(0), send(1)],
                "Send after the exit report".into(),
            ),
            (
                vec![hello(), hardened(), exit(0), exit(0)],
                "Exit after the exit report".into(),
            ),
            (
                vec![hello(), exit(0), hardened()],
                "Hardened after the exit report".into(),
            ),
        ];
        for (frames, reason) in cases {
            let kinds: Vec<&str> = frames.iter().map(frame_kind).collect();
            assert_eq!(violation(frames), Some(reason), "frames {kinds:?}");
        }
    }

    fn exited(code: i32) -> io::Result<std::process::ExitStatus> {
        Ok(std::process::ExitStatus::from_raw(code << 8))
    }

    fn signalled(signal: i32) -> io::Result<std::process::ExitStatus> {
        Ok(std::process::ExitStatus::from_raw(signal))
    }

    fn reported(report: ExitReport) -> ReaderOutcome {
        ReaderOutcome {
            report: Some(report),
            violation: None,
        }
    }

    #[test]
    fn combine_prefers_a_violation_then_the_report_then_the_os() {
        let violated = ReaderOutcome {
            report: Some(ExitReport::Exited { code: 0 }),
            violation: Some("garbage".into()),
        };
        assert_eq!(
            combine(
                signalled(9),
                violated,
                None,
                Some(KillReason::Violation),
                None
            ),
            ExitStatus::ProtocolViolation {
                reason: "garbage".into()
            }
        );
        // A kill the host ordered cuts the stream mid-frame: the kill's
        // reason decides, not the truncated frame.
        let cut = || ReaderOutcome {
            report: None,
            violation: Some("stream ended inside a frame".into()),
        };
        let second = Duration::from_secs(1);
        assert_eq!(
            combine(
                signalled(9),
                cut(),
                None,
                Some(KillReason::Timeout(second)),
                None
            ),
            ExitStatus::TimedOut { after: second }
        );
        assert_eq!(
            combine(signalled(9), cut(), None, Some(KillReason::Host), None),
            ExitStatus::Killed {
                signal: 9,
                by_host: true
            }
        );
        // A stream cut with nobody killing the runner is still a violation.
        assert_eq!(
            combine(exited(1), cut(), None, None, None),
            ExitStatus::ProtocolViolation {
                reason: "stream ended inside a frame".into()
            }
        );
        assert_eq!(
            combine(
                exited(3),
                reported(ExitReport::Exited { code: 3 }),
                None,
                None,
                None
            ),
            ExitStatus::Exited { code: 3 }
        );
        let trap = ExitReport::Trapped {
            message: "unreachable".into(),
            backtrace: vec!["main".into()],
        };
        assert_eq!(
            combine(exited(134), reported(trap), None, None, None),
            ExitStatus::Trapped {
                message: "unreachable".into(),
                backtrace: vec!["main".into()]
            }
        );
        let memory = ExitReport::MemoryLimit {
            limit: 10,
            requested: 20,
        };
        assert_eq!(
            combine(exited(134), reported(memory), None, None, None),
            ExitStatus::LimitExceeded(Limit::Memory {
                limit: 10,
                requested: 20
            })
        );
        let failed = ExitReport::Failed {
            message: "no such import".into(),
        };
        assert_eq!(
            combine(exited(71), reported(failed), None, None, None),
            ExitStatus::Failed {
                reason: "no such import".into()
            }
        );
    }

    #[test]
    fn combine_names_why_an_unreported_runner_ended() {
        let none = ReaderOutcome::default;
        // The sandbox's refusal is the news, even if a kill followed.
        assert_eq!(
            combine(
                exited(72),
                none(),
                Some("uname".into()),
                Some(KillReason::Host),
                None
            ),
            ExitStatus::SandboxRefused {
                syscall: "uname".into()
            }
        );
        let second = Duration::from_secs(1);
        assert_eq!(
            combine(signalled(libc::SIGKILL), none(), None, None, None),
            ExitStatus::Killed {
                signal: libc::SIGKILL,
                by_host: false
            }
        );
        assert_eq!(
            combine(
                signalled(libc::SIGKILL),
                none(),
                None,
                Some(KillReason::Host),
                None
            ),
            ExitStatus::Killed {
                signal: libc::SIGKILL,
                by_host: true
            }
        );
        assert_eq!(
            combine(
                signalled(libc::SIGKILL),
                none(),
                None,
                Some(KillReason::Timeout(second)),
                None
            ),
            ExitStatus::TimedOut { after: second }
        );
        let output = Limit::Output { bytes: 5 };
        assert_eq!(
            combine(
                signalled(libc::SIGKILL),
                none(),
                None,
                Some(KillReason::Limit(output.clone())),
                None
            ),
            ExitStatus::LimitExceeded(output)
        );
        assert_eq!(
            combine(signalled(libc::SIGXCPU), none(), None, None, Some(second)),
            ExitStatus::LimitExceeded(Limit::Cpu { limit: second })
        );
        // A host kill that raced the kernel's CPU limit says what the host did.
        assert_eq!(
            combine(
                signalled(libc::SIGXCPU),
                none(),
                None,
                Some(KillReason::Host),
                Some(second)
            ),
            ExitStatus::Killed {
                signal: libc::SIGXCPU,
                by_host: true
            }
        );
        assert_eq!(
            combine(exited(70), none(), None, None, None),
            ExitStatus::Failed {
                reason: "the runner exited with code 70 before reporting how the guest ended"
                    .into()
            }
        );
        assert_eq!(
            combine(Err(io::Error::other("gone")), none(), None, None, None),
            ExitStatus::Failed {
                reason: "cannot wait for the runner: gone".into()
            }
        );
    }
}
