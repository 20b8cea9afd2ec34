//! [`ModelPool`]: several models under one memory budget, each with the
//! lifecycle a [`ModelManager`](crate::manager::ModelManager) has (each loaded
//! version *is* a manager of its own), with size-aware eviction,
//! keep-alive, pinning, loads on demand and zero-downtime reloads.
//!
//! ```no_run
//! use std::time::Duration;
//! use model_manager::ModelPool;
//!
//! # #[tokio::main] async fn main() -> Result<(), model_manager::Error> {
//! let pool = ModelPool::builder()
//!     .memory_budget(8 << 30)
//!     .keep_alive(Some(Duration::from_secs(300)))
//!     .build()?;
//! pool.add("encoder", "models/encoder")?;
//! pool.add("denoiser", "models/denoiser")?;
//! {
//!     let lease = pool.acquire("encoder").await?;   // loads on demand
//!     println!("{} tensors", lease.tensor_count());
//! }                                                  // its keep-alive starts
//! let new_version = pool.reload("encoder", "models/encoder-v2").await?;
//! println!("serving version {new_version}");
//! print!("{}", pool.metrics_text());
//! pool.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Semantics
//!
//! - **Ledger.** A load is charged its estimate (the headers' bytes plus
//!   the conversion peak) from the moment it is admitted until its memory
//!   is freed after its unload; the charge is trued up to the measured
//!   bytes at `Ready`. The charges never exceed the budget, at any instant;
//!   each version's manager is itself limited to its charge.
//! - **Admission**, first come first served (one load at a time by
//!   default): a load fits when the charges plus its estimate stay within
//!   the budget. Otherwise models are evicted — `Ready`, unleased,
//!   unpinned ones only: keep-alive-expired first, then the least recently
//!   used one that alone covers the shortfall, then least recently used
//!   first; all or nothing; ties by id. If that cannot make room while
//!   models are leased or loading, the load waits (woken by lease releases
//!   and frees, never by polling) up to the pool's admission timeout, then
//!   fails with [`Error::MemoryBusy`] naming what blocked it. If it could
//!   not fit even with every unpinned model gone, it fails at once with
//!   [`Error::InsufficientMemory`] (saying what pinned models hold).
//! - **Acquire** leases the serving version (and marks the model used);
//!   joins a load in flight; loads a model that is not resident; answers
//!   the last error during the retry cooldown after a failure. A model is
//!   never loaded twice at once (a new load of it waits until a stopped
//!   one has freed what it read). A model with a lease on any of its
//!   versions, or a caller waiting to lease it, is in use: not evicted,
//!   its keep-alive stopped.
//! - **Keep-alive**: a model's clock starts when its last lease is
//!   released and never runs while one is held; an acquire stops it.
//!   Forever (the default) still allows eviction under memory pressure;
//!   only [`pin`](ModelPool::pin) prevents it.
//! - **Reload** loads the new version beside the old one; leases keep the
//!   version they hold, new leases get the new one once it is ready, and
//!   the old one drains and is freed. A failed reload leaves the old
//!   version serving (its error is in the model's status); the newest
//!   reload wins. If both versions cannot fit, [`ReloadPolicy`] decides.

mod core;
pub(crate) mod evict;
pub(crate) mod keep_alive;
mod lease;
pub(crate) mod ledger;
mod rt;
mod status;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use candle_core::DType;
use tokio::sync::{broadcast, OnceCell};

use crate::builder::Settings;
use crate::error::{Error, Result};
use crate::io::loaded::TensorPipeline;
use crate::io::{ModelSource, Pace};
use crate::loader::Runtime;
use crate::pipeline::Pipeline;
use crate::resource::DeviceSpec;

use self::core::Core;
pub use lease::PoolLease;
pub use status::{ModelStatus, PoolCounters, PoolEvent, PoolEventKind, PoolSnapshot, UnloadReason};

