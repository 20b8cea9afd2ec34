//! The pool's core: its entries, the ledger and the queue under one lock,
//! and the tasks that act on the ledger's decisions (loads, evictions,
//! keep-alive expiries).
//!
//! Every decision is taken under `inner`'s lock, from facts read there: a
//! model's leases are its manager's count (read under the lock, never
//! copied), and every event is sent under the lock, so the event stream is
//! in decision order. Nothing awaits under the lock. Whatever may let a
//! waiting load in (a lease released, memory freed, a load ended, a pin
//! removed) bumps `changed`, which waiting loads and the keep-alive task
//! watch: no polling.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::keep_alive::KeepAlive;
use super::lease::{PoolLease, Releases};
use super::ledger::{Admission, Hold, Ledger, TrueUp};
use super::rt::{self, Instant, Spawner};
use super::status::{Metrics, ModelStatus, PoolEvent, PoolEventKind, PoolSnapshot, UnloadReason};
use super::{ModelOptions, PoolConfig, ReloadPolicy};
use crate::builder::{ModelManagerBuilder, Settings};
use crate::error::{Blocker, Error, Result};
use crate::io::plan::Plan;
use crate::io::ModelSource;
use crate::loader::Runtime;
use crate::manager::ModelManager;
use crate::pipeline::Pipeline;
use crate::state::State;

/// A charge's key: a model id and its version.
pub(crate) type Key = (Arc<str>, u64);

/// What a load ended with, shared with everyone waiting for it.
pub(crate) type Outcome = Option<Result<u64>>;

/// One loaded (or loading) version of a model: a manager of its own, with
/// the lifecycle every manager has.
pub(crate) struct Version<P: Pipeline> {
    pub(crate) number: u64,
    pub(crate) manager: ModelManager<P>,
    pub(crate) source: Arc<ModelSource>,
}

/// A load in flight for a model.
struct Job<P: Pipeline> {
    version: u64,
    cancel: CancellationToken,
    /// Set when a newer request (a reload) replaced it: its waiters join
    /// the newer load instead of failing.
    superseded: Arc<std::sync::atomic::AtomicBool>,
    outcome: watch::Receiver<Outcome>,
    /// Its manager, once admitted.
    loading: Option<Arc<Version<P>>>,
}

struct Entry<P: Pipeline> {
    id: Arc<str>,
    /// What a load on demand loads: the serving version's source.
    source: Arc<ModelSource>,
    serving: Option<Arc<Version<P>>>,
    job: Option<Job<P>>,
    retiring: Vec<Arc<Version<P>>>,
    keep_alive: KeepAlive,
    pinned: bool,
    /// The pool's logical clock at the last acquire or release.
    last_used: u64,
    last_used_at: Option<Instant>,
    last_error: Option<Error>,
    /// Until then an acquire answers `last_error` instead of loading.
    retry_at: Option<Instant>,
    waiters: usize,
    /// Loads of it stopped (cancelled, replaced) but not yet ended: a new
    /// load of it waits for them, so it is never loaded twice at once.
    stopping: usize,
    /// `remove` has begun: no new command reaches it.
    removing: bool,
    /// Its first version: lower ones belong to a model removed before it
    /// was added again under the same id.
    first_version: u64,
}

impl<P: Pipeline> Entry<P> {
    /// Leases on every version of it: the model is in use while any is
    /// held (its keep-alive stops, it is not evicted).
    fn leases(&self) -> usize {
        self.serving
            .iter()
            .chain(&self.retiring)
            .map(|v| v.manager.outstanding_leases())
            .sum()
    }

    /// Take its load in flight out (it stops, and frees what it read
    /// before it ends); whether there was one.
    fn stop_job(&mut self, queue: &mut VecDeque<Key>, superseded: bool) -> bool {
        match self.job.take() {
            Some(job) => {
                job.superseded
                    .store(superseded, std::sync::atomic::Ordering::Relaxed);
                job.cancel.cancel();
                queue.retain(|k| !(k.0 == self.id && k.1 == job.version));
                self.stopping += 1;
                true
            }
            None => false,
        }
    }
}

struct Inner<P: Pipeline> {
    ledger: Ledger<Key>,
    entries: BTreeMap<Arc<str>, Entry<P>>,
    /// Loads waiting for memory, first come first served.
    queue: VecDeque<Key>,
    /// Loads admitted and running.
    loading: usize,
    /// The logical clock of recency.
    tick: u64,
    /// The last version number of every id ever added: a model removed and
    /// added again goes on counting, so no two loads share a key.
    versions: BTreeMap<Arc<str>, u64>,
    shut_down: bool,
}

