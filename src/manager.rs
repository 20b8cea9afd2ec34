//! [`ModelManager`], the facade. It holds no logic of its own: each method
//! delegates to the lifecycle (StateManager), the resources, the pipeline
//! store or the loader.
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

use std::sync::Arc;
#[cfg(not(target_arch = "wasm32"))]
use std::time::Duration;

#[cfg(not(target_arch = "wasm32"))]
use tokio::runtime::Handle;
use tokio::sync::OnceCell;

use crate::loader::LoaderService;
use crate::pipeline::{Pipeline, PipelineInfo, PipelineManager};
use crate::resource::ResourceManager;
use crate::state::{StateManager, Subscription};
#[cfg(not(target_arch = "wasm32"))]
use crate::Error;
use crate::{
    DeviceSpec, Lease, LoadHandle, ModelManagerBuilder, ModelSource, Progress, Result, Snapshot,
    State, TensorPipeline,
};

/// The four parts behind the facade, shared with the manager's tasks.
pub(crate) struct Shared<P> {
    pub(crate) state: StateManager,
    pub(crate) resources: ResourceManager,
    pub(crate) pipelines: PipelineManager<P>,
    pub(crate) loader: LoaderService,
}

/// Owns the life of one model at a time: load, lease, unload, shutdown.
///
/// `Send + Sync`; every method takes `&self`. See the [crate docs](crate) for
/// the semantics (latest request wins, leases, events).
pub struct ModelManager<P: Pipeline = TensorPipeline> {
    shared: Arc<Shared<P>>,
    shut_down: OnceCell<()>,
}

impl ModelManager {
    /// A manager on the CPU with default settings.
    ///
    /// Its tasks run on the tokio runtime this is called from; outside one,
    /// the manager starts a small runtime of its own and joins it on
    /// shutdown.
    pub fn new() -> Result<Self> {
        Self::builder().build()
    }

    /// Configure a manager.
    pub fn builder() -> ModelManagerBuilder {
        ModelManagerBuilder::default()
    }
}

impl<P: Pipeline> ModelManager<P> {
    pub(crate) fn from_shared(shared: Arc<Shared<P>>) -> Self {
        ModelManager {
            shared,
            shut_down: OnceCell::new(),
        }
    }

    /// Start loading `source`; returns at once with a handle to await.
    ///
    /// Latest request wins: a load of another model while one loads cancels
    /// it (its handle resolves [`Error::Superseded`]); while one is ready, it
    /// is unloaded first (waiting for its leases). Loading the model that is
    /// already ready or loading does not reload it.
    pub fn load(&self, source: impl Into<ModelSource>) -> Result<LoadHandle> {
        self.shared.load(Arc::new(source.into()))
    }

    /// Cancel the load in flight (or the one waiting for an unload). Other
    /// states refuse with [`Error::InvalidTransition`].
    pub fn cancel(&self) -> Result<()> {
        self.shared.cancel()
    }

    /// Unload the model: waits until every lease is released and the memory
    /// freed (state `Idle`). While loading, cancels the load instead.
    ///
    /// Cancel safe: dropping the future does not stop the unload.
    pub async fn unload(&self) -> Result<()> {
        if let Some(generation) = self.shared.unload()? {
            self.shared.unloaded(generation).await;
        }
        Ok(())
    }

    #[cfg(not(target_arch = "wasm32"))]
    /// Like [`unload`](Self::unload), but gives up waiting after `timeout`
    /// with [`Error::LeasesOutstanding`]; the unload itself goes on and
    /// completes when the last lease is dropped. Needs a tokio timer.
    pub async fn unload_timeout(&self, timeout: Duration) -> Result<()> {
        let Some(generation) = self.shared.unload()? else {
            return Ok(());
        };
        match tokio::time::timeout(timeout, self.shared.unloaded(generation)).await {
            Ok(()) => Ok(()),
            Err(_) => Err(Error::LeasesOutstanding {
                count: self.shared.pipelines.outstanding(),
            }),
        }
    }

    /// Acknowledge a failure: `Failed --reset--> Idle`.
    pub fn reset(&self) -> Result<()> {
        self.shared.reset()
    }