/// What a reload does when the new version cannot fit beside the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReloadPolicy {
    /// Refuse the reload with [`Error::InsufficientMemory`]; the old
    /// version keeps serving (the default: no downtime, ever).
    #[default]
    KeepServing,
    /// Unload the old version first (waiting for its leases), then load the
    /// new one: acquires wait for the new version meanwhile.
    UnloadFirst,
}

/// Per-model settings for [`ModelPool::add_with`].
#[derive(Debug, Clone, Default)]
pub struct ModelOptions {
    keep_alive: Option<Option<Duration>>,
    pinned: bool,
}

impl ModelOptions {
    /// The pool's defaults: its keep-alive, not pinned.
    pub fn new() -> Self {
        Self::default()
    }

    /// This model's keep-alive (`None`: forever).
    pub fn keep_alive(mut self, ttl: Option<Duration>) -> Self {
        self.keep_alive = Some(ttl);
        self
    }

    /// Never evict this model (it is unloaded only when asked).
    pub fn pinned(mut self, pinned: bool) -> Self {
        self.pinned = pinned;
        self
    }
}

pub(crate) struct PoolConfig<O> {
    pub(crate) budget: u64,
    /// What each model's manager is built with (its budget and runtime
    /// are the pool's to give).
    pub(crate) manager: Settings,
    pub(crate) keep_alive: Option<Duration>,
    pub(crate) max_queue: usize,
    pub(crate) concurrent_loads: usize,
    pub(crate) admission_timeout: Duration,
    pub(crate) retry_cooldown: Duration,
    pub(crate) options: Arc<O>,
}

/// Settings for a [`ModelPool`].
pub struct ModelPoolBuilder<P: Pipeline = TensorPipeline> {
    config: PoolConfig<P::Options>,
    budget: Option<u64>,
    #[cfg(not(target_arch = "wasm32"))]
    runtime: Option<tokio::runtime::Handle>,
}

impl Default for ModelPoolBuilder {
    fn default() -> Self {
        ModelPoolBuilder {
            config: PoolConfig {
                budget: 0,
                manager: Settings::default(),
                keep_alive: None,
                max_queue: 64,
                concurrent_loads: 1,
                admission_timeout: Duration::from_secs(60),
                retry_cooldown: Duration::from_secs(5),
                options: Arc::new(()),
            },
            budget: None,
            #[cfg(not(target_arch = "wasm32"))]
            runtime: None,
        }
    }
}

impl<P: Pipeline> ModelPoolBuilder<P> {
    /// The bytes all models together may hold (default: the memory
    /// available when the pool is built: `MemAvailable` on the CPU, the
    /// driver's free memory on CUDA; required on Metal).
    pub fn memory_budget(mut self, bytes: u64) -> Self {
        self.budget = Some(bytes);
        self
    }

    /// The device every model loads onto (default: CPU). One pool per
    /// device: the budget is that device's.
    pub fn device(mut self, device: DeviceSpec) -> Self {
        self.config.manager.device = device;
        self
    }

