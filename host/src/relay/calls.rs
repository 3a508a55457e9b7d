//! Calls in flight: who called whom, from the request until its answer.
//!
//! The host owns the correlation. Every call gets a fresh [`RequestId`]
//! from a counter, recorded here with its caller and its callee; the callee
//! sees only the id. A reply is accepted from the callee alone, once, while
//! the call is open; whoever takes a call out of the table (the reply, the
//! deadline, the callee's end, the caller giving up) is the one that
//! answers it, so a caller hears exactly once. How recent calls ended is
//! remembered for a while, to tell a late or second reply (`expired`,
//! `already-replied`) from a forged one (`unknown-request`).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use wasmproc_protocol::contract::MAX_NAME_LEN;
use wasmproc_protocol::{Address, CallError, GuestId, MAX_CALLS_IN_FLIGHT, ReplyError, RequestId};

use super::{Entry, Item, MAILBOX_PATIENCE, PushError, Relay, policy, push_to, resolve};

/// How many ended calls are remembered, to answer late and second replies
/// precisely (older ones get `unknown-request`).
const REMEMBERED: usize = 16 * 1024;

/// What a call's answer is: the reply, or why there is none.
pub(crate) type Answer = Result<Bytes, CallError>;

/// Who waits for a call's answer.
#[derive(Debug)]
pub(crate) enum Caller {
    /// A guest, which numbered the call itself.
    Guest { id: GuestId, call: u64 },
    /// The parent, awaiting the answer in [`Host::call`](crate::Host::call).
    Parent(oneshot::Sender<Answer>),
}

/// A call that has ended, taken out of the table: the one holding it answers.
#[derive(Debug)]
pub(crate) struct Ended {
    pub(crate) request: RequestId,
    pub(crate) caller: Caller,
    pub(crate) callee: GuestId,
}

/// What a reply to a request met.
#[derive(Debug)]
pub(crate) enum Replied {
    /// The call was open: deliver the reply to its caller.
    Open(Ended),
    /// The call had ended, or the request is unknown: nothing is delivered.
    Refused(ReplyError),
    /// The request is open but was delivered to another guest: only a
    /// runner that invents ids sends this.
    Forged,
}

#[derive(Debug)]
struct Open {
    caller: Caller,
    callee: GuestId,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    Replied,
    Expired,
}

#[derive(Debug, Default)]
struct Table {
    open: HashMap<RequestId, Open>,
    /// A guest caller's open calls, by its own number for them.
    by_caller: HashMap<GuestId, HashMap<u64, RequestId>>,
    /// The open calls each callee (the parent too) is to answer.
    by_callee: HashMap<GuestId, HashSet<RequestId>>,
    /// Calls from the parent in flight.
    parent_calls: usize,
    /// Every open call's deadline, soonest first.
    deadlines: BTreeSet<(Instant, RequestId)>,
    /// How recent calls ended, with their callee; oldest first in `order`.
    closed: HashMap<RequestId, (GuestId, Closed)>,
    order: VecDeque<RequestId>,
}

impl Table {
    /// Take the call out of the table, remembering how it ended.
    fn close(&mut self, request: RequestId, how: Closed) -> Option<Ended> {
        let open = self.open.remove(&request)?;
        match &open.caller {
            Caller::Guest { id, call } => {
                if let Some(calls) = self.by_caller.get_mut(id) {
                    calls.remove(call);
                    if calls.is_empty() {
                        self.by_caller.remove(id);
                    }
                }
            }
            Caller::Parent(_) => self.parent_calls -= 1,
        }
        if let Some(requests) = self.by_callee.get_mut(&open.callee) {
            requests.remove(&request);
            if requests.is_empty() {
                self.by_callee.remove(&open.callee);
            }
        }
        self.deadlines.remove(&(open.deadline, request));
        self.closed.insert(request, (open.callee, how));
        self.order.push_back(request);
        if self.order.len() > REMEMBERED
            && let Some(oldest) = self.order.pop_front()
        {
            self.closed.remove(&oldest);
        }
        Some(Ended {
            request,
            caller: open.caller,
            callee: open.callee,
        })
    }
}

/// The calls of one relay.
///
/// One task per relay ends calls at their deadlines: it sleeps until the
/// soonest, and is woken only when a new call's deadline is sooner still
/// (calls with one timeout come in deadline order, so almost never): a call
/// costs no timer of its own.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    table: Mutex<Table>,
    next: AtomicU64,
    late_replies: AtomicU64,
    /// Wakes the deadline task when the soonest deadline moved earlier.
    sooner: Arc<Notify>,
    /// Whether the deadline task has been started.
    watching: AtomicBool,
}

