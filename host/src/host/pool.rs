//! Runners started ahead of time, waiting for a launch spec: a fork with
//! the default stdio takes one instead of starting a process.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::spawner::{Spawned, default_stdio, spawn_runner};

/// The pool; the host holds it in an `Arc`.
pub(crate) struct Pool {
    size: usize,
    idle: Mutex<Vec<Spawned>>,
    refilling: AtomicBool,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// An empty pool that keeps `size` runners once refilled.
    pub(crate) fn new(size: usize) -> Pool {
        Pool {
            size,
            idle: Mutex::new(Vec::with_capacity(size)),
            refilling: AtomicBool::new(false),
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Spawned>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A waiting runner, if there is one.
    pub(crate) fn take(&self) -> Option<Spawned> {
        self.idle().pop()
    }

    /// Top the pool up in the background, one runner at a time.
    pub(crate) fn refill(self: &Arc<Self>, runner: PathBuf) {
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            while pool.size > pool.idle().len() {
                match spawn_runner(runner.clone(), default_stdio()).await {
                    Ok(spawned) => pool.idle().push(spawned),
                    Err(err) => {
                        tracing::warn!("cannot pre-start a runner: {err}");
                        break;
                    }
                }
            }
            pool.refilling.store(false, Ordering::Release);
        });
    }
}