    /// Convert floating-point tensors to `dtype` while loading.
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.config.manager.dtype = Some(dtype);
        self
    }

    /// Bytes per read (see [`ModelManagerBuilder::chunk_size`](crate::builder::ModelManagerBuilder::chunk_size)).
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.config.manager.chunk_size = bytes.max(1);
        self
    }

    /// Threads reading one file in parallel.
    pub fn read_threads(mut self, threads: usize) -> Self {
        self.config.manager.threads = Some(threads.max(1));
        self
    }

    /// How long shutdown waits for leases (default 5 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.config.manager.drain_timeout = timeout;
        self
    }

    /// Return freed memory to the OS after each unload (default on; see
    /// [`ModelManagerBuilder::return_memory_to_os`](crate::builder::ModelManagerBuilder::return_memory_to_os)).
    pub fn return_memory_to_os(mut self, enabled: bool) -> Self {
        self.config.manager.trim_heap = enabled;
        self
    }

    /// The default keep-alive of a model (`None`, the default: forever).
    pub fn keep_alive(mut self, ttl: Option<Duration>) -> Self {
        self.config.keep_alive = ttl;
        self
    }

    /// At most this many loads wait for memory (a load is in the queue
    /// from its request to its admission); more are refused with
    /// [`Error::QueueFull`] (default 64; at least 1).
    pub fn max_queue(mut self, loads: usize) -> Self {
        self.config.max_queue = loads.max(1);
        self
    }

    /// Loads that may run at once (default 1: one reads at the device's
    /// full speed rather than several sharing it).
    pub fn concurrent_loads(mut self, loads: usize) -> Self {
        self.config.concurrent_loads = loads.max(1);
        self
    }

    /// How long a load may wait for memory, counted from its request:
    /// memory that leased or loading models hold, whether it waits for it
    /// itself or behind earlier loads that do. Past it the load fails with
    /// [`Error::MemoryBusy`] naming what holds the memory (default 60 s;
    /// `Duration::MAX` waits without bound). Waiting for a load slot
    /// ([`concurrent_loads`](Self::concurrent_loads)) is bounded by the
    /// loads in flight, not by this timeout.
    pub fn admission_timeout(mut self, timeout: Duration) -> Self {
        self.config.admission_timeout = timeout;
        self
    }

    /// After a model's load fails, acquires answer that error for this long
    /// instead of loading it again (default 5 s; zero retries at once).
    pub fn retry_cooldown(mut self, cooldown: Duration) -> Self {
        self.config.retry_cooldown = cooldown;
        self
    }

    /// Run the pool's tasks (and its models' loads) on this runtime; by
    /// default the pool starts a small runtime of its own and joins it on
    /// shutdown.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// How loads yield to the host between chunks on wasm32 (see
    /// [`ModelManagerBuilder::pace`](crate::builder::ModelManagerBuilder::pace)).
    pub fn pace(mut self, pace: Pace) -> Self {
        self.config.manager.pace = Some(pace);
        self
    }

    /// Load into another pipeline type, giving its `assemble` these options.
    pub fn pipeline_with<Q: Pipeline>(self, options: Q::Options) -> ModelPoolBuilder<Q> {
        let c = self.config;
        ModelPoolBuilder {
            config: PoolConfig {
                budget: c.budget,
                manager: c.manager,
                keep_alive: c.keep_alive,
                max_queue: c.max_queue,
                concurrent_loads: c.concurrent_loads,
                admission_timeout: c.admission_timeout,
                retry_cooldown: c.retry_cooldown,
                options: Arc::new(options),
            },
            budget: self.budget,
            #[cfg(not(target_arch = "wasm32"))]
            runtime: self.runtime,
        }
    }

    /// Load into another pipeline type, whose options are its default.
    pub fn pipeline<Q>(self) -> ModelPoolBuilder<Q>
    where
        Q: Pipeline,
        Q::Options: Default,
    {
        self.pipeline_with(Q::Options::default())
    }

    /// Create the pool.
    pub fn build(self) -> Result<ModelPool<P>> {
        let mut config = self.config;
        config.manager.check()?;
        let device = config.manager.device.open()?;
        config.budget = match self.budget {
            Some(bytes) => bytes,
            None => default_budget(&device)?,
        };
        #[cfg(not(target_arch = "wasm32"))]
        let (runtime, spawner) = {
            let runtime = Runtime::new(self.runtime);
            let handle = runtime.handle()?;
            (runtime, rt::Spawner::new(handle))
        };
        #[cfg(target_arch = "wasm32")]
        let (runtime, spawner) = (Runtime::new(None), rt::Spawner::new());
        Ok(ModelPool {
            core: Core::new(config, device, runtime, spawner),
            shut_down: OnceCell::new(),
        })
    }
}

fn default_budget(device: &candle_core::Device) -> Result<u64> {
    let budget = crate::resource::free_memory(device);
    budget.ok_or_else(|| {
        Error::InvalidArgument(
            "the device's free memory is unknown here: give the pool a memory_budget".into(),
        )
    })
}

