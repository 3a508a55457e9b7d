//! A bounded queue of inbox items, the one place where the host holds
//! messages for a guest.
//!
//! It is bounded twice, by items and by payload bytes, so that a guest that
//! never reads cannot grow the host's memory: past the bound, [`try_push`]
//! refuses and the relay tells the sender (`undeliverable`, reason
//! `mailbox full`). Notices about the guest's own sends (undeliverable,
//! down) may use a further headroom of the same size; past that,
//! [`push_notice`] waits, which stops the host reading from that guest —
//! back-pressure on a guest that floods others while not reading its own
//! inbox, and on nobody else.
//!
//! [`try_push`]: Mailbox::try_push
//! [`push_notice`]: Mailbox::push_notice

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use wasmproc_protocol::{GuestId, InboxItem, RequestId};

use super::calls::Answer;
use super::remote::Seq;

/// What the host holds for a guest: inbox items, with a message's payload
/// shared (the members of a broadcast hold one buffer), never copied to be
/// queued; and the answers of the guest's calls, which its runner keeps for
/// the calls rather than in its inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Message {
        from: GuestId,
        from_name: Option<String>,
        /// Set when the message is a call.
        request: Option<RequestId>,
        payload: Bytes,
        /// For a message from a guest of another host: that host's number
        /// for it, to tell it when the message is taken or returned.
        seq: Seq,
    },
    /// Anything else: undeliverable, down, shutdown.
    Notice(InboxItem),
    /// The answer to the guest's call `call`.
    Answer { call: u64, answer: Answer },
    /// A request delivered to the guest has ended unanswered.
    Expired(RequestId),
}

impl Item {
    /// The message bytes the item carries (0 for a notice).
    pub fn payload_len(&self) -> usize {
        match self {
            Item::Message { payload, .. }
            | Item::Answer {
                answer: Ok(payload),
                ..
            } => payload.len(),
            Item::Notice(_) | Item::Answer { .. } | Item::Expired(_) => 0,
        }
    }

    /// The item as the guest's inbox holds it; `None` for what is not an
    /// inbox item (a call's answer, an expiry).
    pub fn into_inbox(self) -> Option<InboxItem> {
        match self {
            // A payload nobody else shares moves over uncopied.
            Item::Message {
                from,
                from_name,
                request,
                payload,
                ..
            } => Some(InboxItem::Message {
                from,
                from_name,
                request,
                payload: Vec::from(payload),
            }),
            Item::Notice(notice) => Some(notice),
            Item::Answer { .. } | Item::Expired(_) => None,
        }
    }
}

impl From<InboxItem> for Item {
    fn from(item: InboxItem) -> Item {
        match item {
            InboxItem::Message {
                from,
                from_name,
                request,
                payload,
            } => Item::Message {
                from,
                from_name,
                request,
                payload: Bytes::from(payload),
                seq: None,
            },
            notice => Item::Notice(notice),
        }
    }
}

/// Items the host holds for one guest.
pub const MAILBOX_ITEMS: usize = 16 * 1024;
/// Payload bytes the host holds for one guest (one message of any allowed
/// size is always accepted into an empty mailbox).
pub const MAILBOX_BYTES: usize = 16 * 1024 * 1024;

/// Message bytes one host may hold in all its guests' mailboxes together
/// (each mailbox has its own bound too): past it, sends are refused with
/// `mailbox full` whoever the recipient is.
pub const HOST_BYTES: usize = 1024 * 1024 * 1024;

/// Message bytes held in all of one host's mailboxes, against a cap.
#[derive(Debug)]
pub struct HostBudget {
    held: AtomicUsize,
    cap: usize,
}

impl HostBudget {
    pub fn new(cap: usize) -> HostBudget {
        HostBudget {
            held: AtomicUsize::new(0),
            cap,
        }
    }

    fn has_room(&self, len: usize) -> bool {
        self.held.load(Ordering::Relaxed).saturating_add(len) <= self.cap
    }
}

