//! Loads' admission: the queue, first come first served, waiting for
//! memory (bounded by the admission timeout) and evicting to make room.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{blockers, entry_mut, Core, Entry, HostCopies, Inner, Job, Key, Outcome};
use crate::alloc::Retention;
use crate::error::{Error, Result};
use crate::io::ModelSource;
use crate::pipeline::Lease;
use crate::pipeline::Pipeline;
use crate::pool::ledger::{Admission, Hold};
use crate::pool::options::ReloadPolicy;
use crate::pool::rt;
use crate::pool::rt::Instant;
use crate::pool::status::{PoolEventKind, UnloadReason};
use crate::pool::tier::Fate;

impl<P: Pipeline> Core<P> {
    pub(super) fn start_job(
        self: &Arc<Self>,
        inner: &mut Inner<P>,
        id: &str,
        source: Arc<ModelSource>,
        reload: Option<ReloadPolicy>,
    ) -> Result<watch::Receiver<Outcome>> {
        if inner.queue.len() >= self.config.max_queue {
            return Err(Error::QueueFull {
                limit: self.config.max_queue,
            });
        }
        let (id, component) = {
            let entry = entry_mut(inner, id)?;
            (entry.id.clone(), entry.component.clone())
        };
        // The pool's one counter per id: it goes on across remove and add.
        let version = inner.versions.get(&id).map_or(1, |v| v + 1);
        inner.versions.insert(id.clone(), version);
        let Inner { entries, host, .. } = &mut *inner;
        let entry = entries
            .get_mut(&id)
            .filter(|e| !e.removing)
            .ok_or_else(|| Error::UnknownModel(id.to_string()))?;
        // A parked model is loaded back from host memory (a reload reads
        // its source): the copy is busy until the load ends.
        let parked = match reload {
            None => entry.parked.as_ref().map(|(_, copy)| copy.clone()),
            Some(_) => None,
        };
        if parked.is_some() {
            host.ledger.begin_read(&id);
        }
        let cancel = self.stop.child_token();
        let superseded = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = watch::channel(None);
        entry.job = Some(Job {
            version,
            cancel: cancel.clone(),
            superseded: superseded.clone(),
            outcome: rx.clone(),
            loading: None,
            resumes: parked.is_some(),
        });
        inner.queue.push_back((id.clone(), version));
        self.emit(&id, version, PoolEventKind::Queued);
        let core = self.clone();
        let requested_at = Instant::now();
        let resumes = parked.is_some();
        self.spawner.spawn(async move {
            let key = (id, version);
            // What it reads: the parked copy, if there is one.
            let read = match parked {
                Some(parked) => Arc::new(ModelSource::Parked(parked)),
                None => source.clone(),
            };
            let target = Target {
                source,
                read,
                component,
            };
            let mut result = core
                .run_job(&key, target, reload, &cancel, requested_at)
                .await;
            if result.is_err() && superseded.load(std::sync::atomic::Ordering::Relaxed) {
                result = Err(Error::Superseded);
            }
            core.finish_job(&key, &result, reload.is_some(), resumes);
            let _ = tx.send(Some(result));
        });
        Ok(rx)
    }

