//! An admitted load: a manager of its own, its charge trued up, the new
//! version installed (the old one retired), the outcome recorded.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Core, Entry, Key, Version};
use crate::builder::{ModelManagerBuilder, Settings};
use crate::error::{Error, Result};
use crate::io::plan::Plan;
use crate::io::ModelSource;
use crate::manager::ModelManager;
use crate::pipeline::Pipeline;
use crate::pool::keep_alive::KeepAlive;
use crate::pool::ledger::TrueUp;
use crate::pool::rt;
use crate::pool::rt::Instant;
use crate::pool::status::{PoolEventKind, UnloadReason};

impl<P: Pipeline> Core<P> {
    pub(super) async fn load_admitted(
        self: &Arc<Self>,
        key: &Key,
        source: Arc<ModelSource>,
        read: Arc<ModelSource>,
        plan: Plan,
        estimate: u64,
        cancel: &CancellationToken,
    ) -> Result<u64> {
        let manager = match self.build_manager(estimate) {
            Ok(manager) => manager,
            Err(e) => {
                self.lock().ledger.release(key);
                return Err(e);
            }
        };
        let version = Arc::new(Version {
            number: key.1,
            manager,
            source: source.clone(),
        });
        {
            let mut inner = self.lock();
            if let Some(job) = inner
                .entries
                .get_mut(&key.0)
                .and_then(|e| e.job.as_mut())
                .filter(|j| j.version == key.1)
            {
                job.loading = Some(version.clone());
            }
        }
        self.metrics.loads.inc();
        let outcome = match version.manager.load_planned(read, plan) {
            Ok(handle) => {
                tokio::select! {
                    r = handle.wait() => r,
                    () = cancel.cancelled() => {
                        handle.cancel();
                        handle.wait().await
                    }
                }
            }
            Err(e) => Err(e),
        };
        let outcome = match outcome {
            Ok(snapshot) => self.install(key, &version, snapshot.resident_bytes, cancel),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(bytes) => Ok(bytes),
            Err(e) => {
                // A load that failed has freed what it read before its
                // handle resolved; one refused at install is unloaded here.
                let _ = version.manager.unload().await;
                {
                    let mut inner = self.lock();
                    inner.ledger.release(key);
                    if let Some(job) = inner
                        .entries
                        .get_mut(&key.0)
                        .and_then(|e| e.job.as_mut())
                        .filter(|j| j.version == key.1)
                    {
                        job.loading = None;
                    }
                }
                self.bump();
                version.manager.shutdown().await;
                Err(e)
            }
        }
    }

    /// The load of `key` is ready with `bytes` measured: true its charge up
    /// and make it the serving version (the one it replaces drains).
    pub(super) fn install(
        self: &Arc<Self>,
        key: &Key,
        version: &Arc<Version<P>>,
        bytes: u64,
        cancel: &CancellationToken,
    ) -> Result<u64> {
        let now = self.now();
        let mut guard = self.lock();
        let inner = &mut *guard;
        if cancel.is_cancelled() || inner.shut_down {
            return Err(Error::Cancelled);
        }
        match inner.ledger.true_up(key, bytes) {
            Ok(()) => {}
            Err(TrueUp::OverBudget { available }) => {
                return Err(Error::InsufficientMemory {
                    needed: bytes,
                    available,
                    pinned: 0,
                })
            }
            Err(TrueUp::NotAdmitted) => return Err(Error::Cancelled),
        }
        // Only the model's current load installs (never one it replaced,
        // nor one of a model removed and added again).
        let Some(entry) = inner
            .entries
            .get_mut(&key.0)
            .filter(|e| e.job.as_ref().is_some_and(|j| j.version == key.1))
        else {
            return Err(Error::Cancelled);
        };
        let resumed = entry.job.as_ref().is_some_and(|j| j.resumes);
        if resumed {
            self.metrics.resumes.inc();
        }
        entry.source = version.source.clone();
        entry.last_error = None;
        entry.retry_at = None;
        if let Some(job) = entry.job.as_mut() {
            job.loading = None;
        }
        let old = entry.serving.replace(version.clone());
        self.emit(&key.0, key.1, PoolEventKind::Ready { bytes });
        // A copy of an older version still being made is of no use now.
        entry.stop_parking(&mut inner.host);
        match (resumed, entry.parked.take()) {
            // Loaded back from its copy: the copy stays (while the tier
            // has room), so that evicting it again frees its device memory
            // at once, with no copy to make. The weights never change.
            (true, Some((_, copy))) => {
                entry.parked = Some((key.1, copy));
                inner.host.ledger.touch(&entry.id, entry.last_used);
            }
            // An older version's copy (a reload's install).
            (_, parked) => {
                entry.parked = parked;
                self.unpark(&mut inner.host, entry);
            }
        }
        if let Some(old) = old {
            self.retire(entry, old, UnloadReason::Replaced);
        }
        // The keep-alive clock runs from now unless a lease on an older
        // version is still held (the model is in use).
        let ttl = entry.keep_alive.ttl();
        entry.keep_alive = KeepAlive::new(ttl, now);
        if entry.leases() > 0 {
            entry.keep_alive.busy();
        }
        Ok(key.1)
    }

