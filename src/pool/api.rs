//! [`ModelPool`]: the pool's API, each call a translation into its core.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, OnceCell};

use super::core::{self, Core};
use super::lease::PoolLease;
use super::options::{ModelOptions, ReloadPolicy};
use super::rt;
use super::status::{ModelStatus, PoolEvent, PoolSnapshot};
use crate::error::{Error, Result};
use crate::io::loaded::TensorPipeline;
use crate::io::ModelSource;
use crate::pipeline::Pipeline;

/// Several models under one memory budget (see the [module docs](super)).
///
/// `Send + Sync`; every method takes `&self`. Models are named by ids the
/// caller chooses.
pub struct ModelPool<P: Pipeline = TensorPipeline> {
    core: Arc<Core<P>>,
    shut_down: OnceCell<()>,
}

impl<P: Pipeline> ModelPool<P> {
    pub(super) fn from_core(core: Arc<Core<P>>) -> Self {
        ModelPool {
            core,
            shut_down: OnceCell::new(),
        }
    }

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

    /// Add a diffusers pipeline as one model per component that holds
    /// weights, under the ids `id/component` (`sd/unet`, `sd/vae`,
    /// `sd/text_encoder`, ...), returned in load order: each loads only its
    /// component (with the pipeline's `model_index.json` as its config),
    /// is leased, evicted and reloaded on its own, as
    /// `enable_model_cpu_offload` moves components, so an app can ask for
    /// `sd/unet` while the text encoder is evicted. Reads the pipeline's
    /// headers and configs now (a hub source: the cache only; pull it
    /// first). All or nothing: an id already taken, or a source that is not
    /// a pipeline, is an error and adds nothing.
    pub fn add_pipeline(&self, id: &str, source: impl Into<ModelSource>) -> Result<Vec<String>> {
        self.add_pipeline_with(id, source, ModelOptions::new())
    }

    /// [`add_pipeline`](Self::add_pipeline) with options for every
    /// component.
    pub fn add_pipeline_with(
        &self,
        id: &str,
        source: impl Into<ModelSource>,
        options: ModelOptions,
    ) -> Result<Vec<String>> {
        self.core.add_pipeline(id, source.into(), options)
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

    /// A lease on `id` (loaded first if need be, as [`acquire`](Self::acquire))
    /// with `working_bytes` of working memory reserved against the budget
    /// beside it, for its inference's activations: unleased models are
    /// evicted to make room, as for a load; the reserve is charged while
    /// the lease lives ([`PoolLease::working_bytes`]) and released with it.
    /// A wait for memory is bounded by the admission timeout and then fails
    /// with [`Error::MemoryBusy`] naming what blocked it; what could never
    /// fit beside the model and the pinned models fails at once with
    /// [`Error::InsufficientMemory`]. Cancel safe: nothing is reserved
    /// until it returns.
    pub async fn acquire_with(&self, id: &str, working_bytes: u64) -> Result<PoolLease<P>> {
        self.core.acquire_with(id, working_bytes).await
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