/// Why an item was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The mailbox is at its bound.
    Full,
    /// The guest has ended.
    Closed,
    /// The guest's name has moved to a new instance (a swap): messages go
    /// to that one's mailbox.
    Moved,
}

#[derive(Debug)]
pub struct Mailbox {
    state: Mutex<State>,
    /// Wakes the single consumer.
    readable: Notify,
    /// Wakes producers waiting for room.
    writable: Notify,
    max_items: usize,
    max_bytes: usize,
    /// The host's cap over all its mailboxes.
    budget: Arc<HostBudget>,
    /// Set when a sender waited [`push_wait`](Self::push_wait)'s whole time
    /// in vain: the guest is not reading, so later senders are refused at
    /// once instead of waiting too, until it has drained half its mailbox.
    stalled: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Item>,
    bytes: usize,
    closed: bool,
    /// Messages are refused with [`PushError::Moved`]: the name has moved.
    moved: bool,
    /// The most items it has held at once.
    high_water: usize,
    /// Items taken out so far (a proxy's link: how far it has got).
    popped: u64,
}

impl Default for Mailbox {
    fn default() -> Self {
        Mailbox::new(MAILBOX_ITEMS, MAILBOX_BYTES)
    }
}

impl Mailbox {
    pub fn new(max_items: usize, max_bytes: usize) -> Self {
        Mailbox::with_budget(max_items, max_bytes, Arc::new(HostBudget::new(usize::MAX)))
    }

    /// A mailbox whose bytes also count against `budget`.
    pub fn with_budget(max_items: usize, max_bytes: usize, budget: Arc<HostBudget>) -> Self {
        Mailbox {
            budget,
            state: Mutex::new(State::default()),
            readable: Notify::new(),
            writable: Notify::new(),
            max_items,
            max_bytes,
            stalled: AtomicBool::new(false),
        }
    }

    fn has_room(&self, state: &State, len: usize) -> bool {
        state.queue.len() < self.max_items
            && (state.queue.is_empty() || state.bytes + len <= self.max_bytes)
            && self.budget.has_room(len)
    }