impl Calls {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record a new call from `caller` to `callee`, due at `deadline`, and
    /// give it its id; wake the deadline task if it is now the soonest.
    ///
    /// # Errors
    ///
    /// [`CallError::TooManyCalls`] when the caller has
    /// [`MAX_CALLS_IN_FLIGHT`] calls open already.
    pub(crate) fn open(
        &self,
        caller: Caller,
        callee: GuestId,
        deadline: Instant,
    ) -> Result<RequestId, CallError> {
        let mut table = self.lock();
        let request = RequestId(self.next.fetch_add(1, Ordering::Relaxed) + 1);
        match &caller {
            Caller::Guest { id, call } => {
                let calls = table.by_caller.entry(*id).or_default();
                if calls.len() >= MAX_CALLS_IN_FLIGHT {
                    return Err(CallError::TooManyCalls);
                }
                calls.insert(*call, request);
            }
            Caller::Parent(_) => {
                if table.parent_calls >= MAX_CALLS_IN_FLIGHT {
                    return Err(CallError::TooManyCalls);
                }
                table.parent_calls += 1;
            }
        }
        table.by_callee.entry(callee).or_default().insert(request);
        let soonest = table
            .deadlines
            .first()
            .is_none_or(|(first, _)| deadline < *first);
        table.deadlines.insert((deadline, request));
        table.open.insert(
            request,
            Open {
                caller,
                callee,
                deadline,
            },
        );
        drop(table);
        if soonest {
            self.sooner.notify_one();
        }
        Ok(request)
    }

    /// The open calls whose deadline has come, and the next deadline after.
    fn due(&self, now: Instant) -> (Vec<RequestId>, Option<Instant>) {
        let table = self.lock();
        let mut due = Vec::new();
        for (deadline, request) in &table.deadlines {
            if *deadline > now {
                return (due, Some(*deadline));
            }
            due.push(*request);
        }
        (due, None)
    }

    /// The open call `request` now awaits `new`'s reply instead of `old`'s
    /// (its request moved in a swap).
    pub(crate) fn repoint(&self, request: RequestId, old: GuestId, new: GuestId) {
        let mut table = self.lock();
        match table.open.get_mut(&request) {
            Some(open) if open.callee == old => open.callee = new,
            _ => return,
        }
        if let Some(requests) = table.by_callee.get_mut(&old) {
            requests.remove(&request);
            if requests.is_empty() {
                table.by_callee.remove(&old);
            }
        }
        table.by_callee.entry(new).or_default().insert(request);
    }

    /// When the open call `request` is due.
    pub(crate) fn deadline_of(&self, request: RequestId) -> Option<Instant> {
        self.lock().open.get(&request).map(|open| open.deadline)
    }

    /// Whether the call is still waiting for its answer.
    pub(crate) fn is_open(&self, request: RequestId) -> bool {
        self.lock().open.contains_key(&request)
    }

    /// End a call without a reply (deadline, failed delivery): the caller
    /// of the returned call is to be told why.
    pub(crate) fn expire(&self, request: RequestId) -> Option<Ended> {
        self.lock().close(request, Closed::Expired)
    }

    /// The caller gives its call `call` up.
    pub(crate) fn abandon(&self, caller: GuestId, call: u64) -> Option<Ended> {
        let mut table = self.lock();
        let request = *table.by_caller.get(&caller)?.get(&call)?;
        table.close(request, Closed::Expired)
    }

    /// `replier` answers `request`.
    pub(crate) fn reply(&self, replier: GuestId, request: RequestId) -> Replied {
        let mut table = self.lock();
        match table.open.get(&request) {
            Some(open) if open.callee == replier => {
                let ended = table.close(request, Closed::Replied);
                ended.map_or(Replied::Refused(ReplyError::UnknownRequest), Replied::Open)
            }
            Some(_) => Replied::Forged,
            None => {
                let refused = match table.closed.get(&request) {
                    Some((callee, Closed::Replied)) if *callee == replier => {
                        ReplyError::AlreadyReplied
                    }
                    Some((callee, Closed::Expired)) if *callee == replier => ReplyError::Expired,
                    _ => ReplyError::UnknownRequest,
                };
                drop(table);
                if refused == ReplyError::Expired {
                    self.late_replies.fetch_add(1, Ordering::Relaxed);
                }
                Replied::Refused(refused)
            }
        }
    }