    pub(super) fn build_manager(&self, budget: u64) -> Result<ModelManager<P>> {
        let settings = Settings {
            budget: Some(budget),
            #[cfg(not(target_arch = "wasm32"))]
            runtime: Some(self.spawner.handle().clone()),
            ..self.config.manager.clone()
        };
        ModelManagerBuilder::with_settings(settings, self.config.options.clone()).build()
    }

    /// The job for `key` ended: record how, for the model's table.
    pub(super) fn finish_job(&self, key: &Key, result: &Result<u64>, reload: bool, resumes: bool) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.queue.retain(|k| k != key);
        if let Err(error) = result {
            self.metrics.failures.inc();
            self.emit(
                &key.0,
                key.1,
                PoolEventKind::Failed {
                    error: error.clone(),
                },
            );
        }
        // The entry this job was for (not one added since under the same
        // id, whose versions count on from the old one's).
        let entry = inner
            .entries
            .get_mut(&key.0)
            .filter(|e| key.1 >= e.first_version);
        if let Some(entry) = entry {
            let current = entry.job.as_ref().is_some_and(|j| j.version == key.1);
            if resumes {
                // A load back from its copy ended (a stopped one leaves it
                // parked; another may still be reading it).
                inner.host.ledger.end_read(&entry.id);
            }
            if current {
                entry.job = None;
            } else {
                // A load stopped by `stop_job` has ended: a new load of the
                // model may start.
                entry.stopping = entry.stopping.saturating_sub(1);
            }
            // Only the model's current load speaks for it: a stopped one's
            // cancellation is no failure of the model.
            if let (Err(error), true) = (result, current) {
                let not_the_models_fault = matches!(
                    error,
                    Error::Cancelled
                        | Error::Superseded
                        | Error::ShutDown
                        | Error::MemoryBusy { .. }
                        | Error::QueueFull { .. }
                );
                entry.last_error = Some(error.clone());
                // A copy that could not be loaded back is dropped, unless
                // memory was short (the files would need it too).
                let copy_failed = resumes
                    && !not_the_models_fault
                    && !matches!(error, Error::InsufficientMemory { .. });
                if copy_failed {
                    // Its copy could not be loaded back: the next acquire
                    // reads its files instead, at once (the copy failed,
                    // not the model).
                    self.unpark(&mut inner.host, entry);
                }
                // A broken model is not reloaded in a tight loop; a stopped
                // load, one that found no room for now, a reload (the old
                // version serves) or a failed copy is no reason to refuse
                // the next acquire.
                entry.retry_at = (!not_the_models_fault && !reload && !copy_failed)
                    .then(|| rt::after(Instant::now(), self.config.retry_cooldown));
            }
        }
        drop(guard);
        self.bump();
    }

    // ---- unloads ----------------------------------------------------------

    /// Unload `old` (a version just taken out of service): it waits for its
    /// leases, frees its memory, and only then stops being charged.
    pub(super) fn retire(
        self: &Arc<Self>,
        entry: &mut Entry<P>,
        old: Arc<Version<P>>,
        reason: UnloadReason,
    ) {
        let (id, number) = (entry.id.clone(), old.number);
        if matches!(reason, UnloadReason::Expired) {
            self.metrics.expirations.inc();
        }
        self.emit(&id, number, PoolEventKind::Unloading { reason });
        entry.retiring.push(old.clone());
        let core = self.clone();
        self.spawner.spawn(async move {
            // When the unload returns, the memory is freed (the manager
            // publishes Idle only then): stop charging it at once, and
            // shut the manager down after.
            let _ = old.manager.unload().await;
            let gone = {
                let mut inner = core.lock();
                let bytes = inner.ledger.release(&(id.clone(), number));
                let gone = inner.entries.get_mut(&id).and_then(|entry| {
                    let at = entry.retiring.iter().position(|v| Arc::ptr_eq(v, &old))?;
                    Some(entry.retiring.swap_remove(at))
                });
                core.emit(&id, number, PoolEventKind::Freed { bytes });
                gone
            };
            core.bump();
            old.manager.shutdown().await;
            drop(gone);
        });
    }
}
