//! [`ModelManager`], the facade. It holds no logic of its own: commands
//! go to the LoaderService (which assembles pipelines through the
//! PipelineManager it owns), reads to the StateManager's published
//! snapshot, device facts to the ResourceManager.
//!
//! ```no_run
//! use model_manager::{ModelManager, State};
//!
//! # #[tokio::main] async fn main() -> Result<(), model_manager::Error> {
//! let manager = ModelManager::new()?;
//! let load = manager.load("models/tiny")?;        // returns at once
//! let snapshot = load.await?;                      // Ready, or why not
//! assert_eq!(snapshot.state, State::Ready);
//! {
//!     let lease = manager.acquire()?;              // the model, kept alive
//!     println!("{} tensors", lease.tensor_count());
//! }
//! manager.unload().await?;                         // waits for leases, frees memory
//! manager.shutdown().await;                        // joins every task and thread
//! # Ok(()) }
//! ```

use std::future::Future;
use std::sync::Arc;
#[cfg(not(target_arch = "wasm32"))]
use std::time::Duration;

use tokio::sync::OnceCell;

#[cfg(not(target_arch = "wasm32"))]
use crate::error::Error;
use crate::error::Result;
use crate::io::loaded::{PipelineInfo, TensorPipeline};
use crate::io::plan::Plan;
use crate::io::progress::Progress;
use crate::io::ModelSource;
use crate::loader::LoaderService;
use crate::pipeline::{Lease, Pipeline};
use crate::resource::{DeviceSpec, ResourceManager};
use crate::state::ticket::LoadHandle;
use crate::state::{Snapshot, State, StateManager, Subscription};

/// The parts the facade calls (the fourth, the PipelineManager, is the
/// LoaderService's: only a load assembles a pipeline).
pub(crate) struct Parts<P: Pipeline> {
    pub(crate) state: Arc<StateManager<P>>,
    pub(crate) resources: Arc<ResourceManager>,
    pub(crate) loader: Arc<LoaderService<P>>,
}

/// Owns the life of one model at a time: load, lease, unload, shutdown.
///
/// `Send + Sync`; every method takes `&self`. See the [crate docs](crate) for
/// the semantics (latest request wins, leases, events).
pub struct ModelManager<P: Pipeline = TensorPipeline> {
    parts: Parts<P>,
    shut_down: OnceCell<()>,
}

impl<P: Pipeline> ModelManager<P> {
    pub(crate) fn from_parts(parts: Parts<P>) -> Self {
        ModelManager {
            parts,
            shut_down: OnceCell::new(),
        }
    }

    /// Start loading `source`; returns at once with a handle to await.
    ///
    /// Latest request wins: a load of another model while one loads stops
    /// it (its handle resolves [`Error::Superseded`] once it has freed what
    /// it read), then loads; while one is ready, it is unloaded first
    /// (waiting for its leases). Loading the model that is already ready,
    /// loading or waiting its turn returns a handle on that load.
    pub fn load(&self, source: impl Into<ModelSource>) -> Result<LoadHandle> {
        self.parts.loader.load(Arc::new(source.into()), None)
    }

    /// [`load`](Self::load) of a shared source whose layout the caller has
    /// resolved (a pool, for its estimate): the load reads that plan
    /// instead of parsing every header again.
    pub(crate) fn load_planned(&self, source: Arc<ModelSource>, plan: Plan) -> Result<LoadHandle> {
        self.parts.loader.load(source, Some(plan))
    }

    /// Cancel the load in flight (and forget the one waiting its turn). The
    /// state stays `Loading` until the load has freed what it read, then
    /// becomes `Idle` (await [`settled`](Self::settled) or the load's handle
    /// for that). Other states refuse with [`Error::InvalidTransition`].
    pub fn cancel(&self) -> Result<()> {
        self.parts.loader.cancel()
    }

