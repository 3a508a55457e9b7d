//! One future that drives the guest and the runner's two I/O loops.
//!
//! Run as separate tasks, a message arriving costs the runner an extra trip
//! through its event loop: the reader task wakes the guest, and waking the
//! runtime's main future makes tokio poll the driver once more before it
//! polls that future. [`Drive`] polls its branches itself instead: a branch
//! woken by another branch while [`Drive`] is being polled (the reader
//! handing the guest a message, the guest handing the writer a frame) is
//! polled again at once, in the same turn. Only a branch that wakes itself
//! (the guest yielding in an `ipc` call once a tick, a budget running out) and wakes
//! from outside (the pipes, timers) go through the runtime, so a computing
//! guest still lets the runtime poll the pipes at every yield.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// A branch's future.
pub type Branch = Pin<Box<dyn Future<Output = ()> + Send>>;

/// No branch is being polled.
const NONE: usize = usize::MAX;

/// Shared by [`Drive`] and its branches' wakers.
#[derive(Debug)]
struct Shared {
    /// The branch being polled, or [`NONE`] outside [`Drive::poll`].
    polling: AtomicUsize,
    /// The waker of the task polling [`Drive`].
    outer: Mutex<Option<Waker>>,
}

/// One branch's waker.
#[derive(Debug)]
struct BranchWaker {
    index: usize,
    ready: AtomicBool,
    /// Woke itself while being polled: a yield, handled by the runtime.
    yielded: AtomicBool,
    shared: Arc<Shared>,
}

impl Wake for BranchWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.store(true, Ordering::Release);
        let polling = self.shared.polling.load(Ordering::Acquire);
        if polling == self.index {
            self.yielded.store(true, Ordering::Release);
        }
        if polling == NONE || polling == self.index {
            let outer = self
                .shared
                .outer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(outer) = outer {
                outer.wake();
            }
        }
        // Woken by another branch during Drive::poll: polled again there.
    }
}

/// Drives its branches; never finishes (the runner exits from a branch).
pub struct Drive {
    /// Each branch, its waker, and whether it has finished.
    branches: Vec<(Branch, Arc<BranchWaker>, Waker, bool)>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Drive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drive")
            .field("branches", &self.branches.len())
            .finish()
    }
}

impl Drive {
    pub fn new(futures: Vec<Branch>) -> Drive {
        let shared = Arc::new(Shared {
            polling: AtomicUsize::new(NONE),
            outer: Mutex::new(None),
        });
        let branches = futures
            .into_iter()
            .enumerate()
            .map(|(index, future)| {
                let waker = Arc::new(BranchWaker {
                    index,
                    ready: AtomicBool::new(true),
                    yielded: AtomicBool::new(false),
                    shared: shared.clone(),
                });
                let as_waker = Waker::from(waker.clone());
                (future, waker, as_waker, false)
            })
            .collect();
        Drive { branches, shared }
    }
}

impl Future for Drive {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        {
            let mut outer = this.shared.outer.lock().unwrap_or_else(|e| e.into_inner());
            if !outer.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *outer = Some(cx.waker().clone());
            }
        }
        loop {
            let mut polled_any = false;
            for (index, (future, state, waker, done)) in this.branches.iter_mut().enumerate() {
                // A branch that yielded waits for the next turn of the runtime.
                if *done
                    || state.yielded.load(Ordering::Acquire)
                    || !state.ready.swap(false, Ordering::AcqRel)
                {
                    continue;
                }
                polled_any = true;
                this.shared.polling.store(index, Ordering::Release);
                *done = future
                    .as_mut()
                    .poll(&mut Context::from_waker(waker))
                    .is_ready();
                this.shared.polling.store(NONE, Ordering::Release);
            }
            if !polled_any {
                break;
            }
        }
        // Yields were woken through the outer waker already: the runtime
        // polls the pipes, then this future, which polls them again.
        for (_, state, _, _) in &this.branches {
            state.yielded.store(false, Ordering::Release);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    /// Counts the wakes it gets.
    #[derive(Default)]
    struct Outer(AtomicU32);

    impl Wake for Outer {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A branch that counts its polls and runs `step` on each.
    fn branch(
        polls: Arc<AtomicU32>,
        mut step: impl FnMut(u32, &mut Context<'_>) + Send + 'static,
    ) -> Branch {
        Box::pin(std::future::poll_fn(move |cx| {
            let n = polls.fetch_add(1, Ordering::SeqCst) + 1;
            step(n, cx);
            Poll::Pending
        }))
    }

    fn poll_once(drive: &mut Drive, outer: &Arc<Outer>) {
        let waker = Waker::from(outer.clone());
        assert!(
            Pin::new(drive)
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
    }

    #[test]
    fn a_branch_woken_by_another_runs_again_in_the_same_poll() {
        let (a, b) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let b_waker: Arc<Mutex<Option<Waker>>> = Arc::default();
        let (b_waker_for_a, b_waker_for_b) = (b_waker.clone(), b_waker.clone());
        let mut drive = Drive::new(vec![
            // Branch 0 hands branch 1 something on its second poll.
            branch(a.clone(), move |n, cx| {
                if n == 1 {
                    cx.waker().wake_by_ref();
                } else if let Some(w) = b_waker_for_a.lock().unwrap().take() {
                    w.wake();
                }
            }),
            branch(b.clone(), move |_, cx| {
                *b_waker_for_b.lock().unwrap() = Some(cx.waker().clone());
            }),
        ]);
        let outer = Arc::new(Outer::default());
        poll_once(&mut drive, &outer);
        // Branch 0 yielded (woke itself): once per poll, through the runtime.
        assert_eq!(a.load(Ordering::SeqCst), 1);
        assert_eq!(b.load(Ordering::SeqCst), 1);
        assert_eq!(outer.0.load(Ordering::SeqCst), 1);
        poll_once(&mut drive, &outer);
        // Branch 0 woke branch 1 without the runtime: polled in the same turn.
        assert_eq!(a.load(Ordering::SeqCst), 2);
        assert_eq!(b.load(Ordering::SeqCst), 2);
        assert_eq!(outer.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_wake_from_outside_wakes_the_runtime_and_finished_branches_rest() {
        let polls = Arc::new(AtomicU32::new(0));
        let saved: Arc<Mutex<Option<Waker>>> = Arc::default();
        let keep = saved.clone();
        let mut drive = Drive::new(vec![
            branch(polls.clone(), move |_, cx| {
                *keep.lock().unwrap() = Some(cx.waker().clone());
            }),
            Box::pin(std::future::ready(())),
        ]);
        let outer = Arc::new(Outer::default());
        poll_once(&mut drive, &outer);
        poll_once(&mut drive, &outer);
        assert_eq!(polls.load(Ordering::SeqCst), 1, "not woken, not polled");
        assert_eq!(outer.0.load(Ordering::SeqCst), 0);
        // A pipe or a timer wakes the branch between polls.
        saved.lock().unwrap().take().unwrap().wake();
        assert_eq!(outer.0.load(Ordering::SeqCst), 1);
        poll_once(&mut drive, &outer);
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }
}
