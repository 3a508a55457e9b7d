//! Runners started ahead of time, waiting for a launch spec: a fork with
//! the default stdio takes one instead of starting a process.
//!
//! Each new runner is told the artifact the pool last launched (`Preload`),
//! so that while it waits it maps that artifact and links its imports: a
//! fork of the same module then only hardens the runner and instantiates.
//! A fork of another module loads its own, as a runner without a guess does.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use wasmproc_protocol::{HostToRunner, LaunchSpec, ModuleKind};

use super::spawner::{Spawned, default_stdio, spawn_runner};
use crate::connection::{Batch, FrameWriter};

/// The pool; the host holds it in an `Arc`.
pub(crate) struct Pool {
    size: usize,
    idle: Mutex<Vec<Spawned>>,
    refilling: AtomicBool,
    /// The artifact of the last launch from the pool, for new runners to load.
    last: Mutex<Option<(String, ModuleKind)>>,
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
            last: Mutex::new(None),
        }
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Spawned>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A waiting runner for `launch`, if there is one. The runners started
    /// from now on load its artifact ahead.
    pub(crate) fn take(&self, launch: &LaunchSpec) -> Option<Spawned> {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((launch.artifact.clone(), launch.kind));
        self.idle().pop()
    }

    /// The pids of the runners waiting.
    pub(crate) fn idle_pids(&self) -> Vec<u32> {
        self.idle().iter().map(|s| s.process.id()).collect()
    }

    /// Start a runner and tell it the artifact to load while it waits.
    async fn start_one(&self, runner: PathBuf) -> std::io::Result<Spawned> {
        let mut spawned = spawn_runner(runner, default_stdio()).await?;
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((artifact, kind)) = last {
            let mut batch = Batch::default();
            batch
                .push(&HostToRunner::Preload { artifact, kind })
                .map_err(std::io::Error::other)?;
            let mut writer = FrameWriter::new(spawned.to_runner, Arc::default());
            writer.write(&mut batch).await?;
            spawned.to_runner = writer.into_pipe();
        }
        Ok(spawned)
    }

    /// Top the pool up in the background, one runner at a time.
    pub(crate) fn refill(self: &Arc<Self>, runner: PathBuf) {
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            while pool.size > pool.idle().len() {
                match pool.start_one(runner.clone()).await {
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