    /// Count a reply that reached the host after its call had ended (the
    /// replier's runner had not heard of the end yet).
    pub(crate) fn count_late(&self) {
        self.late_replies.fetch_add(1, Ordering::Relaxed);
    }

    /// Replies that came after their call had ended, in all.
    pub(crate) fn late_replies(&self) -> u64 {
        self.late_replies.load(Ordering::Relaxed)
    }

    /// The guest `id` has ended: the calls it was to answer (their callers
    /// get `callee exited`), and the calls it made (their callees' replies
    /// are now late).
    pub(crate) fn guest_ended(&self, id: GuestId) -> (Vec<Ended>, Vec<Ended>) {
        let mut table = self.lock();
        let to_answer: Vec<RequestId> = table
            .by_callee
            .get(&id)
            .map(|requests| requests.iter().copied().collect())
            .unwrap_or_default();
        let made: Vec<RequestId> = table
            .by_caller
            .get(&id)
            .map(|calls| calls.values().copied().collect())
            .unwrap_or_default();
        let mut sorted = |requests: Vec<RequestId>| {
            let mut ended: Vec<Ended> = requests
                .into_iter()
                .filter_map(|r| table.close(r, Closed::Expired))
                .collect();
            ended.sort_by_key(|e| e.request);
            ended
        };
        let to_answer = sorted(to_answer);
        let made = sorted(made);
        (to_answer, made)
    }

    /// The open calls guest `id` is to answer, and those it made.
    pub(crate) fn pending_for(&self, id: GuestId) -> (usize, usize) {
        let table = self.lock();
        (
            table.by_callee.get(&id).map_or(0, HashSet::len),
            table.by_caller.get(&id).map_or(0, HashMap::len),
        )
    }

    /// Calls open now, for tests and metrics.
    pub(crate) fn len(&self) -> usize {
        self.lock().open.len()
    }

    /// Who is waiting on `request`'s answer, if it is open.
    #[cfg(test)]
    fn caller_of(&self, request: RequestId) -> Option<GuestId> {
        self.lock().open.get(&request).map(|o| match o.caller {
            Caller::Guest { id, .. } => id,
            Caller::Parent(_) => GuestId::PARENT,
        })
    }
}

/// Whom a call goes to.
enum Callee {
    /// The caller's parent (its `parent_inbox`).
    Parent,
    Guest(Arc<Entry>),
}

/// A reply named a request that was delivered to another guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Forged;

impl Relay {
    /// Place guest `from`'s call number `call` to `to`, waiting at most
    /// `patience` for room in a full mailbox ([`MAILBOX_PATIENCE`] for a
    /// guest of this host; what is left of its letter's for one of another
    /// host). What is not known at once arrives later in its mailbox, as an
    /// [`Item::Answer`].
    ///
    /// # Errors
    ///
    /// Why the call could not be placed: the caller is to be told at once.
    pub(crate) async fn call_from_guest(
        &self,
        from: &Arc<Entry>,
        to: &Address,
        call: u64,
        timeout: Duration,
        payload: Vec<u8>,
        patience: Duration,
    ) -> Result<(), CallError> {
        let caller = Caller::Guest { id: from.id, call };
        let payload = Bytes::from(payload);
        self.place(caller, Some(from), to, (timeout, patience), payload)
            .await
    }

    /// Call `to` from the parent and wait for the answer.
    pub(crate) async fn call_from_parent(
        &self,
        to: &Address,
        timeout: Duration,
        payload: Vec<u8>,
    ) -> Answer {
        let (answer, answered) = oneshot::channel();
        self.place(
            Caller::Parent(answer),
            None,
            to,
            (timeout, MAILBOX_PATIENCE),
            Bytes::from(payload),
        )
        .await?;
        answered.await.unwrap_or(Err(CallError::HostGone))
    }