pub(crate) struct Core<P: Pipeline> {
    config: PoolConfig<P::Options>,
    device: candle_core::Device,
    pub(crate) runtime: Runtime,
    pub(crate) spawner: Spawner,
    inner: Mutex<Inner<P>>,
    changed: watch::Sender<u64>,
    events: broadcast::Sender<PoolEvent>,
    pub(crate) metrics: Metrics,
    pub(crate) stop: CancellationToken,
    origin: Instant,
}

/// What one look at the queue decided for a load.
enum Step {
    Admitted,
    /// Every load slot is taken, or a stopped load of the same model is
    /// still ending: bounded by those loads, which end by themselves.
    Slot,
    /// Not its turn: a load ahead in the queue waits for memory.
    Turn,
    /// Its turn, waiting for memory that leases hold or that is being
    /// freed. This wait and the one behind it (`Turn`) are bounded by the
    /// admission timeout, counted from the request.
    Wait,
    Fail(Error),
}

impl<P: Pipeline> Core<P> {
    pub(crate) fn new(
        config: PoolConfig<P::Options>,
        device: candle_core::Device,
        runtime: Runtime,
        spawner: Spawner,
    ) -> Arc<Self> {
        let core = Arc::new(Core {
            inner: Mutex::new(Inner {
                ledger: Ledger::new(config.budget),
                entries: BTreeMap::new(),
                queue: VecDeque::new(),
                loading: 0,
                tick: 0,
                versions: BTreeMap::new(),
                shut_down: false,
            }),
            config,
            device,
            runtime,
            spawner,
            changed: watch::Sender::new(0),
            events: broadcast::Sender::new(4096),
            metrics: Metrics::new(),
            stop: CancellationToken::new(),
            origin: Instant::now(),
        });
        core.spawner
            .spawn(Core::keep_alive_task(Arc::downgrade(&core)));
        core
    }

