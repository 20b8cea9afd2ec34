//! LoaderService: carries out the commands (latest request wins, unload
//! waits for leases) as tasks, runs loads (the reads of [`crate::io`]) on
//! threads of its own, cancels them, and publishes their outcome.
//!
//! A load runs on one blocking thread from start to end (on wasm32, as a
//! task on the JS event loop, yielding between chunks): resolve the source,
//! check the budget against the load's peak, read, assemble, then publish
//! the outcome. A load that is asked to stop frees what it read *before* it
//! publishes `Idle`, so a state never claims memory is back before it is.
//! One load runs at a time: a load that replaces another waits (as the
//! pending load) until the other has let go of its memory.
//!
//! May import: `io`, `resource`, `pipeline`, `state`, `error`.
//!
//! Nothing here may panic on what a file or a caller hands it: unwrapping,
//! `expect` and unchecked indexing are denied in the whole loader.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod commands;
mod runtime;
mod task;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use runtime::Runtime;

use crate::error::Result;
use crate::pipeline::{Pipeline, PipelineManager};
use crate::resource::ResourceManager;
use crate::state::StateManager;

/// Settings of the loader.
#[derive(Clone)]
pub(crate) struct LoaderConfig {
    pub(crate) chunk_size: usize,
    pub(crate) threads: usize,
    pub(crate) dtype: Option<candle_core::DType>,
    pub(crate) hook: Option<crate::io::ProgressHook>,
    pub(crate) drain_timeout: Duration,
    pub(crate) page_cache: crate::io::PageCache,
    /// How loads yield between chunks on wasm32.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) pace: Option<crate::io::Pace>,
}

/// How long shutdown waits, beyond the drain timeout, for the lifecycle to
/// settle and the manager's threads to exit.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

pub(crate) struct LoaderService<P: Pipeline> {
    state: Arc<StateManager<P>>,
    resources: Arc<ResourceManager>,
    pipelines: Arc<PipelineManager<P>>,
    runtime: Runtime,
    tracker: TaskTracker,
    /// Cancelled when shutdown starts: parent of every load's token.
    stopping: CancellationToken,
    /// Held by a blocking shutdown, so concurrent ones all wait for it.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    shutting_down: std::sync::Mutex<()>,
    pub(crate) config: LoaderConfig,
    /// Pinned staging buffers of the CUDA path, kept for the manager's life.
    #[cfg(feature = "cuda")]
    pub(crate) staging: crate::io::read::staging::StagingPool,
}

impl<P: Pipeline> LoaderService<P> {
    pub(crate) fn new(
        state: Arc<StateManager<P>>,
        resources: Arc<ResourceManager>,
        pipelines: Arc<PipelineManager<P>>,
        runtime: Runtime,
        config: LoaderConfig,
    ) -> Self {
        LoaderService {
            state,
            resources,
            pipelines,
            runtime,
            tracker: TaskTracker::new(),
            stopping: CancellationToken::new(),
            shutting_down: std::sync::Mutex::new(()),
            #[cfg(feature = "cuda")]
            staging: crate::io::read::staging::StagingPool::default(),
            config,
        }
    }

    /// Spawn an async task (the unload's drain).
    #[cfg(not(target_arch = "wasm32"))]
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let handle = self.runtime.handle()?;
        self.tracker.spawn_on(task, &handle);
        Ok(())
    }

    /// On wasm32, tasks run on the JS event loop (and need not be `Send`).
    #[cfg(target_arch = "wasm32")]
    fn spawn(&self, task: impl Future<Output = ()> + 'static) -> Result<()> {
        wasm_bindgen_futures::spawn_local(self.tracker.track_future(task));
        Ok(())
    }

    /// Run `f` on a blocking thread. If the runtime cannot take it, `f` is
    /// dropped unrun (whatever it owns is dropped with it).
    #[cfg(not(target_arch = "wasm32"))]
    fn spawn_blocking(&self, f: impl FnOnce() + Send + 'static) -> Result<()> {
        let handle = self.runtime.handle()?;
        drop(self.tracker.spawn_blocking_on(f, &handle));
        Ok(())
    }

    fn load_token(&self) -> CancellationToken {
        self.stopping.child_token()
    }
}
