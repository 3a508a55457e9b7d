//! The runner's side of the control pipes: the guest's inbox and its
//! outgoing frames, shared between the guest's host calls and the two I/O
//! loops that move bytes (driven beside the guest by [`super::drive`]).
//!
//! Everything runs on the runner's single-threaded runtime. While guest code
//! runs, the I/O loops wait; they run whenever the guest blocks (`recv`,
//! `poll`, a WASI read) and, for a guest that keeps computing, at its first
//! `ipc` call in each tick of the runner's [`Ticker`], which also writes
//! what a computing guest queued and the runtime left waiting (its
//! [`Cover`]). Consecutive `send`s therefore pile up in one buffer and
//! leave in a single `write`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use wasmproc_protocol::framing::FrameError;
use wasmproc_protocol::{
    Address, CallError, GuestId, InboxItem, Limits, MAX_CALLS_IN_FLIGHT, ReplyError, RequestId,
    RunnerToHost,
};

use super::ticker::Ticker;
use crate::connection::{Batch, FrameReader, FrameWriter};
use crate::os::pipe::PIPE_BUFFER;
use crate::os::ring::{RING_IDLE, RingWriter};
use wasmproc_protocol::HostToRunner;
use wasmproc_protocol::contract::EXIT_HOST_GONE;

/// Above this many buffered outgoing bytes, `send` waits for the pipe to
/// drain (the host reads slower than the guest sends). As much as the pipe
/// holds: a batch then never grows past the size [`Batch::clear`] keeps, so
/// a streaming guest reuses its two buffers instead of faulting in fresh
/// pages for every one (with 4 MiB, a stream of 2 million 64 B messages
/// took 24,000–41,000 page faults in all instead of ~5,000, at the same
/// rate).
const OUT_HIGH_WATER: usize = PIPE_BUFFER as usize;

/// How many ended requests the runner remembers, to tell a second or late
/// reply (`already-replied`, `expired`) from an unknown one.
const REMEMBERED_REQUESTS: usize = 16 * 1024;

/// A call's answer: the reply, or why there is none.
pub type Answer = Result<Vec<u8>, CallError>;

/// The shared state. Each side takes a lock for a few instructions and
/// touches a `Notify` only when the other side said it is waiting (the
/// `*_waiting` flags): a busy stream costs no wake-ups.
#[derive(Debug)]
pub struct Link {
    pub id: GuestId,
    pub name: Option<String>,
    pub limits: Limits,
    /// The ticker, woken by every `ipc` call.
    pub ticker: Arc<Ticker>,
    inbox: Mutex<Inbox>,
    /// Wakes `recv` and pollables when an item arrives.
    inbox_changed: Notify,
    /// Wakes the reader loop when the guest takes an item from a full inbox.
    inbox_space: Notify,
    out: Mutex<Outgoing>,
    /// Wakes the writer loop.
    out_ready: Notify,
    /// Wakes senders (and the final flush) when the writer has written.
    out_drained: Notify,
    /// Inbox items the guest has taken, in all. The host learns it from a
    /// `Taken` frame queued before the guest's next frame, or when the guest
    /// waits for its inbox: what the host delivered and never saw taken, it
    /// returns to the senders when this runner ends.
    taken: AtomicU64,
    /// The guest's calls in flight and the requests delivered to it.
    calls: Mutex<Calls>,
    /// Wakes calls waiting for their answer.
    answered: Notify,
    /// Whether the host has heard that the guest is ready.
    said_ready: std::sync::atomic::AtomicBool,
    /// The guest's linear memory in bytes (its main memory), as the store
    /// allowed it last; the host hears it with the next frame.
    memory: AtomicU64,
    /// The memory size last queued for the host, readable without the
    /// outgoing lock.
    memory_queued: AtomicU64,
}

