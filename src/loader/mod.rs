//! LoaderService: runs loads and unloads as tasks, cancels them, reports
//! progress, and is the only place where I/O happens.
//!
//! Loads run on tokio: the orchestration as async tasks, the reads on the
//! blocking pool, so they never stall the async runtime. Every task is
//! tracked, and shutdown waits for all of them. Loads are serialised on one
//! slot: a load that replaces another starts reading only once the other has
//! dropped what it read, so at most one model's memory is held at a time.

mod buffer;
mod files;
mod hub;
mod inspect;
mod lifecycle;
mod plan;
mod read;
mod runtime;
pub(crate) mod safetensors;
mod source;
mod ticket;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex as AsyncMutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use inspect::{inspect, ComponentSummary, ModelSummary, TensorSummary};
pub use read::ProgressHook;
pub(crate) use runtime::Runtime;
pub use source::ModelSource;
pub use ticket::LoadHandle;
pub(crate) use ticket::LoadTicket;

/// Default size of one read: progress and cancellation are checked this often.
pub const DEFAULT_CHUNK_SIZE: usize = 4 << 20;

/// Default number of threads reading one file: the available cores, at most
/// 4 (always 1 on wasm32, which has no threads).
pub fn default_read_threads() -> usize {
    if cfg!(target_arch = "wasm32") {
        return 1;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// Yields to the host's event loop between chunks (wasm32): returns a future
/// that completes once the host has had a turn.
pub type Pace = std::sync::Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> + Send + Sync,
>;

/// Settings of the loader.
#[derive(Clone)]
pub(crate) struct LoaderConfig {
    pub(crate) chunk_size: usize,
    pub(crate) threads: usize,
    pub(crate) dtype: Option<candle_core::DType>,
    pub(crate) hook: Option<ProgressHook>,
    pub(crate) drain_timeout: Duration,
    /// How loads yield between chunks on wasm32.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) pace: Option<Pace>,
}

pub(crate) struct LoaderService {
    runtime: Runtime,
    tracker: TaskTracker,
    /// Cancelled when shutdown starts: parent of every load's token.
    stopping: CancellationToken,
    /// Held by the load that may hold model memory.
    slot: Arc<AsyncMutex<()>>,
    pub(crate) config: LoaderConfig,
}

impl LoaderService {
    pub(crate) fn new(runtime: Runtime, config: LoaderConfig) -> Self {
        LoaderService {
            runtime,
            tracker: TaskTracker::new(),
            stopping: CancellationToken::new(),
            slot: Arc::new(AsyncMutex::new(())),
            config,
        }
    }

    pub(crate) fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn_on(task, self.runtime.handle());
    }

    /// On wasm32, tasks run on the JS event loop (and need not be `Send`).
    #[cfg(target_arch = "wasm32")]
    fn spawn(&self, task: impl Future<Output = ()> + 'static) {
        wasm_bindgen_futures::spawn_local(self.tracker.track_future(task));
    }

    /// Run `f` where it cannot stall the async runtime (on wasm32, where
    /// there are no threads, in place).
    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        #[cfg(not(target_arch = "wasm32"))]
        return self
            .tracker
            .spawn_blocking_on(f, self.runtime.handle())
            .await
            .ok();
        #[cfg(target_arch = "wasm32")]
        return Some(f());
    }

    fn load_token(&self) -> CancellationToken {
        self.stopping.child_token()
    }

    /// Stop accepting work and wait for every task and blocking read.
    pub(crate) async fn drain(&self) {
        self.stopping.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Signal every task to stop, without waiting (for `Drop`).
    pub(crate) fn signal_stop(&self) {
        self.stopping.cancel();
        self.tracker.close();
    }
}