/// Several models under one memory budget (see the [module docs](self)).
///
/// `Send + Sync`; every method takes `&self`. Models are named by ids the
/// caller chooses.
pub struct ModelPool<P: Pipeline = TensorPipeline> {
    core: Arc<Core<P>>,
    shut_down: OnceCell<()>,
}

impl ModelPool {
    /// Configure a pool.
    pub fn builder() -> ModelPoolBuilder {
        ModelPoolBuilder::default()
    }
}

impl<P: Pipeline> ModelPool<P> {
    /// Make `source` known as `id`, with the pool's defaults. Loads
    /// nothing: the first acquire (or [`load`](Self::load)) does.
    pub fn add(&self, id: &str, source: impl Into<ModelSource>) -> Result<()> {
        self.core.add(id, source.into(), ModelOptions::default())
    }

    /// [`add`](Self::add), with this model's keep-alive or pin.
    pub fn add_with(
        &self,
        id: &str,
        source: impl Into<ModelSource>,
        options: ModelOptions,
    ) -> Result<()> {
        self.core.add(id, source.into(), options)
    }

    /// A lease on `id`: at once if it is ready; else after its load (one in
    /// flight is joined; one is started if none is). Cancel safe: a waiter
    /// that goes away leaves no trace, and the load goes on.
    pub async fn acquire(&self, id: &str) -> Result<PoolLease<P>> {
        self.core.acquire(id).await
    }

    /// [`acquire`](Self::acquire), giving up after `timeout` with
    /// [`Error::Timeout`] (the load goes on).
    pub async fn acquire_timeout(&self, id: &str, timeout: Duration) -> Result<PoolLease<P>> {
        rt::timeout(timeout, self.core.acquire(id))
            .await
            .unwrap_or(Err(Error::Timeout))
    }

    /// A lease on `id` if it is ready now; else [`Error::NotReady`] with
    /// its state. Never loads, never waits.
    pub fn try_acquire(&self, id: &str) -> Result<PoolLease<P>> {
        self.core.try_acquire(id)
    }

    /// Load `id` now (if it is not ready or loading) and wait until it is
    /// ready; its version. Cancel safe: the load goes on.
    pub async fn load(&self, id: &str) -> Result<u64> {
        self.core.load(id).await
    }

