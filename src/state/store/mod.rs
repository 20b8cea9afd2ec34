//! StateManager: the runtime machine under one lock, the generation counter,
//! the published snapshot (the one source of truth, read lock-free) and the
//! ordered event stream.
//!
//! Everything a reader may ask about the model at one instant — state,
//! generation, progress, the installed pipeline, the model's memory — is in
//! one [`Published`] value, replaced in one step under the lock by every
//! transition. Nothing is published in two steps.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
#[cfg(not(target_arch = "wasm32"))]
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{broadcast, watch};

use super::events::{LeaseReleases, Subscription};
use super::machine::Machine;
use super::ticket::LoadTicket;
use super::typed::ModelId;
use super::{ProgressCounters, Snapshot, State, StateEvent};
use crate::error::{Error, Result};
use crate::io::loaded::PipelineInfo;
use crate::pipeline::{Installed, Lease, LeaseCount, Pipeline};
use crate::resource::Ledger;

/// How many transitions a subscriber may fall behind before it is told it
/// missed some.
const EVENT_CAPACITY: usize = 1024;

mod txn;

/// What is published after every transition; read without locking.
pub(crate) struct Published {
    pub(crate) state: State,
    pub(crate) generation: u64,
    pub(crate) model: Option<ModelId>,
    pub(crate) error: Option<Error>,
    pub(crate) progress: Option<Arc<ProgressCounters>>,
    /// The ready pipeline's config facts: present exactly in `Ready`. Only
    /// the facts: a reader holding this snapshot keeps no model memory alive.
    pub(crate) info: Option<Arc<PipelineInfo>>,
}

pub(crate) struct StateManager<P> {
    core: Mutex<Core<P>>,
    current: ArcSwap<Published>,
    ledger: Arc<Ledger>,
    events: broadcast::Sender<StateEvent>,
    changed: watch::Sender<u64>,
    /// Bumped by every lease release (see [`LeaseReleases`]).
    released: Arc<watch::Sender<u64>>,
    /// Notified with `core` held at every transition (blocking waits).
    settle: Condvar,
}

struct Core<P> {
    machine: Machine,
    generation: u64,
    progress: Option<Arc<ProgressCounters>>,
    /// The pipeline installed by the last `Finish`, until `Unload`: leases
    /// are issued on it, under the lock.
    installed: Option<Installed<P>>,
    /// The leases of the pipeline an unload retired, until it drains.
    retiring: Option<Arc<LeaseCount>>,
    /// The load running now (state `Loading`); it stays until its task has
    /// freed what it read, even once asked to stop.
    active: Option<Arc<LoadTicket>>,
    /// A load waiting for the running load to stop or the unload to drain.
    pending: Option<Arc<LoadTicket>>,
    /// Set by shutdown: every command is refused from then on.
    closed: bool,
}

/// Exclusive access to the machine: every check and every transition made
/// through one `Txn` happen atomically with respect to other commands and
/// background results.
pub(crate) struct Txn<'a, P> {
    core: MutexGuard<'a, Core<P>>,
    manager: &'a StateManager<P>,
    /// Declared after `core`, so dropped after it: runs once the lock is
    /// released (spawning a task that may end its operation at once, under
    /// the lock, if the runtime refuses it).
    after: Deferred<'a>,
}

/// Work to do once the state lock is released.
pub(crate) struct Deferred<'a>(Vec<Box<dyn FnOnce() + 'a>>);

impl Drop for Deferred<'_> {
    fn drop(&mut self) {
        for work in self.0.drain(..) {
            work();
        }
    }
}

impl<P: Pipeline> StateManager<P> {
    pub(crate) fn new(ledger: Arc<Ledger>) -> Self {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        StateManager {
            core: Mutex::new(Core {
                machine: Machine::new(),
                generation: 0,
                progress: None,
                installed: None,
                retiring: None,
                active: None,
                pending: None,
                closed: false,
            }),
            current: ArcSwap::from_pointee(Published {
                state: State::Idle,
                generation: 0,
                model: None,
                error: None,
                progress: None,
                info: None,
            }),
            ledger,
            events,
            changed: watch::Sender::new(0),
            released: Arc::new(watch::Sender::new(0)),
            settle: Condvar::new(),
        }
    }