    /// Queue a message, waiting up to `patience` for room (back-pressure on
    /// the sender while the recipient catches up). A mailbox whose owner did
    /// not make room within that time is *stalled*: until it drains, sends
    /// to it fail at once.
    ///
    /// # Errors
    ///
    /// [`PushError::Full`] when no room came in time (or the mailbox is
    /// stalled), [`PushError::Closed`] once the guest has ended.
    pub async fn push_wait(
        &self,
        item: impl Into<Item>,
        patience: Duration,
    ) -> Result<(), (PushError, Item)> {
        let item = item.into();
        let deadline = tokio::time::Instant::now() + patience;
        let len = item.payload_len();
        loop {
            let room = self.writable.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut state = self.lock();
                if let Some(refused) = refusal(&state, &item) {
                    return Err((refused, item));
                }
                if self.has_room(&state, len) {
                    self.hold(&mut state, len);
                    state.queue.push_back(item);
                    drop(state);
                    self.readable.notify_one();
                    return Ok(());
                }
                if self.stalled.load(Ordering::Relaxed) {
                    return Err((PushError::Full, item));
                }
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                self.stalled.store(true, Ordering::Relaxed);
                return Err((PushError::Full, item));
            }
        }
    }

    fn hold(&self, state: &mut State, len: usize) {
        // Called before the item is queued: count it in.
        state.high_water = state.high_water.max(state.queue.len() + 1);
        state.bytes += len;
        self.budget.held.fetch_add(len, Ordering::Relaxed);
    }

    fn release(&self, state: &mut State, len: usize) {
        state.bytes -= len;
        self.budget.held.fetch_sub(len, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a message if there is room.
    ///
    /// # Errors
    ///
    /// [`PushError::Full`] at the bound, [`PushError::Closed`] after [`close`](Self::close).
    pub fn try_push(&self, item: impl Into<Item>) -> Result<(), (PushError, Item)> {
        let item = item.into();
        let len = item.payload_len();
        {
            let mut state = self.lock();
            if let Some(refused) = refusal(&state, &item) {
                return Err((refused, item));
            }
            if !self.has_room(&state, len) {
                return Err((PushError::Full, item));
            }
            self.hold(&mut state, len);
            state.queue.push_back(item);
        }
        self.readable.notify_one();
        Ok(())
    }

    /// Queue a notice if the mailbox is within its bound plus the notice
    /// headroom; never waits.
    ///
    /// # Errors
    ///
    /// [`PushError::Full`] past the headroom, [`PushError::Closed`] once the
    /// guest has ended.
    pub fn try_push_notice(&self, item: impl Into<Item>) -> Result<(), PushError> {
        self.queue_notice(item.into()).map_err(|(err, _)| err)
    }

    /// Queue a notice, waiting while the mailbox is past its bound plus the
    /// notice headroom.
    ///
    /// # Errors
    ///
    /// [`PushError::Closed`] once the guest has ended.
    pub async fn push_notice(&self, item: impl Into<Item>) -> Result<(), PushError> {
        let mut item = item.into();
        loop {
            let room = self.writable.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.queue_notice(item) {
                Ok(()) => return Ok(()),
                Err((PushError::Closed | PushError::Moved, _)) => return Err(PushError::Closed),
                Err((PushError::Full, back)) => item = back,
            }
            room.await;
        }
    }

    /// Queue a notice within the headroom, or give it back.
    fn queue_notice(&self, item: Item) -> Result<(), (PushError, Item)> {
        {
            let mut state = self.lock();
            if state.closed {
                return Err((PushError::Closed, item));
            }
            if state.queue.len() >= 2 * self.max_items {
                return Err((PushError::Full, item));
            }
            self.hold(&mut state, item.payload_len());
            state.queue.push_back(item);
        }
        self.readable.notify_one();
        Ok(())
    }

    /// Wait for items and move up to `max_items` of them (and at least one,
    /// however large) into `out`. Returns `false` once the mailbox is closed
    /// and empty.
    pub async fn pop_batch(&self, out: &mut Vec<Item>, max_items: usize, max_bytes: usize) -> bool {
        loop {
            {
                let mut state = self.lock();
                if !state.queue.is_empty() {
                    let mut bytes = 0;
                    while out.len() < max_items {
                        let Some(next) = state.queue.front() else {
                            break;
                        };
                        let len = next.payload_len();
                        if !out.is_empty() && bytes + len > max_bytes {
                            break;
                        }
                        bytes += len;
                        self.release(&mut state, len);
                        out.extend(state.queue.pop_front());
                        state.popped += 1;
                    }
                    if state.queue.len() <= self.max_items / 2 && state.bytes <= self.max_bytes / 2
                    {
                        self.stalled.store(false, Ordering::Relaxed);
                    }
                    drop(state);
                    self.writable.notify_waiters();
                    return true;
                }
                if state.closed {
                    return false;
                }
            }
            self.readable.notified().await;
        }
    }

    /// Wait for the next item; `None` once closed and empty.
    pub async fn pop(&self) -> Option<Item> {
        let mut out = Vec::with_capacity(1);
        if self.pop_batch(&mut out, 1, usize::MAX).await {
            out.pop()
        } else {
            None
        }
    }

    /// The next item if one is queued.
    pub fn try_pop(&self) -> Option<Item> {
        let item = {
            let mut state = self.lock();
            let item = state.queue.pop_front()?;
            self.release(&mut state, item.payload_len());
            state.popped += 1;
            item
        };
        self.writable.notify_waiters();
        Some(item)
    }

    /// From now on refuse messages with [`PushError::Moved`] (notices,
    /// answers and expiries still queue here: they are about this
    /// instance), and give back the messages queued, in order, for the
    /// name's new instance.
    pub fn move_messages(&self) -> Vec<Item> {
        let moved: Vec<Item> = {
            let mut state = self.lock();
            state.moved = true;
            let (messages, kept): (VecDeque<Item>, VecDeque<Item>) =
                std::mem::take(&mut state.queue)
                    .into_iter()
                    .partition(|item| matches!(item, Item::Message { .. }));
            state.queue = kept;
            let len: usize = messages.iter().map(Item::payload_len).sum();
            self.release(&mut state, len);
            messages.into()
        };
        self.writable.notify_waiters();
        moved
    }

    /// Take the messages of a name's previous instance, whatever the
    /// bound (they were admitted once already): ahead of anything else,
    /// or `behind` what is queued (what the name's old host sent on came
    /// first).
    pub fn take_moved(&self, items: Vec<Item>, behind: bool) {
        if items.is_empty() {
            return;
        }
        {
            let mut state = self.lock();
            for item in &items {
                self.hold(&mut state, item.payload_len());
            }
            if behind {
                state.queue.extend(items);
            } else {
                for item in items.into_iter().rev() {
                    state.queue.push_front(item);
                }
            }
            state.high_water = state.high_water.max(state.queue.len());
        }
        self.readable.notify_one();
    }

    /// How many items have been taken out of it so far.
    pub fn popped(&self) -> u64 {
        self.lock().popped
    }

    /// Refuse further items; the consumer still drains what is queued.
    pub fn close(&self) {
        self.lock().closed = true;
        self.readable.notify_one();
        self.writable.notify_waiters();
    }

    /// Drop everything queued and close (the guest is gone: nobody will read).
    /// Returns the messages that were dropped, for undeliverable notices.
    pub fn close_and_drain(&self) -> Vec<Item> {
        let drained: Vec<Item> = {
            let mut state = self.lock();
            state.closed = true;
            let held = state.bytes;
            self.release(&mut state, held);
            state.queue.drain(..).collect()
        };
        self.readable.notify_one();
        self.writable.notify_waiters();
        drained
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// The most items it has held at once.
    pub fn high_water(&self) -> usize {
        self.lock().high_water
    }

    /// Whether nothing is queued.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why `item` may not queue in a mailbox in `state`, if it may not.
fn refusal(state: &State, item: &Item) -> Option<PushError> {
    if state.closed {
        Some(PushError::Closed)
    } else if state.moved && matches!(item, Item::Message { .. }) {
        Some(PushError::Moved)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_mailbox_hands_its_messages_on_and_keeps_its_notices() {
        let old = Mailbox::new(10, 100);
        let new = Mailbox::new(10, 100);
        old.try_push(msg(1)).unwrap();
        old.try_push_notice(InboxItem::Shutdown).unwrap();
        old.try_push(msg(2)).unwrap();
        new.try_push(msg(3)).unwrap();
        let moved = old.move_messages();
        assert_eq!(
            moved.iter().map(Item::payload_len).collect::<Vec<_>>(),
            [1, 2]
        );
        new.take_moved(moved, false);
        assert_eq!(old.try_push(msg(4)).unwrap_err().0, PushError::Moved);
        old.try_push_notice(InboxItem::Shutdown).unwrap();
        assert_eq!(old.len(), 2);
        let lens: Vec<usize> = std::iter::from_fn(|| new.try_pop())
            .map(|i| i.payload_len())
            .collect();
        assert_eq!(lens, [1, 2, 3]);
    }

    #[test]
    fn messages_moved_behind_queue_after_what_is_there_and_pops_are_counted() {
        let old = Mailbox::new(10, 100);
        let new = Mailbox::new(10, 100);
        old.try_push(msg(1)).unwrap();
        old.try_push(msg(2)).unwrap();
        new.try_push(msg(3)).unwrap();
        new.take_moved(old.move_messages(), true);
        assert_eq!(new.high_water(), 3);
        let lens: Vec<usize> = std::iter::from_fn(|| new.try_pop())
            .map(|i| i.payload_len())
            .collect();
        assert_eq!(lens, [3, 1, 2]);
        assert_eq!((old.popped(), new.popped()), (0, 3));
    }

    fn msg(len: usize) -> InboxItem {
        InboxItem::Message {
            from: GuestId(1),
            from_name: None,
            request: None,
            payload: vec![0; len],
        }
    }

    #[tokio::test]
    async fn bounded_by_items_and_bytes() {
        let mb = Mailbox::new(3, 100);
        mb.try_push(msg(60)).unwrap();
        assert_eq!(mb.try_push(msg(60)).unwrap_err().0, PushError::Full);
        mb.try_push(msg(10)).unwrap();
        mb.try_push(msg(10)).unwrap();
        assert_eq!(mb.try_push(msg(0)).unwrap_err().0, PushError::Full);
        let mut out = Vec::new();
        assert!(mb.pop_batch(&mut out, 10, 1000).await);
        assert_eq!(out.len(), 3);
        // An empty mailbox takes one message of any size.
        mb.try_push(msg(500)).unwrap();
    }

    #[test]
    fn the_host_budget_bounds_every_mailbox_together() {
        let budget = Arc::new(HostBudget::new(150));
        let a = Mailbox::with_budget(10, 100, budget.clone());
        let b = Mailbox::with_budget(10, 100, budget.clone());
        a.try_push(msg(100)).unwrap();
        // `b` is empty, but the host holds 100 of its 150 bytes.
        assert_eq!(b.try_push(msg(60)).unwrap_err().0, PushError::Full);
        b.try_push(msg(50)).unwrap();
        assert_eq!(budget.held.load(Ordering::Relaxed), 150);
        // Notices carry no payload and still fit.
        b.try_push_notice(InboxItem::Shutdown).unwrap();
        assert!(a.try_pop().is_some());
        drop(b.close_and_drain());
        assert_eq!(budget.held.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn notices_use_headroom_then_wait() {
        let mb = std::sync::Arc::new(Mailbox::new(1, 100));
        mb.try_push(msg(1)).unwrap();
        mb.push_notice(InboxItem::Shutdown).await.unwrap();
        let waiting = tokio::spawn({
            let mb = mb.clone();
            async move { mb.push_notice(InboxItem::Shutdown).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert!(mb.try_pop().is_some());
        waiting.await.unwrap().unwrap();
        assert_eq!(mb.len(), 2);
    }

    #[tokio::test]
    async fn a_full_mailbox_holds_the_sender_then_stalls_until_drained() {
        let mb = std::sync::Arc::new(Mailbox::new(2, 100));
        mb.try_push(msg(1)).unwrap();
        mb.try_push(msg(1)).unwrap();
        // Room comes while the sender waits: delivered.
        let waiting = tokio::spawn({
            let mb = mb.clone();
            async move {
                mb.push_wait(msg(1), Duration::from_secs(5))
                    .await
                    .map_err(|e| e.0)
            }
        });
        tokio::task::yield_now().await;
        assert!(mb.try_pop().is_some());
        waiting.await.unwrap().unwrap();
        // No room in time: refused, and from then on refused at once.
        let err = mb
            .push_wait(msg(1), Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(err.0, PushError::Full);
        let started = std::time::Instant::now();
        let err = mb
            .push_wait(msg(1), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err.0, PushError::Full);
        assert!(started.elapsed() < Duration::from_secs(1));
        // Drained to half: senders may wait again.
        let mut out = Vec::new();
        assert!(mb.pop_batch(&mut out, 1, 100).await);
        assert!(mb.pop_batch(&mut out, 1, 100).await);
        mb.push_wait(msg(1), Duration::from_secs(5)).await.unwrap();
    }

    #[tokio::test]
    async fn closed_mailbox_drains_then_ends() {
        let mb = Mailbox::new(4, 100);
        mb.try_push(msg(1)).unwrap();
        mb.close();
        assert_eq!(mb.try_push(msg(1)).unwrap_err().0, PushError::Closed);
        assert!(mb.pop().await.is_some());
        assert!(mb.pop().await.is_none());
    }
}
