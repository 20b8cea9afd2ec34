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

mod acquire;
mod admit;
mod install;
mod models;
mod report;

use std::collections::{BTreeMap, VecDeque};
use std::mem::ManuallyDrop;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::keep_alive::KeepAlive;
use super::ledger::{Hold, Ledger};
use super::options::PoolConfig;
use super::rt::{Instant, Spawner};
use super::status::{Metrics, PoolEvent, PoolEventKind};
use super::tier::HostTier;
use crate::error::{Blocker, Error, Result};
use crate::io::{ModelSource, ParkedModel};
use crate::loader::Runtime;
use crate::manager::ModelManager;
use crate::pipeline::Pipeline;
use crate::state::State;

/// A charge's key: a model id and its version.
pub(crate) type Key = (Arc<str>, u64);

/// Keys whose number is at least this are working memory reserved by a
/// lease on the model `key.0` (see `acquire_with`), never a version of it:
/// charged against the budget like a model, never evicted, released with
/// the lease.
pub(crate) const WORKING: u64 = 1 << 63;

pub(crate) fn is_working(key: &Key) -> bool {
    key.1 >= WORKING
}

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
    /// It loads the model's parked copy back (the host tier).
    resumes: bool,
}

struct Entry<P: Pipeline> {
    id: Arc<str>,
    /// What a load on demand loads: the serving version's source.
    source: Arc<ModelSource>,
    /// A pipeline's component this entry loads, alone, from `source` (a
    /// reload's source too): `add_pipeline`.
    component: Option<Arc<str>>,
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
    /// Its copy in host memory (the host tier), charged there, and the
    /// version it was copied from.
    parked: Option<(u64, Arc<ParkedModel>)>,
    /// The version whose copy to host memory is wanted: retired, its
    /// memory freed once the copy is made. Cleared when the copy is no
    /// longer wanted (an unload, a new version installed, shutdown).
    parking: Option<u64>,
    /// Versions a park is copying, under a lease of the pool's own (no
    /// user's) held until the copy ends, wanted or not.
    park_leases: Vec<u64>,
}

impl<P: Pipeline> Entry<P> {
    /// Leases on every version of it: the model is in use while any is
    /// held (its keep-alive stops, it is not evicted).
    fn leases(&self) -> usize {
        let all: usize = self
            .serving
            .iter()
            .chain(&self.retiring)
            .map(|v| v.manager.outstanding_leases())
            .sum();
        all.saturating_sub(self.park_leases.len())
    }

    /// Leases on `version` held by users (not the host tier's copy).
    fn version_leases(&self, version: &Version<P>) -> usize {
        let own = self
            .park_leases
            .iter()
            .filter(|&&v| v == version.number)
            .count();
        version.manager.outstanding_leases().saturating_sub(own)
    }

    /// Whether its copy in host memory is of `version` (a version back on
    /// the device from that copy keeps it, and parks again without a copy).
    fn has_copy_of(&self, version: u64) -> bool {
        self.parked.as_ref().is_some_and(|(v, _)| *v == version)
    }

    /// Its copy to host memory in flight, if any, is no longer wanted: no
    /// longer charged (the park frees it when it ends).
    fn stop_parking(&mut self, host: &mut HostCopies) {
        if self.parking.take().is_some() {
            host.ledger.release(&self.id);
        }
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
    /// The host tier: its charges, and the copies let go.
    host: HostCopies,
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
    /// The last working-memory reservation's number (above `WORKING`).
    reservations: u64,
    /// Reserves not yet made, in the order they were asked for.
    reserving: VecDeque<u64>,
    shut_down: bool,
}

/// The host tier's part of the pool's state: the ledger, and the parked
/// copies let go under the lock, freed once it is released.
struct HostCopies {
    ledger: HostTier<Arc<str>>,
    unparked: Vec<Arc<ParkedModel>>,
}

/// The pool's lock. Parked copies let go while it is held are freed once
/// it is released: freeing gigabytes of page-locked memory takes a while,
/// and every acquire, release and status waits on this lock.
struct Locked<'a, P: Pipeline>(ManuallyDrop<MutexGuard<'a, Inner<P>>>);

impl<P: Pipeline> std::ops::Deref for Locked<'_, P> {
    type Target = Inner<P>;

    fn deref(&self) -> &Inner<P> {
        &self.0
    }
}

impl<P: Pipeline> std::ops::DerefMut for Locked<'_, P> {
    fn deref_mut(&mut self) -> &mut Inner<P> {
        &mut self.0
    }
}

impl<P: Pipeline> Drop for Locked<'_, P> {
    fn drop(&mut self) {
        let unparked = std::mem::take(&mut self.0.host.unparked);
        // SAFETY: dropped once, here, and never used after.
        unsafe { ManuallyDrop::drop(&mut self.0) };
        if unparked.is_empty() {
            return;
        }
        let freeing = FreeOnDrop(unparked);
        // Not on an async worker: freeing page-locked memory waits for the
        // device. (A task the runtime drops unrun frees them as it drops.)
        #[cfg(not(target_arch = "wasm32"))]
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            drop(runtime.spawn_blocking(move || drop(freeing)));
            return;
        }
        drop(freeing);
    }
}

/// Parked copies, freed when dropped.
struct FreeOnDrop(Vec<Arc<ParkedModel>>);

impl Drop for FreeOnDrop {
    fn drop(&mut self) {
        for copy in &self.0 {
            copy.free();
        }
    }
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
                host: HostCopies {
                    ledger: HostTier::new(config.host_budget),
                    unparked: Vec::new(),
                },
                entries: BTreeMap::new(),
                queue: VecDeque::new(),
                loading: 0,
                tick: 0,
                versions: BTreeMap::new(),
                reservations: WORKING,
                reserving: VecDeque::new(),
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

    fn lock(&self) -> Locked<'_, P> {
        Locked(ManuallyDrop::new(
            self.inner.lock().unwrap_or_else(PoisonError::into_inner),
        ))
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
                // Working memory: held by a lease on the model.
                _ if is_working(key) => (State::Ready, entry.leases()),
                Some(v) if v.number == key.1 => (State::Ready, entry.version_leases(v)),
                _ => match entry.retiring.iter().find(|v| v.number == key.1) {
                    Some(v) => (State::Unloading, entry.version_leases(v)),
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

/// The state a model's status shows: derived, whenever it is asked for,
/// from the managers of its versions (the serving one's state; else the
/// admitted load's, or `Loading` while it waits in the queue; else
/// `Unloading` while old versions drain), else from its last load's
/// outcome. Never stored beside them.
fn status_state<P: Pipeline>(entry: &Entry<P>) -> State {
    if let Some(serving) = &entry.serving {
        return serving.manager.current_state();
    }
    if let Some(job) = &entry.job {
        return job
            .loading
            .as_ref()
            .map_or(State::Loading, |v| match v.manager.current_state() {
                // Between its manager's Ready and the version's install.
                State::Ready | State::Idle => State::Loading,
                state => state,
            });
    }
    if !entry.retiring.is_empty() {
        return State::Unloading;
    }
    match entry.retry_at {
        Some(_) => State::Failed,
        None => State::Idle,
    }
}
