//! Leases: acquire (joining or starting a load), release, and the
//! waiters that keep a model in use while they wait.

use std::sync::{Arc, PoisonError};

use super::{entry_mut, status_state, wait_outcome, Core, Inner};
use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::pool::lease::{PoolLease, Releases};
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
}

impl<P: Pipeline> Releases for Core<P> {
    fn released(&self, id: &str, version: u64) {
        self.lease_released(id, version);
    }
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
