//! The epoch ticker: how a computing guest still yields to the runner's I/O.
//!
//! Guest code checks the engine's epoch at every loop head and function
//! entry; this thread advances it every [`EPOCH_TICK`], and a guest past its
//! deadline yields to the runner's runtime (which then moves frames in and
//! out) before going on. A guest that waits instead (for its inbox, a WASI
//! read, a sleep) reaches no check: after a few ticks without a yield the
//! ticker parks, so an idle guest costs no wake-ups, and the guest's next
//! `ipc` call wakes it again.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::Thread;

use wasmtime::Engine;

use crate::engine::EPOCH_TICK;

/// Ticks without a yield before the ticker parks.
const IDLE_TICKS: u32 = 3;

/// Shared by the ticker thread, the store's epoch callback and the `ipc`
/// calls.
#[derive(Debug, Default)]
pub struct Ticker {
    /// The guest reached an epoch check since the last tick.
    yielded: AtomicBool,
    /// The ticker is parked (or about to be).
    parked: AtomicBool,
    thread: OnceLock<Thread>,
}

impl Ticker {
    /// Start the ticker thread for `engine`. Without it a computing guest
    /// still runs; it only serves its I/O when it calls the host.
    pub fn start(self: &std::sync::Arc<Self>, engine: &Engine) {
        let ticker = self.clone();
        let engine = engine.clone();
        let started = std::thread::Builder::new()
            .name("epoch".to_owned())
            .stack_size(64 * 1024)
            .spawn(move || ticker.run(&engine));
        match started {
            Ok(handle) => {
                let _ = self.thread.set(handle.thread().clone());
            }
            Err(err) => eprintln!("wasmproc-runner: cannot start the epoch ticker: {err}"),
        }
    }

    fn run(&self, engine: &Engine) -> ! {
        let mut idle = 0;
        loop {
            std::thread::sleep(EPOCH_TICK);
            engine.increment_epoch();
            if self.yielded.swap(false, Ordering::Relaxed) {
                idle = 0;
                continue;
            }
            idle += 1;
            if idle < IDLE_TICKS {
                continue;
            }
            self.parked.store(true, Ordering::Release);
            while self.parked.load(Ordering::Acquire) {
                std::thread::park();
            }
            idle = 0;
        }
    }

    /// The guest yielded at an epoch check: it is computing.
    pub fn yielded(&self) {
        self.yielded.store(true, Ordering::Relaxed);
    }

    /// The guest called the host and goes on: tick again if parked (one
    /// load when not).
    pub fn wake(&self) {
        if self.parked.load(Ordering::Relaxed)
            && self.parked.swap(false, Ordering::AcqRel)
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
    }
}