    /// Place a call of `timeout`, waiting at most `patience` for room.
    async fn place(
        &self,
        caller: Caller,
        from: Option<&Arc<Entry>>,
        to: &Address,
        (timeout, patience): (Duration, Duration),
        payload: Bytes,
    ) -> Result<(), CallError> {
        if timeout.is_zero() {
            return Err(CallError::InvalidTimeout);
        }
        let callee = self.find_callee(from.map(|f| &**f), to)?;
        let callee_id = match (&callee, from) {
            (Callee::Guest(entry), _) => {
                if payload.len() as u64 > entry.max_message_size {
                    return Err(CallError::TooLarge);
                }
                entry.id
            }
            (Callee::Parent, Some(_)) => GuestId::PARENT,
            (Callee::Parent, None) => return Err(CallError::UnknownRecipient),
        };
        self.watch_deadlines();
        let deadline = Instant::now() + timeout;
        let request = self.inner.calls.open(caller, callee_id, deadline)?;
        let (from_id, from_name) = match from {
            Some(from) => (from.id, from.name.clone()),
            None => (GuestId::PARENT, Some("parent".to_owned())),
        };
        let item = Item::Message {
            from: from_id,
            from_name,
            request: Some(request),
            payload,
            seq: None,
        };
        let pushed = match (&callee, from) {
            (Callee::Guest(entry), _) => {
                let (took, pushed) = push_to(entry, item);
                if took.id != entry.id {
                    // The name moved on (a swap): the new instance answers.
                    self.inner.calls.repoint(request, entry.id, took.id);
                }
                match pushed {
                    // No patience left: full, without waiting.
                    Err((PushError::Full, item)) if patience.is_zero() => {
                        Err((PushError::Full, item))
                    }
                    Err((PushError::Full, item)) => took.mailbox.push_wait(item, patience).await,
                    other => other,
                }
            }
            (Callee::Parent, Some(from)) => match from.parent_inbox.try_push(item) {
                Err((PushError::Full, item)) if patience.is_zero() => Err((PushError::Full, item)),
                Err((PushError::Full, item)) => from.parent_inbox.push_wait(item, patience).await,
                other => other,
            },
            (Callee::Parent, None) => Err((PushError::Closed, item)),
        };
        let error = match pushed {
            Ok(()) => return Ok(()),
            Err((PushError::Full, _)) => CallError::MailboxFull,
            Err((PushError::Closed | PushError::Moved, _)) => {
                CallError::CalleeExited("it was exiting when the call came".to_owned())
            }
        };
        // Whoever takes a call out of the table answers it: here, unless the
        // callee's end or the deadline came first and answered it already.
        match self.inner.calls.expire(request) {
            Some(_) => Err(error),
            None => Ok(()),
        }
    }

    /// Start the task that ends calls at their deadline, once per relay. It
    /// holds the relay weakly: it ends when the relay is gone.
    fn watch_deadlines(&self) {
        if self.inner.calls.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        let relay = Arc::downgrade(&self.inner);
        let sooner = self.inner.calls.sooner.clone();
        tokio::spawn(async move {
            loop {
                let next = {
                    let Some(inner) = relay.upgrade() else { return };
                    let relay = Relay { inner };
                    let (due, next) = relay.inner.calls.due(Instant::now());
                    for request in due {
                        relay.end_call(request, CallError::Timeout);
                    }
                    next
                };
                match next {
                    Some(next) => tokio::select! {
                        () = tokio::time::sleep_until(next) => {}
                        () = sooner.notified() => {}
                    },
                    None => sooner.notified().await,
                }
            }
        });
    }

    /// The one guest (or the parent) a call to `to` from `from` goes to.
    fn find_callee(&self, from: Option<&Entry>, to: &Address) -> Result<Callee, CallError> {
        match to {
            Address::Broadcast(_) => return Err(CallError::NotAllowed),
            Address::Parent => return Ok(Callee::Parent),
            Address::Name(name) | Address::Group(name) if name.len() > MAX_NAME_LEN => {
                return Err(CallError::UnknownRecipient);
            }
            _ => {}
        }
        let table = self.read();
        let targets = resolve(&table, to);
        if let Some(from) = from
            && !policy::allows(from, to, &targets)
        {
            drop(table);
            self.inner.refusals.refuse(from, to);
            return Err(CallError::NotAllowed);
        }
        match targets.into_iter().next() {
            Some(target) => Ok(Callee::Guest(target)),
            None => Err(match self.ended(&table, to) {
                Some(reason) => CallError::CalleeExited(reason),
                None => CallError::UnknownRecipient,
            }),
        }
    }