    pub(super) async fn run_job(
        self: &Arc<Self>,
        key: &Key,
        target: Target,
        reload: Option<ReloadPolicy>,
        cancel: &CancellationToken,
        mut requested_at: Instant,
    ) -> Result<u64> {
        let Target {
            source,
            read,
            component,
        } = target;
        // A download (a hub source with the switch) happens in the estimate
        // and may take minutes: out of the queue, so that the loads behind
        // it are not held (their turn waits count against their admission
        // timeout), and with the clock starting after it, so that its own
        // wait for memory is not used up by the download.
        let downloads = matches!(
            &*read,
            ModelSource::Hub {
                download: Some(_),
                ..
            }
        );
        if downloads {
            self.leave_queue(key);
        }
        // The estimate: headers only, on a blocking thread; the plan it
        // resolves is the one the load reads.
        let estimate = {
            let (source, dtype, device, page_cache, stop) = (
                read.clone(),
                self.config.manager.dtype,
                self.device.clone(),
                self.config.manager.page_cache,
                cancel.clone(),
            );
            let component = component.clone();
            // A download stops with the load (the blocking thread is not
            // just left behind: it would go on writing the blob).
            let blocking = rt::blocking(move || {
                crate::io::estimate(
                    &source,
                    component.as_deref(),
                    dtype,
                    &device,
                    page_cache,
                    &stop,
                )
            });
            tokio::select! {
                r = blocking => r,
                () = cancel.cancelled() => Err(Error::Cancelled),
            }
        };
        let (plan, estimate) = match estimate {
            Ok(planned) => planned,
            Err(e) => {
                self.leave_queue(key);
                return Err(e);
            }
        };
        if downloads {
            // Back in line, at its end, as if requested now.
            self.lock().queue.push_back(key.clone());
            requested_at = Instant::now();
            self.bump();
        }

        // Admission: first come first served. Waiting for memory, its own
        // or that of the loads ahead of it, is bounded by the admission
        // timeout counted from the request: a load queued behind others
        // that wait for memory gives up a timeout after its request, not a
        // timeout later each. The clock stops while the load waits for a
        // load slot (bounded by the loads in flight, which end by
        // themselves) or for memory being freed that is enough for it (the
        // ledger says which): those waits end by themselves.
        let queued_at = Instant::now();
        let mut deadline = rt::after(requested_at, self.config.admission_timeout);
        let mut paused_since: Option<Instant> = None;
        // Set once models are unloaded to make room for this load: what
        // they free is kept for it until it ends (`crate::alloc`).
        let mut retention: Option<Retention> = None;
        loop {
            let mut changed = self.changed.subscribe();
            changed.borrow_and_update();
            let step = {
                let mut inner = self.lock();
                self.admission_step(&mut inner, key, estimate, reload, &mut retention)
            };
            let memory_bound = match step {
                Step::Admitted => break,
                Step::Fail(e) => {
                    self.leave_queue(key);
                    return Err(e);
                }
                Step::Slot | Step::Freeing => false,
                Step::Turn | Step::Wait => true,
            };
            match (memory_bound, paused_since) {
                (false, None) => paused_since = Some(Instant::now()),
                (true, Some(since)) => {
                    deadline = rt::after(deadline, since.elapsed());
                    paused_since = None;
                }
                _ => {}
            }
            let expiry = async {
                match memory_bound {
                    true => rt::sleep_until(deadline).await,
                    false => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = changed.changed() => {}
                () = expiry => {
                    // What holds the memory holds this load too, whether it
                    // waited for its turn or for the memory itself.
                    let mut inner = self.lock();
                    inner.queue.retain(|k| k != key);
                    let blocked_by = blockers(&inner);
                    drop(inner);
                    self.bump();
                    return Err(Error::MemoryBusy { needed: estimate, blocked_by });
                }
                () = cancel.cancelled() => {
                    self.leave_queue(key);
                    return Err(Error::Cancelled);
                }
            }
        }
        self.metrics
            .queue_wait
            .observe(queued_at.elapsed().as_secs_f64());

        // Charged: load, on a manager of its own, within the charge.
        let result = self
            .load_admitted(key, source, read, plan, estimate, cancel)
            .await;
        {
            let mut inner = self.lock();
            inner.loading = inner.loading.saturating_sub(1);
        }
        self.bump();
        result
    }

    /// One look at the queue for `key`, under the lock.
    pub(super) fn admission_step(
        self: &Arc<Self>,
        inner: &mut Inner<P>,
        key: &Key,
        estimate: u64,
        reload: Option<ReloadPolicy>,
        retention: &mut Option<Retention>,
    ) -> Step {
        if inner.shut_down {
            return Step::Fail(Error::ShutDown);
        }
        if inner.loading >= self.config.concurrent_loads {
            return Step::Slot;
        }
        if inner.queue.front() != Some(key) {
            return Step::Turn;
        }
        let (id, version) = (key.0.clone(), key.1);
        if inner.entries.get(&id).is_some_and(|e| e.stopping > 0) {
            // A stopped load of this model is still freeing what it read:
            // never two loads of one model at once.
            return Step::Slot;
        }
        let now = self.now();
        self.refresh_holds(inner, now, reload.map(|_| &*id));
        if let Some(policy) = reload {
            // The new version must fit beside the serving one and the
            // pinned models, or the caller's policy decides. (Older
            // versions still draining their leases are on their way out:
            // admission waits for them.)
            let own = inner
                .entries
                .get(&id)
                .and_then(|e| e.serving.as_ref())
                .and_then(|v| inner.ledger.get(&(id.clone(), v.number)))
                .map_or(0, |c| c.bytes);
            let pinned_others: u64 = inner
                .ledger
                .iter()
                .filter(|(k, c)| k.0 != id && c.hold == Hold::Pinned)
                .map(|(_, c)| c.bytes)
                .sum();
            let budget = inner.ledger.budget();
            if estimate.saturating_add(pinned_others) > budget {
                // It could never fit, even alone: refuse before anything
                // is taken out of service.
                return Step::Fail(Error::InsufficientMemory {
                    needed: estimate,
                    available: budget.saturating_sub(pinned_others),
                    pinned: pinned_others,
                });
            }
            if own > 0 && estimate.saturating_add(own).saturating_add(pinned_others) > budget {
                match policy {
                    ReloadPolicy::KeepServing => {
                        return Step::Fail(Error::InsufficientMemory {
                            needed: estimate,
                            available: budget.saturating_sub(own.saturating_add(pinned_others)),
                            pinned: pinned_others,
                        })
                    }
                    ReloadPolicy::UnloadFirst => {
                        self.retain_for(retention, estimate);
                        if let Some(entry) = inner.entries.get_mut(&id) {
                            if let Some(old) = entry.serving.take() {
                                self.retire(entry, old, UnloadReason::MadeRoomForReload);
                            }
                        }
                        self.refresh_holds(inner, now, Some(&*id));
                        return Step::Wait;
                    }
                }
            }
        }
        let tick = inner.tick;
        match inner.ledger.admit(key, estimate, tick) {
            Admission::Fits => {
                inner.queue.pop_front();
                inner.loading += 1;
                self.emit(&id, version, PoolEventKind::Loading { charged: estimate });
                if !inner.queue.is_empty() {
                    // The next in line may have a slot now.
                    self.bump();
                }
                Step::Admitted
            }
            Admission::Evict(victims) => {
                self.retain_for(retention, estimate);
                self.evict(inner, victims, &id);
                // Admitted once their memory is freed (`retire` bumps).
                self.refresh_holds(inner, now, reload.map(|_| &*id));
                match inner.ledger.freeing_covers(key, estimate) {
                    true => Step::Freeing,
                    false => Step::Wait,
                }
            }
            Admission::Wait if inner.ledger.freeing_covers(key, estimate) => Step::Freeing,
            Admission::Wait => Step::Wait,
            Admission::Already => Step::Fail(Error::InvalidArgument(format!(
                "{id:?} version {version} is already charged"
            ))),
            Admission::Refuse {
                needed,
                available,
                pinned,
            } => Step::Fail(Error::InsufficientMemory {
                needed,
                available,
                pinned,
            }),
        }
    }

    /// Unload `victims` (serving versions) to make room for `for_id`:
    /// with a host tier, each is parked first when the tier can hold it
    /// (its device memory is freed once the copy is made).
    pub(super) fn evict(self: &Arc<Self>, inner: &mut Inner<P>, victims: Vec<Key>, for_id: &str) {
        for victim in victims {
            let Some(entry) = inner.entries.get(&victim.0) else {
                continue;
            };
            let Some(old) = entry.serving.clone().filter(|v| v.number == victim.1) else {
                continue;
            };
            let last_used = entry.last_used;
            let reason = UnloadReason::Evicted {
                for_id: for_id.to_string(),
            };
            if entry.has_copy_of(old.number) {
                // Back from its copy in host memory, which is still there:
                // parked again at once, its device memory freed.
                let Inner { entries, host, .. } = &mut *inner;
                let Some(entry) = entries.get_mut(&victim.0) else {
                    continue;
                };
                entry.serving = None;
                self.count_eviction(entry);
                self.retire(entry, old, reason);
                self.park_kept(host, entry, victim.1);
                continue;
            }
            // The copy reads the model under a lease of the pool's own,
            // sized as the copy will be (its layout in host memory).
            // `loaded` is the application's code: a panic in it means the
            // model is freed, not parked (and never unwinds the pool).
            let park = match inner.host.ledger.budget() {
                0 => None,
                _ => old.manager.acquire().ok().and_then(|lease| {
                    let bytes = catch_unwind(AssertUnwindSafe(|| {
                        lease.loaded().map(crate::io::park::parked_bytes)
                    }))
                    .ok()
                    .flatten()?;
                    Some((lease, bytes))
                }),
            };
            let park = park.and_then(|(lease, bytes)| {
                match inner.host.ledger.place(&victim.0, bytes, last_used) {
                    Fate::Park { dropped } => Some((lease, dropped)),
                    Fate::Free => None,
                }
            });
            let Inner { entries, host, .. } = &mut *inner;
            if let Some((_, dropped)) = &park {
                // Room made in the host tier: their copies go.
                for id in dropped {
                    if let Some(entry) = entries.get_mut(id) {
                        self.unpark(host, entry);
                    }
                }
            }
            let Some(entry) = entries.get_mut(&victim.0) else {
                continue;
            };
            // An older version's copy (none should be left: an install
            // drops it) is no use to this one.
            self.unpark(host, entry);
            entry.serving = None;
            self.count_eviction(entry);
            if let Some((lease, _)) = park {
                entry.parking = Some(old.number);
                entry.park_leases.push(old.number);
                self.park(entry.id.clone(), old.number, lease);
            }
            self.retire(entry, old, reason);
        }
    }

    fn count_eviction(&self, entry: &Entry<P>) {
        self.metrics.evictions.inc();
        if let Some(at) = entry.last_used_at {
            self.metrics
                .evicted_idle
                .observe(at.elapsed().as_secs_f64());
        }
    }

    /// Copy version `number` of `id` to host memory on a blocking thread,
    /// under `lease`; then keep the copy as the model's parked one if it is
    /// still wanted (and fits), and let the version's memory go.
    fn park(self: &Arc<Self>, id: Arc<str>, number: u64, lease: Lease<P>) {
        let core = self.clone();
        self.spawner.spawn(async move {
            let copied = rt::blocking(move || {
                // The lease comes back whatever `loaded` (the application's
                // code) does: it is counted as the pool's until the copy's
                // end is recorded below.
                let copy = catch_unwind(AssertUnwindSafe(|| match lease.loaded() {
                    Some(tensors) => crate::io::park::park(tensors),
                    None => Err(Error::InvalidArgument("nothing to park".into())),
                }))
                .unwrap_or_else(|_| {
                    Err(Error::InvalidArgument("Pipeline::loaded panicked".into()))
                });
                Ok((copy, lease))
            })
            .await;
            let (copy, lease) = match copied {
                Ok((copy, lease)) => (copy, Some(lease)),
                Err(e) => (Err(e), None),
            };
            let mut unwanted = None;
            {
                let mut guard = core.lock();
                let Inner { entries, host, .. } = &mut *guard;
                let entry = entries
                    .get_mut(&id)
                    .filter(|e| e.park_leases.contains(&number));
                if let Some(entry) = entry {
                    // Still wanted: not unloaded, removed, shut down or
                    // replaced by a new version meanwhile (those cleared
                    // `parking`), and not being loaded already (an acquire
                    // that came while it was copied waits for the copy;
                    // a reload's install would drop it).
                    let ours = entry.parking == Some(number);
                    let wanted = ours && entry.serving.is_none() && entry.job.is_none();
                    match copy {
                        Ok(copy) if wanted && host.ledger.parked(&id, copy.bytes()) => {
                            let bytes = copy.bytes();
                            entry.parked = Some((number, Arc::new(copy)));
                            entry.parking = None;
                            core.metrics.parks.inc();
                            core.emit(&id, number, PoolEventKind::Parked { bytes });
                        }
                        copy => {
                            if let Err(e) = &copy {
                                tracing::warn!("parking {id:?} failed, freeing it instead: {e}");
                            }
                            unwanted = copy.ok();
                            if ours {
                                entry.stop_parking(host);
                            }
                        }
                    }
                    if let Some(at) = entry.park_leases.iter().position(|&v| v == number) {
                        entry.park_leases.swap_remove(at);
                    }
                } else {
                    // Removed meanwhile.
                    unwanted = copy.ok();
                }
                // Freed once the lock is released, on a blocking thread.
                if let Some(copy) = unwanted {
                    host.unparked.push(Arc::new(copy));
                }
                // The version's memory may go now: its unload sees no lease.
                drop(lease);
            }
            core.bump();
        });
    }

    /// Version `number` of `entry`, back on the device from its copy in
    /// host memory and kept with it (`Entry::has_copy_of`), has just left the
    /// device (evicted, expired): that copy is its parked one again, ranked
    /// in the tier by the model's own last use, and nothing is copied.
    pub(super) fn park_kept(&self, host: &mut HostCopies, entry: &Entry<P>, number: u64) {
        host.ledger.touch(&entry.id, entry.last_used);
        // The copy's own size, as `unpark` reports it (the tier charges it).
        let bytes = entry.parked.as_ref().map_or(0, |(_, copy)| copy.bytes());
        self.metrics.parks.inc();
        self.emit(&entry.id, number, PoolEventKind::Parked { bytes });
    }

    /// Drop `entry`'s parked copy, if any: no longer charged; its memory
    /// is freed once the pool's lock is released (a load still reading it
    /// frees it when it is done).
    pub(super) fn unpark(&self, host: &mut HostCopies, entry: &mut Entry<P>) {
        if let Some((version, parked)) = entry.parked.take() {
            // (Already off the ledger when the tier dropped it for room.)
            host.ledger.release(&entry.id);
            let bytes = parked.bytes();
            host.unparked.push(parked);
            self.emit(&entry.id, version, PoolEventKind::Unparked { bytes });
        }
    }

    /// Before models are unloaded for a load of `estimate` bytes, on the
    /// CPU: the large blocks freed from now on are kept for its buffers
    /// (up to its estimate, until it ends), where the process installs the
    /// library's allocator.
    fn retain_for(&self, retention: &mut Option<Retention>, estimate: u64) {
        if retention.is_none() && self.device.is_cpu() {
            *retention = Some(Retention::new(estimate));
        }
    }

    /// Bring the ledger's view of every charge up to date: a serving
    /// version of a model not in use (no lease on any of its versions, no
    /// caller waiting to lease it) and not pinned is evictable (unless
    /// `reloading` is its id: a reload never evicts the version it
    /// replaces); a pinned one is pinned; a version unloading with no lease
    /// is freeing; everything else (in use, loading) is busy.
    pub(super) fn refresh_holds(
        &self,
        inner: &mut Inner<P>,
        now: Duration,
        reloading: Option<&str>,
    ) {
        for key in inner.ledger.keys() {
            let Some(entry) = inner.entries.get(&key.0) else {
                continue;
            };
            let serving = entry.serving.as_ref().filter(|v| v.number == key.1);
            let retiring = entry.retiring.iter().find(|v| v.number == key.1);
            // In use: a lease on any version, or a caller waiting to lease
            // it (a model just loaded for a waiter is not taken from it
            // before it gets its lease).
            let in_use = entry.leases() > 0 || entry.waiters > 0;
            let hold = match (serving, retiring) {
                (Some(_), _) if entry.pinned => Hold::Pinned,
                (Some(_), _) if !in_use && reloading != Some(&*key.0) => Hold::Evictable,
                (None, Some(v)) if entry.version_leases(v) == 0 => Hold::Freeing,
                _ => Hold::Busy,
            };
            let (last_used, expired) = (entry.last_used, entry.keep_alive.expired(now));
            inner.ledger.set_hold(&key, hold, last_used, expired);
        }
    }
}

/// What a job loads.
pub(super) struct Target {
    /// The model's source (the version's, for reloads and the status).
    source: Arc<ModelSource>,
    /// What the load reads: the source, or the model's parked copy.
    read: Arc<ModelSource>,
    /// A pipeline's component, alone.
    component: Option<Arc<str>>,
}

/// What one look at the queue decided for a load.
pub(super) enum Step {
    Admitted,
    /// Every load slot is taken, or a stopped load of the same model is
    /// still ending: bounded by those loads, which end by themselves.
    Slot,
    /// Not its turn: a load ahead in the queue waits for memory.
    Turn,
    /// Its turn, waiting for memory that leases or loads hold. This wait
    /// and the one behind it (`Turn`) are bounded by the admission timeout,
    /// counted from the request.
    Wait,
    /// Its turn, waiting for memory on its way back (models unloading with
    /// no lease left, evicted for it or not) that is enough for it: ends by
    /// itself, so, like `Slot`, not bounded by the admission timeout.
    Freeing,
    Fail(Error),
}