    /// Load `source` as the next version of `id` beside the serving one
    /// ([`ReloadPolicy::KeepServing`]); the future resolves to the new
    /// version once it serves. Takes effect when called: dropping the
    /// future does not stop the reload.
    pub fn reload(
        &self,
        id: &str,
        source: impl Into<ModelSource>,
    ) -> impl Future<Output = Result<u64>> + Send + 'static {
        self.reload_with(id, source, ReloadPolicy::default())
    }

    /// [`reload`](Self::reload), choosing what happens when both versions
    /// cannot fit. With [`ReloadPolicy::UnloadFirst`] the old version is
    /// taken out of service at once (downtime accepted): if the new one
    /// then fails (or waits past the admission timeout for the old one's
    /// leases), the model is left unloaded, and the next acquire loads the
    /// source that served before.
    pub fn reload_with(
        &self,
        id: &str,
        source: impl Into<ModelSource>,
        policy: ReloadPolicy,
    ) -> impl Future<Output = Result<u64>> + Send + 'static {
        let started = self.core.reload(id, source.into(), policy);
        async move { self::core::wait_reload(started?).await }
    }

    /// Stop the load (or reload) of `id` in flight; whether there was one.
    /// Its waiters get [`Error::Cancelled`].
    pub fn cancel(&self, id: &str) -> Result<bool> {
        self.core.cancel(id)
    }

    /// Unload `id`: its load in flight stops, its serving version waits
    /// for its leases and is freed. Takes effect when called; the future
    /// waits until nothing of it is charged. The model stays known.
    pub async fn unload(&self, id: &str) -> Result<()> {
        self.core.unload(id).await
    }

    /// [`unload`](Self::unload), then forget `id`.
    pub async fn remove(&self, id: &str) -> Result<()> {
        self.core.remove(id).await
    }

    /// Pin `id`: never evicted (nor expired) until unpinned.
    pub fn pin(&self, id: &str) -> Result<()> {
        self.core.set_pinned(id, true)
    }

    /// Unpin `id`.
    pub fn unpin(&self, id: &str) -> Result<()> {
        self.core.set_pinned(id, false)
    }

    /// Set `id`'s keep-alive (`None`: forever); a running clock restarts.
    pub fn set_keep_alive(&self, id: &str, ttl: Option<Duration>) -> Result<()> {
        self.core.set_keep_alive(id, ttl)
    }

    /// `id`'s status, if the pool knows it.
    pub fn status(&self, id: &str) -> Option<ModelStatus> {
        self.core.status(id)
    }

    /// Every model's status, the charges and the counters.
    pub fn snapshot(&self) -> PoolSnapshot {
        self.core.snapshot()
    }

    /// The pool's events from now on, in order.
    pub fn subscribe(&self) -> broadcast::Receiver<PoolEvent> {
        self.core.subscribe()
    }

    /// The counters and gauges in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.core.metrics.text(&self.core.snapshot())
    }

    /// The memory budget, in bytes.
    pub fn budget(&self) -> u64 {
        self.core.config().budget
    }

    /// Bytes charged now.
    pub fn charged(&self) -> u64 {
        self.core.charged()
    }

    /// Stop every load, drain every model's leases (bounded by the drain
    /// timeout), free them, and join the pool's tasks and runtime. Every
    /// command afterwards fails with [`Error::ShutDown`]. Returns within
    /// the drain timeout plus a few seconds, whatever user code does.
    /// Idempotent and cancel safe.
    pub async fn shutdown(&self) {
        self.shut_down
            .get_or_init(|| async {
                let versions = self.core.begin_shutdown();
                let drain = self.core.config().manager.drain_timeout;
                let bound = drain.saturating_add(Duration::from_secs(2));
                // Every manager at once, natively; on wasm32 (one thread,
                // nothing to join) one after the other.
                #[cfg(not(target_arch = "wasm32"))]
                {
                    let mut set = tokio::task::JoinSet::new();
                    for version in versions {
                        set.spawn_on(
                            async move { version.manager.shutdown().await },
                            self.core.spawner.handle(),
                        );
                    }
                    let _ = rt::timeout(bound, async { while set.join_next().await.is_some() {} })
                        .await;
                    set.abort_all();
                }
                #[cfg(target_arch = "wasm32")]
                let _ = rt::timeout(bound, async {
                    for version in versions {
                        version.manager.shutdown().await;
                    }
                })
                .await;
                let tasks = &self.core.spawner.tasks;
                tasks.close();
                let _ = rt::timeout(Duration::from_secs(1), tasks.wait()).await;
                self.core.finish_shutdown();
                self.core
                    .runtime
                    .shutdown(crate::loader::SHUTDOWN_GRACE)
                    .await;
            })
            .await;
    }
}

impl<P: Pipeline> ModelPool<P> {
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
        let waiter = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| Error::Device(format!("cannot start a runtime to wait on: {e}")))?;
        waiter.block_on(self.shutdown());
        Ok(())
    }
}

impl<P: Pipeline> Drop for ModelPool<P> {
    fn drop(&mut self) {
        if !self.shut_down.initialized() {
            self.core.begin_shutdown();
            self.core
                .runtime
                .shutdown_now(crate::loader::SHUTDOWN_GRACE);
        }
    }
}

impl<P: Pipeline> std::fmt::Debug for ModelPool<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelPool")
            .field("snapshot", &self.snapshot())
            .finish_non_exhaustive()
    }
}

#[allow(dead_code)]
fn _assert_pool_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<ModelPool<TensorPipeline>>();
}