    /// End a call without its reply, if it is still open: its caller hears
    /// `error`, and its callee that a reply is now late.
    pub(super) fn end_call(&self, request: RequestId, error: CallError) {
        if let Some(ended) = self.inner.calls.expire(request) {
            self.tell_callee(&ended);
            self.answer(ended.caller, Err(error));
        }
    }

    /// Tell a guest callee that its request has ended unanswered, so that
    /// its runner refuses a reply as `expired` at once.
    fn tell_callee(&self, ended: &Ended) {
        if let Some(callee) = self.entry(ended.callee) {
            self.notify(&callee.mailbox, Item::Expired(ended.request));
        }
    }

    /// Give a call's answer to its caller. Never waits: a guest whose
    /// mailbox has no room for the reply hears `mailbox full` (in the
    /// notice headroom) instead.
    pub(super) fn answer(&self, caller: Caller, answer: Answer) {
        let (id, call) = match caller {
            Caller::Parent(waiting) => {
                let _ = waiting.send(answer);
                return;
            }
            Caller::Guest { id, call } => (id, call),
        };
        // A caller that has ended needs no answer.
        let Some(entry) = self.entry(id) else { return };
        let answer = match answer {
            Ok(reply) if reply.len() as u64 > entry.max_message_size => Err(CallError::TooLarge),
            other => other,
        };
        if answer.is_ok() {
            match entry.mailbox.try_push(Item::Answer { call, answer }) {
                Err((PushError::Full, _)) => {}
                _ => return,
            }
            self.notify(
                &entry.mailbox,
                Item::Answer {
                    call,
                    answer: Err(CallError::MailboxFull),
                },
            );
        } else {
            self.notify(&entry.mailbox, Item::Answer { call, answer });
        }
    }

    /// Guest `from` answers `request`. A reply that reaches nobody (the
    /// call has ended) is counted as late; the guest's runner has told it.
    ///
    /// # Errors
    ///
    /// [`Forged`] when the request was delivered to another guest.
    pub(crate) fn reply_from_guest(
        &self,
        from: &Entry,
        request: RequestId,
        payload: Vec<u8>,
    ) -> Result<(), Forged> {
        match self.inner.calls.reply(from.id, request) {
            Replied::Open(ended) => self.answer(ended.caller, Ok(Bytes::from(payload))),
            // Counted already; a record forgotten since counts the same.
            Replied::Refused(ReplyError::Expired) => {}
            Replied::Refused(_) => self.inner.calls.count_late(),
            Replied::Forged => return Err(Forged),
        }
        Ok(())
    }

    /// The parent answers `request`, a call a guest made to it.
    ///
    /// # Errors
    ///
    /// Why nothing was sent: the call has ended, was answered, or is not
    /// one made to the parent.
    pub(crate) fn reply_from_parent(
        &self,
        request: RequestId,
        payload: Vec<u8>,
    ) -> Result<(), ReplyError> {
        match self.inner.calls.reply(GuestId::PARENT, request) {
            Replied::Open(ended) => {
                self.answer(ended.caller, Ok(Bytes::from(payload)));
                Ok(())
            }
            Replied::Refused(error) => Err(error),
            Replied::Forged => Err(ReplyError::UnknownRequest),
        }
    }

    /// Guest `caller` gives its call `call` up.
    pub(crate) fn abandon(&self, caller: &Entry, call: u64) {
        if let Some(ended) = self.inner.calls.abandon(caller.id, call) {
            self.tell_callee(&ended);
        }
    }

    /// Whether `request` still waits for its answer (a request whose call
    /// has ended is not delivered).
    pub(crate) fn call_is_open(&self, request: RequestId) -> bool {
        self.inner.calls.is_open(request)
    }

    /// Replies that reached nobody because their call had ended, in all.
    pub(crate) fn late_replies(&self) -> u64 {
        self.inner.calls.late_replies()
    }

    /// The open calls guest `id` is to answer, and those it made.
    pub(crate) fn calls_pending_for(&self, id: GuestId) -> (usize, usize) {
        self.inner.calls.pending_for(id)
    }

    /// Calls waiting for their answer now.
    pub(crate) fn calls_open(&self) -> usize {
        self.inner.calls.len()
    }

