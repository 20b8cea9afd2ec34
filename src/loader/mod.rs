//! LoaderService: runs loads and unloads as tasks, cancels them, reports
//! progress, and is the only place where I/O happens.
//!
//! Loads run on tokio: the orchestration as async tasks, the reads on the
//! blocking pool, so they never stall the async runtime. Every task is
//! tracked, and shutdown waits for all of them. Loads are serialised on one
//! slot: a load that replaces another starts reading only once the other has
//! dropped what it read, so at most one model's memory is held at a time.

mod files;
mod hub;
mod lifecycle;
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

pub use read::ProgressHook;
pub(crate) use runtime::Runtime;
pub use source::ModelSource;
pub use ticket::LoadHandle;
pub(crate) use ticket::LoadTicket;

/// Default size of one read: progress and cancellation are checked this often.
pub const DEFAULT_CHUNK_SIZE: usize = 4 << 20;

/// Default number of threads reading one file: the available cores, at most 4.
pub fn default_read_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// Settings of the loader.
#[derive(Clone)]
pub(crate) struct LoaderConfig {
    pub(crate) chunk_size: usize,
    pub(crate) threads: usize,
    pub(crate) dtype: Option<candle_core::DType>,
    pub(crate) hook: Option<ProgressHook>,
    pub(crate) drain_timeout: Duration,
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

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn_on(task, self.runtime.handle());
    }

    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        self.tracker
            .spawn_blocking_on(f, self.runtime.handle())
            .await
            .ok()
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