    /// A lease on the ready model; fails at once with [`Error::NotReady`]
    /// unless the state is `Ready`.
    pub fn acquire(&self) -> Result<Lease<P>> {
        self.shared.acquire()
    }

    /// The current state. Lock-free, never stale.
    pub fn current_state(&self) -> State {
        self.shared.state.current().state
    }

    /// The current snapshot, with live progress. Lock-free.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.state.current().snapshot()
    }

    /// Progress of the current load (zero when none).
    pub fn progress(&self) -> Progress {
        self.snapshot().progress
    }

    /// `sample_size` from the loaded pipeline's config; `None` unless `Ready`.
    pub fn sample_size(&self) -> Option<u64> {
        self.shared.pipelines.info().and_then(|i| i.sample_size)
    }

    /// The loaded pipeline's config facts; `None` unless `Ready`.
    pub fn info(&self) -> Option<PipelineInfo> {
        self.shared.pipelines.info()
    }

    /// Every transition from now on, in order.
    pub fn subscribe(&self) -> Subscription {
        self.shared.state.subscribe()
    }

    /// Bytes of model memory resident on the device right now.
    pub fn resident_bytes(&self) -> u64 {
        self.shared.resources.resident_bytes()
    }

    /// Leases held (on the ready model, or on the one unloading).
    pub fn outstanding_leases(&self) -> usize {
        self.shared.pipelines.outstanding()
    }

    /// The device weights are loaded onto.
    pub fn device(&self) -> DeviceSpec {
        self.shared.resources.spec()
    }

    /// Wait until no load or unload is in flight (`Idle`, `Ready` or
    /// `Failed`). Cancel safe.
    pub async fn settled(&self) -> State {
        self.shared
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
    /// Cancel safe: a dropped call leaves the manager shutting down, and a
    /// later call finishes the job.
    pub async fn shutdown(&self) {
        self.shut_down
            .get_or_init(|| async {
                self.stop_tasks().await;
                self.shared.loader.runtime().shutdown().await;
            })
            .await;
    }

    #[cfg(not(target_arch = "wasm32"))]
    /// [`shutdown`](Self::shutdown) for threads outside any async runtime
    /// (such as a C host's). Fails with [`Error::InvalidArgument`] when called
    /// from inside a tokio runtime, where blocking is not allowed.
    pub fn shutdown_blocking(&self) -> Result<()> {
        if Handle::try_current().is_ok() {
            return Err(Error::InvalidArgument(
                "shutdown_blocking called from an async context; use shutdown().await".into(),
            ));
        }
        if self.shut_down.initialized() {
            return Ok(());
        }
        let handle = self.shared.loader.runtime().handle().clone();
        handle.block_on(self.stop_tasks());
        self.shared
            .loader
            .runtime()
            .shutdown_now(self.shared.loader.config.drain_timeout);
        let _ = self.shut_down.set(());
        Ok(())
    }

    async fn stop_tasks(&self) {
        if self.shared.close() {
            let drain = self.shared.loader.config.drain_timeout;
            // The unload gives up on leases `drain` after stopping starts.
            self.shared.loader.signal_stop();
            let unloaded = self
                .shared
                .state
                .wait_until(|p| p.state != State::Unloading);
            #[cfg(not(target_arch = "wasm32"))]
            let _ = tokio::time::timeout(drain + Duration::from_secs(1), unloaded).await;
            // No timer on wasm32: the unload gives up on leases at once.
            #[cfg(target_arch = "wasm32")]
            let _ = (drain, unloaded.await);
        }
        self.shared.loader.drain().await;
    }
}

impl<P: Pipeline> Drop for ModelManager<P> {
    fn drop(&mut self) {
        if self.shut_down.initialized() {
            return;
        }
        // Never block in an async context, never panic: stop everything and
        // join the owned runtime only where blocking is allowed.
        self.shared.close();
        self.shared.loader.signal_stop();
        self.shared
            .loader
            .runtime()
            .shutdown_now(self.shared.loader.config.drain_timeout);
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