    /// Guest `id` has ended for `reason`: the calls it was to answer fail
    /// with `callee exited` and the reason; the calls it made end.
    pub(super) fn calls_ended_with(&self, id: GuestId, reason: &str) {
        let (owed, made) = self.inner.calls.guest_ended(id);
        for ended in owed {
            self.answer(
                ended.caller,
                Err(CallError::CalleeExited(reason.to_owned())),
            );
        }
        for ended in &made {
            self.tell_callee(ended);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    fn guest(id: u64, call: u64) -> Caller {
        Caller::Guest {
            id: GuestId(id),
            call,
        }
    }

    #[test]
    fn a_reply_is_taken_once_from_the_callee_only() {
        let calls = Calls::default();
        let r = calls.open(guest(1, 7), GuestId(2), later()).unwrap();
        assert_eq!(calls.caller_of(r), Some(GuestId(1)));
        assert!(matches!(calls.reply(GuestId(3), r), Replied::Forged));
        let Replied::Open(ended) = calls.reply(GuestId(2), r) else {
            panic!("the callee's reply was refused");
        };
        assert!(matches!(
            ended.caller,
            Caller::Guest {
                id: GuestId(1),
                call: 7
            }
        ));
        assert!(matches!(
            calls.reply(GuestId(2), r),
            Replied::Refused(ReplyError::AlreadyReplied)
        ));
        // Nobody else learns the request existed.
        assert!(matches!(
            calls.reply(GuestId(3), r),
            Replied::Refused(ReplyError::UnknownRequest)
        ));
        assert!(matches!(
            calls.reply(GuestId(2), RequestId(999)),
            Replied::Refused(ReplyError::UnknownRequest)
        ));
        assert_eq!(calls.len(), 0);
        assert_eq!(calls.late_replies(), 0);
    }

    #[test]
    fn an_expired_or_abandoned_call_refuses_its_reply_as_late() {
        let calls = Calls::default();
        let timed_out = calls.open(guest(1, 1), GuestId(2), later()).unwrap();
        let given_up = calls.open(guest(1, 2), GuestId(2), later()).unwrap();
        assert!(calls.expire(timed_out).is_some());
        assert!(calls.expire(timed_out).is_none(), "answered once");
        assert_eq!(calls.abandon(GuestId(1), 2).unwrap().request, given_up);
        for r in [timed_out, given_up] {
            assert!(matches!(
                calls.reply(GuestId(2), r),
                Replied::Refused(ReplyError::Expired)
            ));
        }
        assert_eq!(calls.late_replies(), 2);
    }

    #[test]
    fn a_guests_end_ends_what_it_owed_and_what_it_asked() {
        let calls = Calls::default();
        let owed = calls.open(guest(1, 1), GuestId(2), later()).unwrap();
        let asked = calls.open(guest(2, 1), GuestId(3), later()).unwrap();
        let other = calls.open(guest(1, 2), GuestId(3), later()).unwrap();
        let (to_answer, made) = calls.guest_ended(GuestId(2));
        assert_eq!(
            to_answer.iter().map(|e| e.request).collect::<Vec<_>>(),
            [owed]
        );
        assert_eq!(made.iter().map(|e| e.request).collect::<Vec<_>>(), [asked]);
        assert!(calls.is_open(other));
        assert_eq!(calls.len(), 1);
    }

    #[test]
    fn deadlines_come_due_soonest_first_and_leave_with_their_call() {
        let calls = Calls::default();
        let now = Instant::now();
        let at = |ms| now + Duration::from_millis(ms);
        let late = calls.open(guest(1, 1), GuestId(2), at(300)).unwrap();
        let soon = calls.open(guest(1, 2), GuestId(2), at(100)).unwrap();
        let answered = calls.open(guest(1, 3), GuestId(2), at(200)).unwrap();
        assert!(matches!(
            calls.reply(GuestId(2), answered),
            Replied::Open(_)
        ));
        assert_eq!(calls.due(at(50)), (vec![], Some(at(100))));
        assert_eq!(calls.due(at(250)), (vec![soon], Some(at(300))));
        calls.expire(soon);
        assert_eq!(calls.due(at(400)), (vec![late], None));
    }

    #[test]
    fn a_caller_has_at_most_so_many_calls_in_flight() {
        let calls = Calls::default();
        for call in 0..MAX_CALLS_IN_FLIGHT as u64 {
            calls.open(guest(1, call), GuestId(2), later()).unwrap();
        }
        assert_eq!(
            calls
                .open(guest(1, u64::MAX), GuestId(2), later())
                .unwrap_err(),
            CallError::TooManyCalls
        );
        // Others are not held back by it.
        calls.open(guest(3, 0), GuestId(2), later()).unwrap();
    }
}
