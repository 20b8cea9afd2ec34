//! Leases: acquire (joining or starting a load), release, and the
//! waiters that keep a model in use while they wait.

use std::sync::{Arc, PoisonError};

use super::{blockers, entry_mut, status_state, wait_outcome, Core, Inner, Key};
use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::pool::lease::{PoolLease, Releases};
use crate::pool::ledger::{Admission, Hold};
use crate::pool::rt;
use crate::pool::rt::Instant;

impl<P: Pipeline> Core<P> {
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
            let mut changed = self.changed.subscribe();
            changed.borrow_and_update();
            let outcome = {
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
                    Some(job.outcome.clone())
                } else if entry.parking.is_some() {
                    // Its copy to host memory is being made: it loads back
                    // from that copy once made (a load from its files now
                    // would wait for the same memory, then throw the copy
                    // away).
                    None
                } else if let (Some(error), Some(retry_at)) = (&entry.last_error, entry.retry_at) {
                    if Instant::now() < retry_at {
                        return Err(error.clone());
                    }
                    let source = entry.source.clone();
                    Some(self.start_job(&mut inner, id, source, None)?)
                } else {
                    let source = entry.source.clone();
                    Some(self.start_job(&mut inner, id, source, None)?)
                }
            };
            waited = true;
            let Some(mut outcome) = outcome else {
                let _ = changed.changed().await;
                continue;
            };
            match wait_outcome(&mut outcome).await {
                Ok(_) => {}
                // A load replaced by a newer one (a reload: the newest
                // request wins): join that one.
                Err(Error::Superseded) if !self.lock().shut_down => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// A lease on `id`'s serving version with `working` bytes reserved
    /// against the budget beside it (for its inference), evicting or
    /// waiting for unleased models as a load would; the reserve is released
    /// with the lease.
    ///
    /// Reserves that must wait do so in line, first come first served:
    /// only the first holds its model's lease while it waits (the others
    /// let theirs go and take it again at their turn), so two reserves
    /// never wait for each other's model. The wait for memory is bounded
    /// by the admission timeout, not counting waits for memory already on
    /// its way back; what can never fit beside the model and the pinned
    /// models is refused at once.
    pub(crate) async fn acquire_with(
        self: &Arc<Self>,
        id: &str,
        working: u64,
    ) -> Result<PoolLease<P>> {
        if working == 0 {
            return self.acquire(id).await;
        }
        // The model first (its load is bounded by its own admission); the
        // reserve joins the line once it holds a lease.
        let mut lease = self.acquire(id).await?;
        let number = {
            let mut inner = self.lock();
            inner.reservations += 1;
            let number = inner.reservations;
            inner.reserving.push_back(number);
            number
        };
        let _in_line = InLine { core: self, number };
        let mut deadline = rt::after(Instant::now(), self.config.admission_timeout);
        let mut paused_since: Option<Instant> = None;
        // Awaited on the caller's executor (a C or Python thread too): the
        // timer runs on the pool's runtime, made when a wait needs it.
        let mut timer: Option<(Instant, rt::Timer)> = None;
        loop {
            let key: Key = (lease_id(&lease), number);
            loop {
                let mut changed = self.changed.subscribe();
                changed.borrow_and_update();
                let step = {
                    let mut inner = self.lock();
                    if inner.shut_down {
                        return Err(Error::ShutDown);
                    }
                    let first = inner.reserving.front() == Some(&number);
                    match self.reserve(&mut inner, &key, working, lease.version(), first)? {
                        Reserve::Fits => {
                            lease.hold_working(number, working);
                            return Ok(lease);
                        }
                        step => step,
                    }
                };
                // The clock stops while memory on its way back is enough.
                match (step, paused_since) {
                    (Reserve::Freeing, None) => paused_since = Some(Instant::now()),
                    (Reserve::Freeing, Some(_)) => {}
                    (_, Some(since)) => {
                        deadline = rt::after(deadline, since.elapsed());
                        paused_since = None;
                    }
                    _ => {}
                }
                match step {
                    Reserve::NotFirst => break,
                    Reserve::Freeing => {
                        let _ = changed.changed().await;
                    }
                    _ => {
                        let fires = timer_at(&mut timer, self, deadline);
                        tokio::select! {
                            _ = changed.changed() => {}
                            () = fires => return Err(self.reserve_timed_out(working)),
                        }
                    }
                }
            }
            // Not its turn: let the model go (it may be evicted for the
            // reserve ahead) and wait for the turn, looking only at the
            // line (so that its own release, which wakes the pool, does not
            // start it again), then take the model again.
            drop(lease);
            loop {
                let mut changed = self.changed.subscribe();
                changed.borrow_and_update();
                {
                    let inner = self.lock();
                    if inner.shut_down {
                        return Err(Error::ShutDown);
                    }
                    if inner.reserving.front() == Some(&number) {
                        break;
                    }
                }
                let fires = timer_at(&mut timer, self, deadline);
                tokio::select! {
                    _ = changed.changed() => {}
                    () = fires => return Err(self.reserve_timed_out(working)),
                }
            }
            lease = self.acquire(id).await?;
        }
    }

    fn reserve_timed_out(&self, working: u64) -> Error {
        let inner = self.lock();
        if inner.shut_down {
            return Error::ShutDown;
        }
        Error::MemoryBusy {
            needed: working,
            blocked_by: blockers(&inner),
        }
    }

    /// One look at reserving `bytes` under `key` for a lease on version
    /// `leased` of `key.0`: charged (`Fits`), models evicted for it or
    /// memory on its way back (`Freeing`), leases to wait for (`Wait`), or
    /// not its turn to wait (`NotFirst`: nothing evicted); never possible,
    /// an error.
    fn reserve(
        self: &Arc<Self>,
        inner: &mut Inner<P>,
        key: &Key,
        bytes: u64,
        leased: u64,
        first: bool,
    ) -> Result<Reserve> {
        let now = self.now();
        self.refresh_holds(inner, now, None);
        // The leased version stays (and the serving one, if a reload
        // installed another meanwhile), and so do the pinned models; other
        // reserves and older versions still draining go in time.
        let serving = inner
            .entries
            .get(&key.0)
            .and_then(|e| e.serving.as_ref())
            .map(|v| v.number);
        let (own, pinned) = inner
            .ledger
            .iter()
            .fold((0u64, 0u64), |(own, pinned), (k, c)| {
                if k.0 == key.0 && (k.1 == leased || Some(k.1) == serving) {
                    (own.saturating_add(c.bytes), pinned)
                } else if c.hold == Hold::Pinned {
                    (own, pinned.saturating_add(c.bytes))
                } else {
                    (own, pinned)
                }
            });
        let available = inner
            .ledger
            .budget()
            .saturating_sub(own.saturating_add(pinned));
        if bytes > available {
            return Err(Error::InsufficientMemory {
                needed: bytes,
                available,
                pinned,
            });
        }
        let tick = inner.tick;
        let freeing = |inner: &Inner<P>| match inner.ledger.freeing_covers(key, bytes) {
            true => Reserve::Freeing,
            false => Reserve::Wait,
        };
        match inner.ledger.admit(key, bytes, tick) {
            Admission::Fits => Ok(Reserve::Fits),
            _ if !first => Ok(Reserve::NotFirst),
            Admission::Evict(victims) => {
                self.evict(inner, victims, &key.0);
                self.refresh_holds(inner, now, None);
                Ok(freeing(inner))
            }
            Admission::Wait => Ok(freeing(inner)),
            Admission::Already => Err(Error::InvalidArgument(format!(
                "working memory {} of {:?} is already reserved",
                key.1, key.0
            ))),
            Admission::Refuse {
                needed,
                available,
                pinned,
            } => Err(Error::InsufficientMemory {
                needed,
                available,
                pinned,
            }),
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

    pub(super) fn lease_locked(
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
    pub(super) fn lease_released(&self, id: &str, version: u64) {
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
            let mut changed = self.changed.subscribe();
            changed.borrow_and_update();
            let outcome = {
                let mut inner = self.lock();
                if inner.shut_down {
                    return Err(Error::ShutDown);
                }
                let entry = entry_mut(&mut inner, id)?;
                if let Some(serving) = &entry.serving {
                    return Ok(serving.number);
                }
                match &entry.job {
                    Some(job) => Some(job.outcome.clone()),
                    // Its copy is being made: load back from it.
                    None if entry.parking.is_some() => None,
                    None => {
                        let source = entry.source.clone();
                        Some(self.start_job(&mut inner, id, source, None)?)
                    }
                }
            };
            let Some(mut outcome) = outcome else {
                let _ = changed.changed().await;
                continue;
            };
            match wait_outcome(&mut outcome).await {
                // A reload replaced this load: wait for that one.
                Err(Error::Superseded) if !self.lock().shut_down => {}
                outcome => return outcome,
            }
        }
    }
}

impl<P: Pipeline> Releases for Core<P> {
    fn released(&self, id: &str, version: u64) {
        self.lease_released(id, version);
    }

    fn release_working(&self, id: &str, number: u64) {
        self.lock().ledger.release(&(Arc::from(id), number));
        self.bump();
    }
}

/// What one look at a reserve found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reserve {
    Fits,
    Freeing,
    Wait,
    NotFirst,
}

/// A waiting reserve's place in line, given up when it returns or is
/// dropped (the next in line may go then).
struct InLine<'a, P: Pipeline> {
    core: &'a Core<P>,
    number: u64,
}

impl<P: Pipeline> Drop for InLine<'_, P> {
    fn drop(&mut self) {
        self.core.lock().reserving.retain(|n| *n != self.number);
        self.core.bump();
    }
}

/// The timer for `deadline`, made (again) where it is missing or set for
/// another deadline.
fn timer_at<'t, P: Pipeline>(
    timer: &'t mut Option<(Instant, rt::Timer)>,
    core: &Core<P>,
    deadline: Instant,
) -> &'t mut rt::Timer {
    if timer.as_ref().is_some_and(|(at, _)| *at != deadline) {
        *timer = None;
    }
    let (_, fires) = timer.get_or_insert_with(|| (deadline, rt::timer(&core.spawner, deadline)));
    fires
}

fn lease_id<P: Pipeline>(lease: &PoolLease<P>) -> Arc<str> {
    Arc::from(lease.id())
}

/// Counts a caller waiting for a model while it waits.
pub(super) struct Waiter<'a, P: Pipeline> {
    core: &'a Core<P>,
    id: Arc<str>,
    first_version: u64,
}

impl<'a, P: Pipeline> Waiter<'a, P> {
    pub(super) fn new(core: &'a Core<P>, id: &str) -> Result<Self> {
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
