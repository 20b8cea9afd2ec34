//! What the pool reports (snapshots, status, charges), its keep-alive
//! clock, and the steps of its shutdown.

use std::sync::Arc;
use std::time::Duration;

use super::{status_state, Core, Entry, Inner, Version};
use crate::pipeline::Pipeline;
use crate::pool::rt;
use crate::pool::status::{ModelStatus, PoolSnapshot, UnloadReason};

impl<P: Pipeline> Core<P> {
    // ---- status -----------------------------------------------------------

    pub(crate) fn snapshot(&self) -> PoolSnapshot {
        let now = self.now();
        let inner = self.lock();
        let mut unreclaimed = 0u64;
        let models = inner
            .entries
            .values()
            .map(|entry| {
                let (status, lost) = model_status(&inner, entry, now);
                unreclaimed = unreclaimed.saturating_add(lost);
                status
            })
            .collect();
        PoolSnapshot {
            budget: inner.ledger.budget(),
            charged: inner.ledger.charged(),
            queued: inner
                .queue
                .iter()
                .map(|(id, v)| (id.to_string(), *v))
                .collect(),
            unreclaimed_bytes: unreclaimed,
            retained_bytes: crate::alloc::retained_bytes(),
            host_budget: inner.host.ledger.budget(),
            parked: inner.host.ledger.charged(),
            models,
            counters: self.metrics.counters(),
        }
    }

    pub(crate) fn status(&self, id: &str) -> Option<ModelStatus> {
        let now = self.now();
        let inner = self.lock();
        let entry = inner.entries.get(id)?;
        Some(model_status(&inner, entry, now).0)
    }

    /// Bytes charged now (for tests and the stress check).
    pub(crate) fn charged(&self) -> u64 {
        self.lock().ledger.charged()
    }

    /// Unload the models whose keep-alive ran out; sleep until the next
    /// deadline or a change. Holds the core weakly: a dropped pool ends it.
    pub(super) async fn keep_alive_task(core: std::sync::Weak<Self>) {
        loop {
            let Some(this) = core.upgrade() else { return };
            let mut changed = this.changed.subscribe();
            changed.borrow_and_update();
            let stop = this.stop.clone();
            let next = this.expire_due();
            let origin = this.origin;
            drop(this);
            let sleep = async {
                match next {
                    Some(at) => rt::sleep_until(rt::after(origin, at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = changed.changed() => {}
                () = sleep => {}
                () = stop.cancelled() => return,
            }
        }
    }

    /// Retire every expired, idle, unpinned model; the next deadline.
    pub(super) fn expire_due(self: &Arc<Self>) -> Option<Duration> {
        let now = self.now();
        let mut inner = self.lock();
        if inner.shut_down {
            return None;
        }
        let mut next: Option<Duration> = None;
        let Inner { entries, host, .. } = &mut *inner;
        for entry in entries.values_mut() {
            if entry.serving.is_none() || entry.pinned {
                continue;
            }
            // In use: a lease on any version, or a caller about to lease it.
            if entry.leases() > 0 || entry.waiters > 0 {
                continue;
            }
            if entry.keep_alive.expired(now) {
                if let Some(old) = entry.serving.take() {
                    let number = old.number;
                    self.retire(entry, old, UnloadReason::Expired);
                    if entry.has_copy_of(number) {
                        self.park_kept(host, entry, number);
                    }
                }
            } else if let Some(at) = entry.keep_alive.deadline() {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        next
    }

    // ---- shutdown ---------------------------------------------------------

    /// After shutdown: nothing is charged any more; only versions a lease
    /// keeps alive past the drain stay listed (their bytes are reported as
    /// unreclaimed until the lease goes).
    pub(crate) fn finish_shutdown(&self) {
        let mut inner = self.lock();
        for key in inner.ledger.keys() {
            inner.ledger.release(&key);
        }
        inner.queue.clear();
        let mut gone = Vec::new();
        for entry in inner.entries.values_mut() {
            let (kept, dropped): (Vec<_>, Vec<_>) = entry
                .retiring
                .drain(..)
                .partition(|v| v.manager.snapshot().unreclaimed_bytes > 0);
            entry.retiring = kept;
            gone.extend(dropped);
        }
        drop(inner);
        drop(gone);
        self.bump();
    }

    /// Stop every load, take every version out of service; the versions, to
    /// shut down.
    pub(crate) fn begin_shutdown(&self) -> Vec<Arc<Version<P>>> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.shut_down = true;
        self.stop.cancel();
        let mut versions = Vec::new();
        for entry in inner.entries.values_mut() {
            // The host tier's copies are freed; copies being made are not
            // kept.
            self.unpark(&mut inner.host, entry);
            entry.stop_parking(&mut inner.host);
            // Kept in the table as retiring, so that a snapshot still sees
            // what a lease keeps alive past the drain.
            if let Some(serving) = entry.serving.take() {
                entry.retiring.push(serving);
            }
            versions.extend(entry.retiring.iter().cloned());
            if let Some(job) = &entry.job {
                versions.extend(job.loading.iter().cloned());
            }
        }
        drop(guard);
        self.bump();
        versions
    }
}

/// A model's status, and the bytes of its versions kept alive past
/// shutdown (unreclaimed).
pub(super) fn model_status<P: Pipeline>(
    inner: &Inner<P>,
    entry: &Entry<P>,
    now: Duration,
) -> (ModelStatus, u64) {
    let versions = entry
        .serving
        .iter()
        .chain(&entry.retiring)
        .chain(entry.job.as_ref().and_then(|j| j.loading.as_ref()));
    let (mut resident, mut unreclaimed, mut leases) = (0u64, 0u64, 0usize);
    for v in versions {
        let snapshot = v.manager.snapshot();
        resident = resident.saturating_add(snapshot.resident_bytes);
        unreclaimed = unreclaimed.saturating_add(snapshot.unreclaimed_bytes);
        leases += entry.version_leases(v);
    }
    let charged = inner
        .ledger
        .iter()
        .filter(|(k, _)| k.0 == entry.id)
        .map(|(_, c)| c.bytes)
        .sum();
    let status = ModelStatus {
        id: entry.id.to_string(),
        state: status_state(entry),
        version: entry.serving.as_ref().map(|v| v.number),
        loading_version: entry.job.as_ref().map(|j| j.version),
        source: entry.source.clone(),
        charged_bytes: charged,
        resident_bytes: resident,
        leases,
        waiters: entry.waiters,
        idle_for: entry.last_used_at.map(|at| at.elapsed()),
        keep_alive: entry.keep_alive.ttl(),
        expires_in: entry
            .serving
            .as_ref()
            .and(entry.keep_alive.deadline())
            .map(|d| d.saturating_sub(now)),
        pinned: entry.pinned,
        last_error: entry.last_error.clone(),
        parked_bytes: inner.host.ledger.get(&entry.id).map_or(0, |s| s.bytes),
        parked: entry.parked.is_some() && entry.serving.is_none(),
    };
    (status, unreclaimed)
}