    /// Wait until `done` holds for the published state. Cancel safe.
    pub(crate) async fn wait_until(&self, mut done: impl FnMut(&Published) -> bool) {
        let mut rx = self.changed.subscribe();
        loop {
            if done(&self.current()) {
                // A command may publish two transitions under one lock (a
                // drain then the pending load): confirm under the lock so no
                // in-between state is taken for the outcome.
                let _settled = self.core.lock().unwrap_or_else(PoisonError::into_inner);
                if done(&self.current()) {
                    return;
                }
            }
            // The sender lives in `self`: the channel cannot close here.
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// [`wait_until`](Self::wait_until) for threads outside any runtime;
    /// `false` if `timeout` ran out first.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn wait_blocking(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&Published) -> bool,
    ) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        // Every transition is published under `core` and notifies `settle`,
        // so checking under the lock loses no wake-up.
        let mut core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if done(&self.current()) {
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            core = self
                .settle
                .wait_timeout(core, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    pub(crate) fn lock(&self) -> Txn<'_, P> {
        Txn {
            // The core is consistent between any two statements that touch it,
            // so a panic elsewhere while the lock was held leaves nothing torn.
            core: self.core.lock().unwrap_or_else(PoisonError::into_inner),
            manager: self,
            after: Deferred(Vec::new()),
        }
    }

    /// The latest published state; lock-free.
    pub(crate) fn current(&self) -> arc_swap::Guard<Arc<Published>> {
        self.current.load()
    }

    /// The latest snapshot; lock-free. The memory figures are read between
    /// two reads of the published state and kept only if no transition came
    /// in between (the loader counts memory only while its state is the
    /// published one), so state and figures belong to the same instant.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut published = self.current();
        for _ in 0..64 {
            let snapshot = self.snapshot_of(&published);
            let again = self.current();
            if again.generation == published.generation {
                return snapshot;
            }
            published = again;
        }
        // Transitions kept coming: take the figures under the lock.
        let _txn = self.lock();
        self.snapshot_of(&self.current())
    }

    fn snapshot_of(&self, published: &Published) -> Snapshot {
        Snapshot {
            state: published.state,
            generation: published.generation,
            model: published.model.clone(),
            progress: published
                .progress
                .as_ref()
                .map(|p| p.read())
                .unwrap_or_default(),
            error: published.error.clone(),
            resident_bytes: self.ledger.resident(),
            unreclaimed_bytes: self.ledger.unreclaimed(),
            device_memory: self.ledger.device(),
        }
    }

    /// A lease on the published pipeline. Taken under the lock, so an unload
    /// (which retires the pipeline under the same lock) never misses it.
    pub(crate) fn acquire(&self) -> Result<Lease<P>> {
        let txn = self.lock();
        if txn.core.closed {
            return Err(Error::ShutDown);
        }
        match &txn.core.installed {
            Some(installed) => Ok(installed.lease()),
            None => Err(Error::NotReady(self.current().state)),
        }
    }

    /// The count of lease releases every lease of this manager bumps.
    pub(crate) fn lease_release_counter(&self) -> Arc<watch::Sender<u64>> {
        self.released.clone()
    }

    /// Lease releases from now on.
    pub(crate) fn lease_releases(&self) -> LeaseReleases {
        LeaseReleases {
            rx: self.released.subscribe(),
        }
    }

    /// Leases held on the ready pipeline, or on the one being unloaded.
    pub(crate) fn outstanding_leases(&self) -> usize {
        let txn = self.lock();
        match (&txn.core.installed, &txn.core.retiring) {
            (Some(installed), _) => installed.leases.outstanding(),
            (None, Some(retiring)) => retiring.outstanding(),
            (None, None) => 0,
        }
    }

    pub(crate) fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.events.subscribe(),
        }
    }
}