    /// Unload the model: takes effect when called (a ready model goes to
    /// `Unloading`, a load in flight is cancelled); the returned future
    /// waits until every lease is released and the memory freed (`Idle`).
    ///
    /// Cancel safe: dropping the future does not stop the unload.
    pub fn unload(&self) -> impl Future<Output = Result<()>> + Send + '_ {
        let wait = self.parts.loader.unload();
        async move {
            self.parts.loader.unloaded(wait?).await;
            Ok(())
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    /// Like [`unload`](Self::unload), but gives up waiting after `timeout`:
    /// with [`Error::LeasesOutstanding`] (and how many) while leases hold
    /// the model, else with [`Error::Timeout`] (the memory is still being
    /// freed). The unload itself goes on.
    pub fn unload_timeout(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<()>> + Send + '_ {
        let wait = self.parts.loader.unload();
        async move {
            let wait = wait?;
            match tokio::time::timeout(timeout, self.parts.loader.unloaded(wait)).await {
                Ok(()) => Ok(()),
                Err(_) => match self.outstanding_leases() {
                    0 => Err(Error::Timeout),
                    count => Err(Error::LeasesOutstanding { count }),
                },
            }
        }
    }

    /// Acknowledge a failure: `Failed --reset--> Idle`.
    pub fn reset(&self) -> Result<()> {
        self.parts.loader.reset()
    }

    /// A lease on the ready model; fails at once with [`Error::NotReady`]
    /// unless the state is `Ready` (after shutdown, [`Error::ShutDown`]).
    pub fn acquire(&self) -> Result<Lease<P>> {
        self.parts.state.acquire()
    }

    /// The current state. Lock-free, never stale.
    pub fn current_state(&self) -> State {
        self.parts.state.current().state
    }

    /// The current snapshot, with live progress and memory. Lock-free.
    pub fn snapshot(&self) -> Snapshot {
        self.parts.state.snapshot()
    }

    /// Progress of the current load (zero when none).
    pub fn progress(&self) -> Progress {
        self.snapshot().progress
    }

    /// `sample_size` from the ready pipeline's config; `None` unless `Ready`.
    pub fn sample_size(&self) -> Option<u64> {
        self.info().and_then(|i| i.sample_size)
    }

    /// The ready pipeline's config facts; `None` unless `Ready`.
    pub fn info(&self) -> Option<PipelineInfo> {
        let current = self.parts.state.current();
        current.info.as_deref().cloned()
    }

    /// Every transition from now on, in order.
    pub fn subscribe(&self) -> Subscription {
        self.parts.state.subscribe()
    }

    /// Bytes of model memory the manager holds right now (see
    /// [`Snapshot::resident_bytes`]).
    pub fn resident_bytes(&self) -> u64 {
        self.snapshot().resident_bytes
    }

    /// Leases held (on the ready model, or on the one unloading).
    pub fn outstanding_leases(&self) -> usize {
        self.parts.state.outstanding_leases()
    }

    /// Lease releases from now on: `released().await` returns once a lease
    /// of this manager has been released. For waiting until memory that
    /// leases hold may be freed, without polling.
    pub fn lease_releases(&self) -> crate::state::LeaseReleases {
        self.parts.state.lease_releases()
    }

    /// The device weights are loaded onto.
    pub fn device(&self) -> DeviceSpec {
        self.parts.resources.spec()
    }

    /// The candle device weights are loaded onto (to put inputs beside
    /// them).
    pub fn candle_device(&self) -> &candle_core::Device {
        self.parts.resources.device()
    }

    /// Wait until no load or unload is in flight (`Idle`, `Ready` or
    /// `Failed`). Cancel safe.
    pub async fn settled(&self) -> State {
        self.parts
            .state
            .wait_until(|p| matches!(p.state, State::Idle | State::Ready | State::Failed))
            .await;
        self.current_state()
    }

    /// Cancel any load, drain leases (bounded by the builder's
    /// `drain_timeout`), unload, and join every task and thread the manager
    /// started. Idempotent; concurrent calls all wait for the one shutdown.
    /// Every command afterwards fails with [`Error::ShutDown`].
    ///
    /// Returns within `drain_timeout` plus at most 1.5 s, whatever user
    /// code does. What it leaves behind when it gives up: a leased model's
    /// memory stays with its last lease (reported as
    /// [`Snapshot::unreclaimed_bytes`] until dropped); a load stuck in a
    /// progress hook or `Pipeline::assemble` keeps its thread until that
    /// returns, then frees what it read and publishes `Idle`.
    ///
    /// Cancel safe: a dropped call leaves the manager shutting down, and a
    /// later call finishes the job.
    pub async fn shutdown(&self) {
        self.shut_down
            .get_or_init(|| async { self.parts.loader.shutdown().await })
            .await;
    }

    #[cfg(not(target_arch = "wasm32"))]
    /// [`shutdown`](Self::shutdown) for threads outside any async runtime
    /// (such as a C host's), with the same bound. Fails with
    /// [`Error::InvalidArgument`] when called from inside a tokio runtime,
    /// where blocking is not allowed.
    pub fn shutdown_blocking(&self) -> Result<()> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::InvalidArgument(
                "shutdown_blocking called from an async context; use shutdown().await".into(),
            ));
        }
        if self.shut_down.initialized() {
            return Ok(());
        }
        self.parts.loader.shutdown_blocking();
        let _ = self.shut_down.set(());
        Ok(())
    }
}

impl<P: Pipeline> Drop for ModelManager<P> {
    fn drop(&mut self) {
        // Never block in an async context, never panic. After a shutdown this
        // only makes sure no runtime is left running.
        self.parts.loader.shutdown_on_drop();
    }
}

impl<P: Pipeline> std::fmt::Debug for ModelManager<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelManager")
            .field("snapshot", &self.snapshot())
            .field("device", &self.device())
            .finish_non_exhaustive()
    }
}
