//! The ticker: the runner's I/O while guest code computes.
//!
//! Guest code runs as compiled, with no instrumentation (no fuel, no epoch
//! checks): a guest that computes runs exactly as fast as under `wasmtime
//! run`, and never yields to the runner's runtime. That runtime's I/O loops
//! ([`super::link`]) move frames whenever the guest waits (`recv`, a
//! pollable, a WASI read or sleep); this thread covers for them while it
//! does not, once per [`TICK`]:
//!
//! - output the guest queued that the runtime has not taken for a whole
//!   tick is written from here, so a message sent before a long computation
//!   leaves within a tick or two, not when the computation ends;
//! - what the guest has taken is told to the host (a `Taken` frame) if no
//!   other frame has told it, so that the host knows, within a few ticks,
//!   which messages were taken even from a guest that never sends and
//!   never finds its inbox empty (the host returns only what was not). Only
//!   takes a few ticks old are told this way: a guest that answers what it
//!   takes tells the take with the answer, in one frame, so a runner killed
//!   between the two has the message returned, never taken unanswered;
//! - the guest's next `ipc` call yields once to the runtime
//!   ([`Ticker::yield_due`]), so a guest that polls with `try-recv` between
//!   pieces of work still sees what arrived.
//!
//! After a few ticks without an `ipc` call and with nothing left to write,
//! the ticker parks: an idle guest, or one computing without talking, costs
//! no wake-ups; the guest's next `ipc` call wakes it again. One limit: a
//! batch the writer loop has begun and the pipe could not take whole (a
//! host slow to read) is finished by the runtime, at the guest's next
//! `ipc` call or wait; the ticker does not take over a write in flight.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use super::link::Link;

/// How often the ticker looks. A computing guest's sends leave within one
/// to two ticks.
pub const TICK: Duration = Duration::from_millis(1);

/// Ticks without an `ipc` call before the ticker parks.
const IDLE_TICKS: u32 = 3;

/// Shared by the ticker thread and the guest's `ipc` calls.
#[derive(Debug, Default)]
pub struct Ticker {
    /// The guest called the host since the last tick.
    active: AtomicBool,
    /// A tick has passed since the guest's last yield to the runtime.
    due: AtomicBool,
    /// The ticker is parked (or about to be).
    parked: AtomicBool,
    thread: OnceLock<Thread>,
}

impl Ticker {
    /// Start the ticker thread for `link`, whose frames go to the host on
    /// `to_host` (the control pipe, open for the runner's whole life).
    /// Without it a computing guest still runs; its frames leave only when
    /// it waits.
    pub fn start(self: &Arc<Self>, link: Arc<Link>, to_host: RawFd) {
        let ticker = self.clone();
        let started = std::thread::Builder::new()
            .name("ticker".to_owned())
            .stack_size(64 * 1024)
            .spawn(move || ticker.run(&link, to_host));
        match started {
            Ok(handle) => {
                let _ = self.thread.set(handle.thread().clone());
            }
            Err(err) => eprintln!("wasmproc-runner: cannot start the ticker: {err}"),
        }
    }

    fn run(&self, link: &Link, to_host: RawFd) -> ! {
        let mut idle = 0;
        let mut cover = link.cover(to_host);
        loop {
            std::thread::sleep(TICK);
            self.due.store(true, Ordering::Relaxed);
            let pending = cover.tick();
            if self.active.swap(false, Ordering::Relaxed) || pending {
                idle = 0;
                continue;
            }
            idle += 1;
            if idle < IDLE_TICKS {
                continue;
            }
            self.parked.store(true, Ordering::SeqCst);
            // An `ipc` call between the look above and here found the
            // ticker awake and did not unpark it: look again instead.
            if self.active.load(Ordering::SeqCst) {
                self.parked.store(false, Ordering::SeqCst);
                idle = 0;
                continue;
            }
            while self.parked.load(Ordering::SeqCst) {
                std::thread::park();
            }
            idle = 0;
        }
    }

    /// The guest calls the host: tick again if parked (one load when not).
    pub fn wake(&self) {
        // Sequentially consistent with the ticker's own store to `parked`
        // and load of `active`: one of the two sees the other.
        self.active.store(true, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst)
            && self.parked.swap(false, Ordering::SeqCst)
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
    }

    /// Whether the guest should yield to the runtime now: a tick has passed
    /// since it last did (one load when not). Yielding clears it.
    pub fn yield_due(&self) -> bool {
        self.due.load(Ordering::Relaxed) && self.due.swap(false, Ordering::Relaxed)
    }

    /// The guest yields to the runtime (or waits): nothing is due.
    pub fn yielded(&self) {
        self.due.store(false, Ordering::Relaxed);
    }
}