    pub(crate) fn config(&self) -> &PoolConfig<P::Options> {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, Inner<P>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.origin)
    }

    /// Wake whoever waits for memory or a deadline.
    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A load leaves the queue without being admitted: the next in line
    /// may have its turn now.
    fn leave_queue(&self, key: &Key) {
        self.lock().queue.retain(|k| k != key);
        self.bump();
    }

    fn emit(&self, id: &Arc<str>, version: u64, kind: PoolEventKind) {
        // No subscriber is not an error.
        let _ = self.events.send(PoolEvent {
            id: id.to_string(),
            version,
            kind,
        });
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<PoolEvent> {
        self.events.subscribe()
    }

    // ---- the model table ----------------------------------------------

    pub(crate) fn add(&self, id: &str, source: ModelSource, options: ModelOptions) -> Result<()> {
        refuse_stream(&source)?;
        if id.is_empty() {
            return Err(Error::InvalidArgument(
                "a model id must not be empty".into(),
            ));
        }
        let mut inner = self.lock();
        if inner.shut_down {
            return Err(Error::ShutDown);
        }
        if inner.entries.contains_key(id) {
            return Err(Error::InvalidArgument(format!(
                "the pool already has a model {id:?}"
            )));
        }
        let id: Arc<str> = Arc::from(id);
        let now = self.now();
        let keep_alive = options.keep_alive.unwrap_or(self.config.keep_alive);
        let last_version = inner.versions.get(&id).copied().unwrap_or(0);
        inner.entries.insert(
            id.clone(),
            Entry {
                id,
                source: Arc::new(source),
                serving: None,
                job: None,
                retiring: Vec::new(),
                keep_alive: KeepAlive::new(keep_alive, now),
                pinned: options.pinned,
                last_used: 0,
                last_used_at: None,
                last_error: None,
                retry_at: None,
                waiters: 0,
                stopping: 0,
                removing: false,
                first_version: last_version + 1,
            },
        );
        Ok(())
    }

    pub(crate) fn set_pinned(&self, id: &str, pinned: bool) -> Result<()> {
        let mut inner = self.lock();
        let entry = entry_mut(&mut inner, id)?;
        entry.pinned = pinned;
        drop(inner);
        self.bump();
        Ok(())
    }

    pub(crate) fn set_keep_alive(&self, id: &str, ttl: Option<Duration>) -> Result<()> {
        let now = self.now();
        let mut inner = self.lock();
        let entry = entry_mut(&mut inner, id)?;
        entry.keep_alive.set_ttl(ttl, now);
        drop(inner);
        self.bump();
        Ok(())
    }

    // ---- acquire --------------------------------------------------------

    /// A lease on `id`'s serving version, loading it first if need be.
    pub(crate) async fn acquire(self: &Arc<Self>, id: &str) -> Result<PoolLease<P>> {
        // A ready model: a lease at once, one lock, nobody woken.
        {
            let mut inner = self.lock();
            if inner.shut_down {
                return Err(Error::ShutDown);
            }
            if let Some(lease) = self.lease_locked(&mut inner, id)? {
                self.metrics.hits.inc();
                return Ok(lease);
            }
        }
        let _waiter = Waiter::new(self, id)?;
        let mut waited = false;
        loop {
            let mut outcome = {
                let mut inner = self.lock();
                if inner.shut_down {
                    return Err(Error::ShutDown);
                }
                if let Some(lease) = self.lease_locked(&mut inner, id)? {
                    if waited {
                        self.metrics.misses.inc();
                    } else {
                        self.metrics.hits.inc();
                    }
                    return Ok(lease);
                }
                let entry = entry_mut(&mut inner, id)?;
                if let Some(job) = &entry.job {
                    job.outcome.clone()
                } else if let (Some(error), Some(retry_at)) = (&entry.last_error, entry.retry_at) {
                    if Instant::now() < retry_at {
                        return Err(error.clone());
                    }
                    let source = entry.source.clone();
                    self.start_job(&mut inner, id, source, None)?
                } else {
                    let source = entry.source.clone();
                    self.start_job(&mut inner, id, source, None)?
                }
            };
            waited = true;
            match wait_outcome(&mut outcome).await {
                Ok(_) => {}
                // A load replaced by a newer one (a reload: the newest
                // request wins): join that one.
                Err(Error::Superseded) if !self.lock().shut_down => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// A lease on `id` if it is ready now.
    pub(crate) fn try_acquire(self: &Arc<Self>, id: &str) -> Result<PoolLease<P>> {
        let mut inner = self.lock();
        if inner.shut_down {
            return Err(Error::ShutDown);
        }
        match self.lease_locked(&mut inner, id)? {
            Some(lease) => {
                self.metrics.hits.inc();
                Ok(lease)
            }
            None => {
                let entry = entry_mut(&mut inner, id)?;
                Err(Error::NotReady(status_state(entry)))
            }
        }
    }

    fn lease_locked(
        self: &Arc<Self>,
        inner: &mut Inner<P>,
        id: &str,
    ) -> Result<Option<PoolLease<P>>> {
        inner.tick += 1;
        let tick = inner.tick;
        let entry = entry_mut(inner, id)?;
        let Some(version) = &entry.serving else {
            return Ok(None);
        };
        let Ok(lease) = version.manager.acquire() else {
            return Ok(None);
        };
        let number = version.number;
        entry.last_used = tick;
        entry.last_used_at = Some(Instant::now());
        entry.keep_alive.busy();
        Ok(Some(PoolLease::new(
            lease,
            self.clone(),
            entry.id.clone(),
            number,
        )))
    }

    /// A lease of `version` of `id` was dropped.
    fn lease_released(&self, id: &str, version: u64) {
        let now = self.now();
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let mut idle = false;
        // (Not a model added since under the same id.)
        if let Some(entry) = inner
            .entries
            .get_mut(id)
            .filter(|e| version >= e.first_version)
        {
            entry.last_used = tick;
            entry.last_used_at = Some(Instant::now());
            // The clock starts when the model's last lease goes, whatever
            // version it was on.
            if entry.leases() == 0 {
                entry.keep_alive.idle(now);
                idle = true;
            }
        }
        drop(inner);
        // Only a model no longer in use can let a waiting load in or start
        // its keep-alive: other releases wake nobody.
        if idle {
            self.bump();
        }
    }

    // ---- loads ----------------------------------------------------------

    /// Start loading `id` (unless it is ready or loading) and wait for it.
    pub(crate) async fn load(self: &Arc<Self>, id: &str) -> Result<u64> {
        loop {
            let mut outcome = {
                let mut inner = self.lock();
                if inner.shut_down {
                    return Err(Error::ShutDown);
                }
                let entry = entry_mut(&mut inner, id)?;
                if let Some(serving) = &entry.serving {
                    return Ok(serving.number);
                }
                match &entry.job {
                    Some(job) => job.outcome.clone(),
                    None => {
                        let source = entry.source.clone();
                        self.start_job(&mut inner, id, source, None)?
                    }
                }
            };
            match wait_outcome(&mut outcome).await {
                // A reload replaced this load: wait for that one.
                Err(Error::Superseded) if !self.lock().shut_down => {}
                outcome => return outcome,
            }
        }
    }

    /// Load `source` as the next version of `id`, beside the serving one;
    /// the newest reload wins.
    pub(crate) fn reload(
        self: &Arc<Self>,
        id: &str,
        source: ModelSource,
        policy: ReloadPolicy,
    ) -> Result<watch::Receiver<Outcome>> {
        refuse_stream(&source)?;
        let mut inner = self.lock();
        if inner.shut_down {
            return Err(Error::ShutDown);
        }
        let entry = entry_mut(&mut inner, id)?;
        let replaced = entry.job.as_ref().map(|j| (entry.id.clone(), j.version));
        let queued = inner
            .queue
            .iter()
            .filter(|k| Some(*k) != replaced.as_ref())
            .count();
        if queued >= self.config.max_queue {
            return Err(Error::QueueFull {
                limit: self.config.max_queue,
            });
        }
        let Inner { entries, queue, .. } = &mut *inner;
        if let Some(entry) = entries.get_mut(id) {
            // The newest request wins: the older load stops (and frees
            // what it read before its charge goes); its waiters join this
            // one.
            entry.stop_job(queue, true);
        }
        self.start_job(&mut inner, id, Arc::new(source), Some(policy))
    }

    /// Cancel the load in flight for `id`; whether there was one.
    pub(crate) fn cancel(&self, id: &str) -> Result<bool> {
        let mut inner = self.lock();
        entry_mut(&mut inner, id)?;
        let Inner { entries, queue, .. } = &mut *inner;
        let stopped = entries
            .get_mut(id)
            .is_some_and(|entry| entry.stop_job(queue, false));
        drop(inner);
        self.bump();
        Ok(stopped)
    }

    fn start_job(
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
        let id = entry_mut(inner, id)?.id.clone();
        // The pool's one counter per id: it goes on across remove and add.
        let version = inner.versions.get(&id).map_or(1, |v| v + 1);
        inner.versions.insert(id.clone(), version);
        let entry = entry_mut(inner, &id)?;
        let cancel = self.stop.child_token();
        let superseded = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = watch::channel(None);
        entry.job = Some(Job {
            version,
            cancel: cancel.clone(),
            superseded: superseded.clone(),
            outcome: rx.clone(),
            loading: None,
        });
        inner.queue.push_back((id.clone(), version));
        self.emit(&id, version, PoolEventKind::Queued);
        let core = self.clone();
        let requested_at = Instant::now();
        self.spawner.spawn(async move {
            let key = (id, version);
            let mut result = core
                .run_job(&key, source, reload, &cancel, requested_at)
                .await;
            if result.is_err() && superseded.load(std::sync::atomic::Ordering::Relaxed) {
                result = Err(Error::Superseded);
            }
            core.finish_job(&key, &result, reload.is_some());
            let _ = tx.send(Some(result));
        });
        Ok(rx)
    }

    async fn run_job(
        self: &Arc<Self>,
        key: &Key,
        source: Arc<ModelSource>,
        reload: Option<ReloadPolicy>,
        cancel: &CancellationToken,
        requested_at: Instant,
    ) -> Result<u64> {
        // The estimate: headers only, on a blocking thread; the plan it
        // resolves is the one the load reads.
        let estimate = {
            let (source, dtype, device) = (
                source.clone(),
                self.config.manager.dtype,
                self.device.clone(),
            );
            let blocking = rt::blocking(move || crate::io::estimate(&source, dtype, &device));
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

        // Admission: first come first served. Waiting for memory, its own
        // or that of the loads ahead of it, is bounded by the admission
        // timeout counted from the request: a load queued behind others
        // that wait for memory gives up a timeout after its request, not a
        // timeout later each. Waiting for a load slot is bounded by the
        // loads in flight, which end by themselves.
        let queued_at = Instant::now();
        let deadline = rt::after(requested_at, self.config.admission_timeout);
        loop {
            let mut changed = self.changed.subscribe();
            changed.borrow_and_update();
            let step = {
                let mut inner = self.lock();
                self.admission_step(&mut inner, key, estimate, reload)
            };
            let memory_bound = match step {
                Step::Admitted => break,
                Step::Fail(e) => {
                    self.leave_queue(key);
                    return Err(e);
                }
                Step::Slot => false,
                Step::Turn | Step::Wait => true,
            };
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
                    let blocked_by = {
                        let mut inner = self.lock();
                        inner.queue.retain(|k| k != key);
                        blockers(&inner)
                    };
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
            .load_admitted(key, source, plan, estimate, cancel)
            .await;
        {
            let mut inner = self.lock();
            inner.loading = inner.loading.saturating_sub(1);
        }
        self.bump();
        result
    }

    /// One look at the queue for `key`, under the lock.
    fn admission_step(
        self: &Arc<Self>,
        inner: &mut Inner<P>,
        key: &Key,
        estimate: u64,
        reload: Option<ReloadPolicy>,
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
                for victim in victims {
                    if let Some(entry) = inner.entries.get_mut(&victim.0) {
                        match entry.serving.take() {
                            Some(old) if old.number == victim.1 => {
                                self.metrics.evictions.inc();
                                if let Some(at) = entry.last_used_at {
                                    self.metrics
                                        .evicted_idle
                                        .observe(at.elapsed().as_secs_f64());
                                }
                                let reason = UnloadReason::Evicted {
                                    for_id: id.to_string(),
                                };
                                self.retire(entry, old, reason);
                            }
                            other => entry.serving = other,
                        }
                    }
                }
                // Admitted once their memory is freed (`retire` bumps).
                self.refresh_holds(inner, now, reload.map(|_| &*id));
                Step::Wait
            }
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

    /// Bring the ledger's view of every charge up to date: a serving
    /// version of a model not in use (no lease on any of its versions, no
    /// caller waiting to lease it) and not pinned is evictable (unless
    /// `reloading` is its id: a reload never evicts the version it
    /// replaces); a pinned one is pinned; a version unloading with no lease
    /// is freeing; everything else (in use, loading) is busy.
    fn refresh_holds(&self, inner: &mut Inner<P>, now: Duration, reloading: Option<&str>) {
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
                (None, Some(v)) if v.manager.outstanding_leases() == 0 => Hold::Freeing,
                _ => Hold::Busy,
            };
            let (last_used, expired) = (entry.last_used, entry.keep_alive.expired(now));
            inner.ledger.set_hold(&key, hold, last_used, expired);
        }
    }

    async fn load_admitted(
        self: &Arc<Self>,
        key: &Key,
        source: Arc<ModelSource>,
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
        let outcome = match version.manager.load_planned(source.clone(), plan) {
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
    fn install(
        self: &Arc<Self>,
        key: &Key,
        version: &Arc<Version<P>>,
        bytes: u64,
        cancel: &CancellationToken,
    ) -> Result<u64> {
        let now = self.now();
        let mut inner = self.lock();
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
        entry.source = version.source.clone();
        entry.last_error = None;
        entry.retry_at = None;
        if let Some(job) = entry.job.as_mut() {
            job.loading = None;
        }
        let old = entry.serving.replace(version.clone());
        self.emit(&key.0, key.1, PoolEventKind::Ready { bytes });
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

    fn build_manager(&self, budget: u64) -> Result<ModelManager<P>> {
        let settings = Settings {
            budget: Some(budget),
            #[cfg(not(target_arch = "wasm32"))]
            runtime: Some(self.spawner.handle().clone()),
            ..self.config.manager.clone()
        };
        ModelManagerBuilder::with_settings(settings, self.config.options.clone()).build()
    }

    /// The job for `key` ended: record how, for the model's table.
    fn finish_job(&self, key: &Key, result: &Result<u64>, reload: bool) {
        let mut inner = self.lock();
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
                // A broken model is not reloaded in a tight loop; a stopped
                // load, one that found no room for now, or a reload (the
                // old version serves), is no reason to refuse the next
                // acquire.
                entry.retry_at = (!not_the_models_fault && !reload)
                    .then(|| rt::after(Instant::now(), self.config.retry_cooldown));
            }
        }
        drop(inner);
        self.bump();
    }

    // ---- unloads ----------------------------------------------------------

    /// Unload `old` (a version just taken out of service): it waits for its
    /// leases, frees its memory, and only then stops being charged.
    fn retire(self: &Arc<Self>, entry: &mut Entry<P>, old: Arc<Version<P>>, reason: UnloadReason) {
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

    /// Unload `id`: cancel its load, retire its serving version; then wait
    /// until nothing of it is charged.
    pub(crate) async fn unload(self: &Arc<Self>, id: &str) -> Result<()> {
        let versions = {
            let mut inner = self.lock();
            entry_mut(&mut inner, id)?;
            self.begin_unload(&mut inner, id)
        };
        self.bump();
        self.gone(id, &versions).await;
        Ok(())
    }

    /// Stop `id`'s load, retire its serving version; every version of it
    /// there is now (loading, retiring, charged).
    fn begin_unload(self: &Arc<Self>, inner: &mut Inner<P>, id: &str) -> Vec<u64> {
        let Inner { entries, queue, .. } = &mut *inner;
        let Some(entry) = entries.get_mut(id) else {
            return Vec::new();
        };
        entry.stop_job(queue, false);
        if let Some(old) = entry.serving.take() {
            self.retire(entry, old, UnloadReason::Unloaded);
        }
        let id = entry.id.clone();
        let mut versions: Vec<u64> = entry.retiring.iter().map(|v| v.number).collect();
        versions.extend(
            inner
                .ledger
                .iter()
                .filter(|(k, _)| k.0 == id)
                .map(|(k, _)| k.1),
        );
        versions
    }

    /// Wait until none of these `versions` of `id` is charged or retiring.
    /// Only these: a load of it started since (another caller's acquire)
    /// is not this unload's to wait for, so the wait ends.
    async fn gone(&self, id: &str, versions: &[u64]) {
        let mut changed = self.changed.subscribe();
        loop {
            changed.borrow_and_update();
            {
                let inner = self.lock();
                let charged = inner
                    .ledger
                    .iter()
                    .any(|(k, _)| &*k.0 == id && versions.contains(&k.1));
                let retiring = inner
                    .entries
                    .get(id)
                    .is_some_and(|e| e.retiring.iter().any(|v| versions.contains(&v.number)));
                if !charged && !retiring {
                    return;
                }
            }
            if changed.changed().await.is_err() {
                return;
            }
        }
    }

    /// Refuse every new command for `id` (it answers `UnknownModel` from
    /// now on), unload it, wait until nothing of it is loading, charged or
    /// retiring, then forget it.
    pub(crate) async fn remove(self: &Arc<Self>, id: &str) -> Result<()> {
        {
            let mut inner = self.lock();
            entry_mut(&mut inner, id)?.removing = true;
            self.begin_unload(&mut inner, id);
        }
        self.bump();
        let mut changed = self.changed.subscribe();
        loop {
            changed.borrow_and_update();
            {
                let mut inner = self.lock();
                let charged = inner.ledger.iter().any(|(k, _)| &*k.0 == id);
                let quiet = inner.entries.get(id).is_none_or(|e| {
                    e.serving.is_none()
                        && e.job.is_none()
                        && e.retiring.is_empty()
                        && e.stopping == 0
                });
                if !charged && quiet {
                    let removed = inner.entries.remove(id);
                    drop(inner);
                    drop(removed);
                    return Ok(());
                }
            }
            if changed.changed().await.is_err() {
                return Ok(());
            }
        }
    }

    /// Unload the models whose keep-alive ran out; sleep until the next
    /// deadline or a change. Holds the core weakly: a dropped pool ends it.
    async fn keep_alive_task(core: std::sync::Weak<Self>) {
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
    fn expire_due(self: &Arc<Self>) -> Option<Duration> {
        let now = self.now();
        let mut inner = self.lock();
        if inner.shut_down {
            return None;
        }
        let mut next: Option<Duration> = None;
        for entry in inner.entries.values_mut() {
            if entry.serving.is_none() || entry.pinned {
                continue;
            }
            // In use: a lease on any version, or a caller about to lease it.
            if entry.leases() > 0 || entry.waiters > 0 {
                continue;
            }
            if entry.keep_alive.expired(now) {
                if let Some(old) = entry.serving.take() {
                    self.retire(entry, old, UnloadReason::Expired);
                }
            } else if let Some(at) = entry.keep_alive.deadline() {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        next
    }

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
        let mut inner = self.lock();
        inner.shut_down = true;
        self.stop.cancel();
        let mut versions = Vec::new();
        for entry in inner.entries.values_mut() {
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
        drop(inner);
        self.bump();
        versions
    }
}

/// A model's status, and the bytes of its versions kept alive past
/// shutdown (unreclaimed).
fn model_status<P: Pipeline>(
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
        leases += v.manager.outstanding_leases();
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
    };
    (status, unreclaimed)
}

/// A pool loads a model again on demand: a stream, which can be read only
/// once, cannot be one of its sources.
fn refuse_stream(source: &ModelSource) -> Result<()> {
    match source {
        ModelSource::Stream(_) => Err(Error::InvalidArgument(
            "a pool loads its models again on demand: give it files or bytes, not a stream \
             (which can be read only once)"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// The state a model's status shows.
fn status_state<P: Pipeline>(entry: &Entry<P>) -> State {
    if entry.serving.is_some() {
        State::Ready
    } else if entry.job.is_some() {
        State::Loading
    } else if !entry.retiring.is_empty() {
        State::Unloading
    } else if entry.retry_at.is_some() {
        State::Failed
    } else {
        State::Idle
    }
}

/// The entry of `id`, for a command: after shutdown, every command is
/// refused with `ShutDown`.
fn entry_mut<'a, P: Pipeline>(inner: &'a mut Inner<P>, id: &str) -> Result<&'a mut Entry<P>> {
    if inner.shut_down {
        return Err(Error::ShutDown);
    }
    inner
        .entries
        .get_mut(id)
        .filter(|e| !e.removing)
        .ok_or_else(|| Error::UnknownModel(id.to_owned()))
}

/// What holds the memory a waiting load needs: every charge that cannot be
/// evicted now and is not pinned.
impl<P: Pipeline> Releases for Core<P> {
    fn released(&self, id: &str, version: u64) {
        self.lease_released(id, version);
    }
}

fn blockers<P: Pipeline>(inner: &Inner<P>) -> Vec<Blocker> {
    inner
        .ledger
        .iter()
        .filter_map(|(key, charge)| {
            if !matches!(charge.hold, Hold::Busy | Hold::Freeing) {
                return None;
            }
            let entry = inner.entries.get(&key.0)?;
            let (state, leases) = match &entry.serving {
                Some(v) if v.number == key.1 => (State::Ready, v.manager.outstanding_leases()),
                _ => match entry.retiring.iter().find(|v| v.number == key.1) {
                    Some(v) => (State::Unloading, v.manager.outstanding_leases()),
                    None => (State::Loading, 0),
                },
            };
            Some(Blocker {
                id: key.0.to_string(),
                bytes: charge.bytes,
                leases,
                state,
            })
        })
        .collect()
}

async fn wait_outcome(outcome: &mut watch::Receiver<Outcome>) -> Result<u64> {
    match outcome.wait_for(Option::is_some).await {
        Ok(outcome) => outcome.clone().unwrap_or(Err(Error::ShutDown)),
        Err(_) => Err(Error::ShutDown),
    }
}

pub(crate) async fn wait_reload(mut outcome: watch::Receiver<Outcome>) -> Result<u64> {
    wait_outcome(&mut outcome).await
}

/// Counts a caller waiting for a model while it waits.
struct Waiter<'a, P: Pipeline> {
    core: &'a Core<P>,
    id: Arc<str>,
    first_version: u64,
}

impl<'a, P: Pipeline> Waiter<'a, P> {
    fn new(core: &'a Core<P>, id: &str) -> Result<Self> {
        let mut inner = core.lock();
        let entry = entry_mut(&mut inner, id)?;
        entry.waiters += 1;
        Ok(Waiter {
            core,
            id: entry.id.clone(),
            first_version: entry.first_version,
        })
    }
}

impl<P: Pipeline> Drop for Waiter<'_, P> {
    fn drop(&mut self) {
        let mut inner = self
            .core
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = inner
            .entries
            .get_mut(&self.id)
            .filter(|e| e.first_version == self.first_version)
        {
            entry.waiters = entry.waiters.saturating_sub(1);
            // A model no longer waited for, nor leased, may now be evicted
            // or expire: wake whoever waits for that.
            if entry.waiters == 0 && entry.leases() == 0 {
                drop(inner);
                self.core.bump();
            }
        }
    }
}
