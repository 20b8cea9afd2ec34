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

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use candle_core::DType;
use tokio::runtime::Handle;
use tokio::sync::OnceCell;

use crate::loader::{
    default_read_threads, LoaderConfig, LoaderService, ProgressHook, Runtime, DEFAULT_CHUNK_SIZE,
};
use crate::pipeline::{Pipeline, PipelineInfo, PipelineManager};
use crate::resource::ResourceManager;
use crate::state::{StateManager, Subscription};
use crate::{
    DeviceSpec, Error, Lease, LoadHandle, ModelSource, Progress, Result, Snapshot, State,
    TensorPipeline,
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

/// Settings for a [`ModelManager`].
///
/// ```
/// use model_manager::{DeviceSpec, ModelManager};
///
/// let manager = ModelManager::builder()
///     .device(DeviceSpec::Cpu)
///     .memory_budget(8 << 30)
///     .chunk_size(8 << 20)
///     .build()?;
/// # Ok::<(), model_manager::Error>(())
/// ```
pub struct ModelManagerBuilder<P = TensorPipeline> {
    device: DeviceSpec,
    budget: Option<u64>,
    chunk_size: usize,
    threads: usize,
    dtype: Option<DType>,
    hook: Option<ProgressHook>,
    runtime: Option<Handle>,
    drain_timeout: Duration,
    pace: Option<crate::loader::Pace>,
    trim_heap: bool,
    _pipeline: PhantomData<fn() -> P>,
}

impl Default for ModelManagerBuilder {
    fn default() -> Self {
        ModelManagerBuilder {
            device: DeviceSpec::Cpu,
            budget: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            threads: default_read_threads(),
            dtype: None,
            hook: None,
            runtime: None,
            drain_timeout: Duration::from_secs(5),
            pace: None,
            trim_heap: true,
            _pipeline: PhantomData,
        }
    }
}

impl<P: Pipeline> ModelManagerBuilder<P> {
    /// The device to load onto (default: CPU).
    pub fn device(mut self, device: DeviceSpec) -> Self {
        self.device = device;
        self
    }

    /// Refuse loads whose tensors need more than `bytes` (checked from the
    /// headers, before anything is allocated). Default: the memory available
    /// on the device at the time of the load (on the CPU, `MemAvailable`).
    pub fn memory_budget(mut self, bytes: u64) -> Self {
        self.budget = Some(bytes);
        self
    }

    /// Bytes per read: progress and cancellation are checked this often
    /// (default 4 MiB).
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = bytes.max(1);
        self
    }

    /// Threads reading one file in parallel (default: the available cores,
    /// at most 4).
    pub fn read_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Convert floating-point tensors to `dtype` while loading (F32, F16 or
    /// BF16); integer tensors keep their dtype.
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = Some(dtype);
        self
    }

    /// Call `hook` on a loader thread after every chunk read. It runs on the
    /// blocking pool, never on the async runtime; calls never overlap and
    /// each sees more bytes done than the last; a slow hook slows the load.
    pub fn on_progress(mut self, hook: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// Run the manager's tasks on this runtime (default: the current one, or
    /// one the manager owns).
    pub fn runtime(mut self, handle: Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// How long shutdown waits for leases before giving up on them
    /// (default 5 s). Memory held by a lease is freed when it is dropped.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// How a load yields to the host between chunks on wasm32 (for example
    /// a `setTimeout(0)` or `MessageChannel` turn); by default, a yield to
    /// the async executor only.
    pub fn pace(mut self, pace: crate::loader::Pace) -> Self {
        self.pace = Some(pace);
        self
    }

    /// After an unload (or a cancelled or failed load), return the memory
    /// allocator's free pages to the OS (glibc's `malloc_trim`; default on).
    /// Without it, glibc keeps the pages of tensors under 32 MiB in its heap
    /// after they are freed. Turn it off if the application manages its
    /// allocator itself.
    pub fn return_memory_to_os(mut self, enabled: bool) -> Self {
        self.trim_heap = enabled;
        self
    }

    /// Load into another pipeline type.
    pub fn pipeline<Q: Pipeline>(self) -> ModelManagerBuilder<Q> {
        ModelManagerBuilder {
            device: self.device,
            budget: self.budget,
            chunk_size: self.chunk_size,
            threads: self.threads,
            dtype: self.dtype,
            hook: self.hook,
            runtime: self.runtime,
            drain_timeout: self.drain_timeout,
            pace: self.pace,
            trim_heap: self.trim_heap,
            _pipeline: PhantomData,
        }
    }

    /// Create the manager.
    pub fn build(self) -> Result<ModelManager<P>> {
        if let Some(dtype) = self.dtype {
            if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
                return Err(Error::InvalidArgument(format!(
                    "target dtype must be f32, f16 or bf16, not {dtype:?}"
                )));
            }
        }
        let resources = ResourceManager::new(self.device, self.budget, self.trim_heap)?;
        let runtime = Runtime::new(self.runtime)?;
        let loader = LoaderService::new(
            runtime,
            LoaderConfig {
                chunk_size: self.chunk_size,
                threads: self.threads,
                dtype: self.dtype,
                hook: self.hook,
                drain_timeout: self.drain_timeout,
                pace: self.pace,
            },
        );
        Ok(ModelManager {
            shared: Arc::new(Shared {
                state: StateManager::new(),
                resources,
                pipelines: PipelineManager::new(),
                loader,
            }),
            shut_down: OnceCell::new(),
        })
    }
}