/// The guest's side of calls. The host decides every answer; the runner
/// keeps what it has heard, so that waiting for an answer and refusing a
/// second or late reply cost no round trip.
#[derive(Debug, Default)]
struct Calls {
    /// The number of the guest's next call.
    next: u64,
    /// Calls in flight, by number.
    outgoing: HashMap<u64, CallInFlight>,
    /// Requests delivered to the guest and not yet answered or ended.
    open: HashSet<RequestId>,
    /// How recent requests ended, oldest first in `order`.
    closed: HashMap<RequestId, ReplyError>,
    order: VecDeque<RequestId>,
}

#[derive(Debug)]
struct CallInFlight {
    /// When the guest stops waiting (the host's deadline is the same
    /// timeout, counted from a moment later).
    deadline: Instant,
    answer: Option<Answer>,
}

impl Calls {
    fn close(&mut self, request: RequestId, how: ReplyError) {
        if self.open.remove(&request) {
            self.closed.insert(request, how);
            self.order.push_back(request);
            if self.order.len() > REMEMBERED_REQUESTS
                && let Some(oldest) = self.order.pop_front()
            {
                self.closed.remove(&oldest);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Inbox {
    items: VecDeque<InboxItem>,
    bytes: u64,
    /// `recv` or a pollable waits on `inbox_changed`.
    guest_waiting: bool,
    /// The reader loop waits on `inbox_space`.
    reader_waiting: bool,
}

#[derive(Debug, Default)]
struct Outgoing {
    buf: Batch,
    /// Where large payloads go when it has room (the host's shared memory
    /// with this runner), in the order their frames are queued.
    ring: Option<RingWriter>,
    /// A batch is being written (by the writer loop or the ticker): the
    /// other waits, so frames leave in order.
    in_flight: bool,
    /// Batches taken for writing, in all: the ticker tells a buffer the
    /// runtime left waiting from one it is about to write.
    takes: u64,
    host_gone: bool,
    /// The taken count last queued for the host.
    reported_taken: u64,
    /// The memory size last queued for the host.
    reported_memory: u64,
    /// The writer loop waits on `out_ready`.
    writer_waiting: bool,
    /// A sender or the final flush waits on `out_drained`.
    sender_waiting: bool,
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    HostGone,
}

impl Link {
    /// The link of guest `id`, whose large payloads go through `ring`
    /// where it has room.
    pub fn new(
        id: GuestId,
        name: Option<String>,
        limits: Limits,
        ticker: Arc<Ticker>,
        ring: Option<RingWriter>,
    ) -> Link {
        Link {
            id,
            name,
            limits,
            ticker,
            inbox: Mutex::new(Inbox::default()),
            inbox_changed: Notify::new(),
            inbox_space: Notify::new(),
            out: Mutex::new(Outgoing {
                ring,
                ..Outgoing::default()
            }),
            out_ready: Notify::new(),
            out_drained: Notify::new(),
            taken: AtomicU64::new(0),
            calls: Mutex::new(Calls::default()),
            answered: Notify::new(),
            said_ready: std::sync::atomic::AtomicBool::new(false),
            memory: AtomicU64::new(0),
            memory_queued: AtomicU64::new(0),
        }
    }

    /// The store let the guest's memory grow to `bytes`.
    pub fn memory_grew(&self, bytes: u64) {
        self.memory.fetch_max(bytes, Ordering::Relaxed);
    }

    fn calls(&self) -> MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start a call and return its number; what is known at once (a bad
    /// timeout, a payload over the limit, too many calls) fails here.
    ///
    /// # Errors
    ///
    /// Why the call did not leave.
    pub async fn start_call(
        &self,
        to: Address,
        payload: Vec<u8>,
        timeout_ms: u64,
    ) -> Result<u64, CallError> {
        if timeout_ms == 0 {
            return Err(CallError::InvalidTimeout);
        }
        if payload.len() as u64 > self.limits.max_message_size {
            return Err(CallError::TooLarge);
        }
        let wait = Duration::from_millis(timeout_ms.min(self.limits.max_call_ms));
        let call = {
            let mut calls = self.calls();
            if calls.outgoing.len() >= MAX_CALLS_IN_FLIGHT {
                return Err(CallError::TooManyCalls);
            }
            let call = calls.next;
            calls.next += 1;
            calls.outgoing.insert(
                call,
                CallInFlight {
                    deadline: Instant::now() + wait,
                    answer: None,
                },
            );
            call
        };
        let mut to = Some(to);
        let mut payload = Some(payload);
        let queued = self
            .queue_with(
                |batch, ring, taken| {
                    let head = RunnerToHost::Call {
                        to: to.take().unwrap_or(Address::Parent),
                        call,
                        timeout_ms,
                        taken,
                        payload: Vec::new(),
                    };
                    batch.push_split(&head, payload.take().unwrap_or_default(), ring)
                },
                true,
            )
            .await;
        if queued.is_err() {
            self.calls().outgoing.remove(&call);
            return Err(CallError::HostGone);
        }
        Ok(call)
    }

    /// Wait until call `call` has its answer or is past its deadline (at
    /// once for a call that is not in flight).
    pub async fn call_ready(&self, call: u64) {
        loop {
            let answered = self.answered.notified();
            tokio::pin!(answered);
            answered.as_mut().enable();
            let deadline = match self.calls().outgoing.get(&call) {
                Some(CallInFlight {
                    answer: None,
                    deadline,
                }) => *deadline,
                _ => return,
            };
            tokio::select! {
                () = answered => {}
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// The answer of call `call` once it has one (a call past its deadline
    /// is given up: `timeout`); `None` while it is in flight, and for a
    /// call whose answer was taken.
    pub async fn take_answer(&self, call: u64) -> Option<Answer> {
        let expired = {
            let mut calls = self.calls();
            let outgoing = calls.outgoing.get_mut(&call)?;
            if let Some(answer) = outgoing.answer.take() {
                calls.outgoing.remove(&call);
                return Some(answer);
            }
            if Instant::now() < outgoing.deadline {
                return None;
            }
            calls.outgoing.remove(&call);
            true
        };
        if expired {
            let _ = self.queue(&RunnerToHost::Abandon { call }).await;
        }
        Some(Err(CallError::Timeout))
    }

    /// Give up call `call` if it is in flight: its reply will be late.
    pub async fn abandon(&self, call: u64) {
        let in_flight = matches!(
            self.calls().outgoing.remove(&call),
            Some(CallInFlight { answer: None, .. })
        );
        if in_flight {
            let _ = self.queue(&RunnerToHost::Abandon { call }).await;
        }
    }

    /// Call and wait for the answer.
    pub async fn call(&self, to: Address, payload: Vec<u8>, timeout_ms: u64) -> Answer {
        let call = self.start_call(to, payload, timeout_ms).await?;
        loop {
            self.call_ready(call).await;
            if let Some(answer) = self.take_answer(call).await {
                return answer;
            }
        }
    }

    /// Answer a request delivered to the guest.
    ///
    /// # Errors
    ///
    /// [`ReplyError`]: the request was answered already, has ended, or was
    /// never delivered here.
    pub async fn reply(&self, request: RequestId, payload: Vec<u8>) -> Result<(), ReplyError> {
        let refused = {
            let mut calls = self.calls();
            if calls.open.contains(&request) {
                calls.close(request, ReplyError::AlreadyReplied);
                None
            } else {
                let refused = calls.closed.get(&request).copied();
                Some(refused.unwrap_or(ReplyError::UnknownRequest))
            }
        };
        // A late reply still tells the host, which counts it (without its
        // payload: nobody will read it).
        let payload = match refused {
            None => payload,
            Some(ReplyError::Expired) => Vec::new(),
            Some(refused) => return Err(refused),
        };
        let mut payload = Some(payload);
        self.queue_with(
            |batch, ring, taken| {
                let head = RunnerToHost::Reply {
                    request,
                    taken,
                    payload: Vec::new(),
                };
                batch.push_split(&head, payload.take().unwrap_or_default(), ring)
            },
            true,
        )
        .await
        // With the host gone, the caller has gone too.
        .map_err(|_| ReplyError::Expired)?;
        refused.map_or(Ok(()), Err)
    }

    /// The host's answer to a call arrived.
    fn answer(&self, call: u64, answer: Answer) {
        let waiting = {
            let mut calls = self.calls();
            match calls.outgoing.get_mut(&call) {
                Some(outgoing) if outgoing.answer.is_none() => {
                    outgoing.answer = Some(answer);
                    true
                }
                // Given up (past its deadline) before the answer came.
                _ => false,
            }
        };
        if waiting {
            self.answered.notify_waiters();
        }
    }

    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn out(&self) -> MutexGuard<'_, Outgoing> {
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_full(&self, inbox: &Inbox) -> bool {
        inbox.items.len() >= self.limits.inbox_items as usize
            || (!inbox.items.is_empty() && inbox.bytes >= self.limits.inbox_bytes)
    }

    /// The next inbox item, if any.
    pub fn try_recv(&self) -> Option<InboxItem> {
        self.ticker.wake();
        let mut inbox = self.inbox();
        let item = inbox.items.pop_front()?;
        inbox.bytes -= item.payload_len() as u64;
        self.taken.fetch_add(1, Ordering::Relaxed);
        let wake_reader = inbox.reader_waiting && !self.is_full(&inbox);
        if wake_reader {
            inbox.reader_waiting = false;
        }
        drop(inbox);
        if wake_reader {
            self.inbox_space.notify_one();
        }
        Some(item)
    }

    /// Wait for the next inbox item.
    pub async fn recv(&self) -> InboxItem {
        loop {
            // A guest kept busy never waits for its inbox: the host still
            // hears that it is ready, and how far its memory grew. That
            // goes before the take, so that the take itself travels with
            // what the guest does with the item (an answer, say).
            if !self.said_ready.load(Ordering::Relaxed)
                || self.memory.load(Ordering::Relaxed) != self.memory_queued.load(Ordering::Relaxed)
            {
                self.say_ready().await;
            }
            if let Some(item) = self.try_recv() {
                return item;
            }
            self.ready().await;
        }
    }

    /// Tell the host the guest is ready (once), with what it has taken and
    /// its memory size.
    async fn say_ready(&self) {
        if !self.said_ready.swap(true, Ordering::Relaxed) {
            let _ = self.queue(&RunnerToHost::Ready).await;
        } else {
            let _ = self.queue_with(|_, _, _| Ok(()), false).await;
        }
    }

    /// A guest call to the host: yield to the runtime once if the guest has
    /// computed for a tick without doing so (see [`Ticker`]), so that the
    /// I/O loops move what waits in the pipes. (The call wakes the ticker
    /// where it queues or takes something.)
    pub async fn turn(&self) {
        if self.ticker.yield_due() {
            tokio::task::yield_now().await;
        }
    }

    /// Wait until the inbox holds an item, without taking it. Before the
    /// guest waits, the host hears what it has taken so far (and, the first
    /// time, that the guest is ready for work).
    pub async fn ready(&self) {
        self.ticker.yielded();
        if !self.said_ready.load(Ordering::Relaxed) {
            self.say_ready().await;
        }
        if self.inbox().items.is_empty() {
            let _ = self.queue_with(|_, _, _| Ok(()), false).await;
        }
        loop {
            let changed = self.inbox_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut inbox = self.inbox();
                if !inbox.items.is_empty() {
                    return;
                }
                inbox.guest_waiting = true;
            }
            changed.await;
        }
    }

    /// Queue a frame for the host, waiting while the outgoing buffer is full.
    ///
    /// # Errors
    ///
    /// [`QueueError::HostGone`] once writing to the host has failed.
    pub async fn queue(&self, frame: &RunnerToHost) -> Result<(), QueueError> {
        self.queue_with(|batch, _, _| batch.push(frame), false)
            .await
    }

    /// Queue a message for the host (a large payload is not copied).
    ///
    /// # Errors
    ///
    /// [`QueueError::HostGone`] once writing to the host has failed.
    pub async fn queue_send(&self, to: Address, payload: Vec<u8>) -> Result<(), QueueError> {
        let mut to = Some(to);
        let mut payload = Some(payload);
        self.queue_with(
            |batch, ring, taken| {
                let head = RunnerToHost::Send {
                    to: to.take().unwrap_or(Address::Parent),
                    taken,
                    payload: Vec::new(),
                };
                batch.push_split(&head, payload.take().unwrap_or_default(), ring)
            },
            true,
        )
        .await
    }

    /// Queue what `push` adds (given the guest's taken count). Unless the
    /// frame carries that count itself (`carries_taken`, as `Send` does), a
    /// `Taken` frame goes first when the count has moved since it was last
    /// told: the host must know an item was taken before it sees anything
    /// the guest sent after taking it.
    async fn queue_with(
        &self,
        mut push: impl FnMut(&mut Batch, Option<&mut RingWriter>, u64) -> Result<(), FrameError>,
        carries_taken: bool,
    ) -> Result<(), QueueError> {
        self.ticker.wake();
        self.turn().await;
        loop {
            let drained = self.out_drained.notified();
            tokio::pin!(drained);
            {
                let mut out = self.out();
                if out.host_gone {
                    return Err(QueueError::HostGone);
                }
                if out.buf.len() < OUT_HIGH_WATER {
                    // What the guest took goes first: the host must never see
                    // a frame the guest sent after taking an item before it
                    // knows the item was taken.
                    let taken = self.taken.load(Ordering::Relaxed);
                    if !carries_taken
                        && taken != out.reported_taken
                        && out.buf.push(&RunnerToHost::Taken { count: taken }).is_err()
                    {
                        return Err(QueueError::HostGone);
                    }
                    out.reported_taken = taken;
                    let memory = self.memory.load(Ordering::Relaxed);
                    if memory != out.reported_memory
                        && out
                            .buf
                            .push(&RunnerToHost::Memory { bytes: memory })
                            .is_err()
                    {
                        return Err(QueueError::HostGone);
                    }
                    out.reported_memory = memory;
                    self.memory_queued.store(memory, Ordering::Relaxed);
                    // Our frames are within the limit: the guest's payload was
                    // checked against its (smaller) message limit.
                    let Outgoing { buf, ring, .. } = &mut *out;
                    if push(buf, ring.as_mut(), taken).is_err() {
                        return Err(QueueError::HostGone);
                    }
                    if out.buf.is_empty() {
                        return Ok(());
                    }
                    let wake_writer = std::mem::take(&mut out.writer_waiting);
                    drop(out);
                    if wake_writer {
                        self.out_ready.notify_one();
                    }
                    return Ok(());
                }
                drained.as_mut().enable();
                out.sender_waiting = true;
            }
            drained.await;
        }
    }

    /// Wait until every queued frame has been written.
    pub async fn flushed(&self) {
        loop {
            let drained = self.out_drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            {
                let mut out = self.out();
                if out.host_gone || (out.buf.is_empty() && !out.in_flight) {
                    return;
                }
                out.sender_waiting = true;
            }
            drained.await;
        }
    }

    /// The reader loop: move frames from the host into the inbox until the
    /// host closes the pipe, then end the process (the host is gone, and with
    /// it everyone who could use this guest's work).
    pub async fn read_from_host(&self, mut reader: FrameReader<HostToRunner>) -> ! {
        loop {
            loop {
                {
                    let mut inbox = self.inbox();
                    if !self.is_full(&inbox) {
                        break;
                    }
                    // `notify_one` keeps a permit: no wake-up is lost
                    // between here and the wait.
                    inbox.reader_waiting = true;
                }
                self.inbox_space.notified().await;
            }
            match reader.next().await {
                Ok(Some(HostToRunner::Replied { call, payload })) => self.answer(call, Ok(payload)),
                Ok(Some(HostToRunner::CallFailed { call, error })) => self.answer(call, Err(error)),
                Ok(Some(HostToRunner::Expired { request })) => {
                    self.calls().close(request, ReplyError::Expired);
                }
                Ok(Some(HostToRunner::Deliver(item))) => {
                    if let InboxItem::Message {
                        request: Some(request),
                        ..
                    } = &item
                    {
                        self.calls().open.insert(*request);
                    }
                    let mut inbox = self.inbox();
                    inbox.bytes += item.payload_len() as u64;
                    inbox.items.push_back(item);
                    let wake_guest = std::mem::take(&mut inbox.guest_waiting);
                    drop(inbox);
                    if wake_guest {
                        self.inbox_changed.notify_waiters();
                    }
                }
                Ok(Some(HostToRunner::Launch(_))) => out_of_order("a second launch spec"),
                Ok(Some(HostToRunner::Preload { .. })) => {
                    out_of_order("an artifact to preload, after the launch");
                }
                Ok(None) => std::process::exit(EXIT_HOST_GONE),
                Err(err) => {
                    eprintln!("wasmproc-runner: protocol error on the control pipe: {err}");
                    std::process::exit(EXIT_HOST_GONE);
                }
            }
        }
    }

    /// The writer loop: write whatever the guest queued, in one go.
    pub async fn write_to_host(&self, mut writer: FrameWriter) {
        let mut chunk = Batch::default();
        loop {
            let waiting = {
                let mut out = self.out();
                let waiting = out.buf.is_empty() || out.in_flight;
                if waiting {
                    // `notify_one` keeps a permit: no wake-up is lost
                    // between here and the wait.
                    out.writer_waiting = true;
                }
                waiting
            };
            if waiting {
                self.wait_for_frames().await;
                continue;
            }
            // The batch is taken only once the pipe takes bytes: until the
            // runtime's reactor has said so (the pipe's first write, or a
            // full pipe) a guest that computes without waiting would hold
            // a batch taken here, which the ticker must not write; left in
            // place, the ticker writes it.
            if writer.writable().await.is_err() {
                self.written(false);
                return;
            }
            {
                let mut out = self.out();
                if !out.buf.is_empty() && !out.in_flight {
                    std::mem::swap(&mut out.buf, &mut chunk);
                    out.in_flight = true;
                    out.takes += 1;
                }
            }
            if chunk.is_empty() {
                continue;
            }
            let result = writer.write(&mut chunk).await;
            self.written(result.is_ok());
            if result.is_err() {
                return;
            }
        }
    }

    /// Wait until the guest queues frames. While the payload ring holds
    /// pages and the guest queues nothing for [`RING_IDLE`], give them back
    /// once the host has read it all.
    async fn wait_for_frames(&self) {
        let holds_pages = self
            .out()
            .ring
            .as_ref()
            .is_some_and(RingWriter::holds_pages);
        if !holds_pages {
            return self.out_ready.notified().await;
        }
        tokio::select! {
            biased;
            () = self.out_ready.notified() => {}
            () = tokio::time::sleep(RING_IDLE) => {
                // Under the lock: no payload goes in meanwhile.
                if let Some(ring) = self.out().ring.as_mut() {
                    let _ = ring.release_if_drained();
                }
            }
        }
    }

    /// A batch has been written (or failed): let the senders waiting for
    /// room go on, and the writer loop take what the ticker's write held up.
    fn written(&self, ok: bool) {
        let (wake_senders, wake_writer) = {
            let mut out = self.out();
            out.in_flight = false;
            if !ok {
                out.host_gone = true;
            }
            let wake_writer = !out.buf.is_empty() && std::mem::take(&mut out.writer_waiting);
            (std::mem::take(&mut out.sender_waiting), wake_writer)
        };
        if wake_senders {
            self.out_drained.notify_waiters();
        }
        if wake_writer {
            self.out_ready.notify_one();
        }
    }

    /// The ticker's hold on the outgoing buffer, writing to `to_host`.
    pub fn cover(&self, to_host: RawFd) -> Cover<'_> {
        Cover {
            link: self,
            to_host,
            stale: None,
            chunk: Batch::default(),
            taken_seen: [0; TAKE_LAG],
            looked: 0,
        }
    }
}

/// Writes, from the ticker's thread, what a computing guest queued and the
/// runtime (busy running that guest) has not taken for a whole tick; and
/// tells the host what the guest has taken, when nothing else has.
#[derive(Debug)]
pub struct Cover<'a> {
    link: &'a Link,
    to_host: RawFd,
    /// The writer's take count when the ticker last saw output waiting.
    stale: Option<u64>,
    chunk: Batch,
    /// The guest's taken count at each of the last [`TAKE_LAG`] looks,
    /// oldest at `looked % TAKE_LAG`.
    taken_seen: [u64; TAKE_LAG],
    looked: usize,
}

/// How many ticks old a take must be before the ticker tells the host of
/// it. A guest that answers what it takes (an echo, a reply) sends the
/// answer within microseconds, in a frame that carries the take itself:
/// told only of older takes, the host never hears a take alone that is
/// about to be answered, so a runner killed between the take and the answer
/// has its message returned, not taken without an answer. A guest that
/// takes and computes is heard taking within `TAKE_LAG + 1` ticks.
const TAKE_LAG: usize = 5;

impl Cover<'_> {
    /// Look once: write what has waited since the last look. Whether output
    /// is waiting for the runtime or a take is still untold (so the ticker
    /// must look again).
    pub fn tick(&mut self) -> bool {
        {
            let mut out = self.link.out();
            if out.host_gone {
                self.stale = None;
                return false;
            }
            // What the guest took [`TAKE_LAG`] ticks ago reaches the host
            // now, also from a guest that takes without ever sending or
            // finding its inbox empty (the count is read under the lock,
            // as `queue_with` reads it, so frames keep their order; counts
            // only grow, so an older one is never news).
            let taken = self.link.taken.load(Ordering::Relaxed);
            let slot = self.looked % TAKE_LAG;
            let old = std::mem::replace(&mut self.taken_seen[slot], taken);
            self.looked = self.looked.wrapping_add(1);
            if old > out.reported_taken && out.buf.push(&RunnerToHost::Taken { count: old }).is_ok()
            {
                out.reported_taken = old;
                if std::mem::take(&mut out.writer_waiting) {
                    self.link.out_ready.notify_one();
                }
            }
            // A take not yet told keeps the ticker looking.
            let untold = taken > out.reported_taken;
            if out.buf.is_empty() || out.in_flight {
                self.stale = None;
                return untold;
            }
            if self.stale != Some(out.takes) {
                self.stale = Some(out.takes);
                return true;
            }
            std::mem::swap(&mut out.buf, &mut self.chunk);
            out.in_flight = true;
            out.takes += 1;
        }
        self.stale = None;
        let result = self.chunk.write_blocking(self.to_host);
        self.link.written(result.is_ok());
        true
    }
}

/// A frame that only comes before the launch came after it: the host is
/// not the one this runner speaks with.
fn out_of_order(what: &str) -> ! {
    eprintln!("wasmproc-runner: protocol error: {what} from the host");
    std::process::exit(EXIT_HOST_GONE);
}
