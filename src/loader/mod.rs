//! LoaderService: carries out the commands (latest request wins, unload
//! waits for leases) as tasks, runs loads, cancels them, reports progress,
//! and is the only place where I/O happens.
//!
//! A load runs on one blocking thread from start to end (on wasm32, as a
//! task on the JS event loop, yielding between chunks): resolve the source,
//! check the budget against the load's peak, read, assemble, then publish
//! the outcome. A load that is asked to stop frees what it read *before* it
//! publishes `Idle`, so a state never claims memory is back before it is.
//! One load runs at a time: a load that replaces another waits (as the
//! pending load) until the other has let go of its memory.
//!
//! Nothing here may panic on what a file or a caller hands it: unwrapping,
//! `expect` and unchecked indexing are denied in the whole loader.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod buffer;
// Used by the CUDA path; tested on every build.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
mod chunks;
mod commands;
#[cfg(feature = "cuda")]
mod cuda;
mod files;
mod hub;
mod inspect;
mod plan;
mod read;
mod runtime;
pub(crate) mod safetensors;
mod source;
mod stream;
mod task;
mod ticket;

#[cfg(feature = "cuda")]
pub(crate) use cuda::memory_info as cuda_memory_info;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use inspect::{inspect, ComponentSummary, ModelSummary, TensorSummary};
pub use read::ProgressHook;
pub(crate) use runtime::Runtime;
pub use source::{ModelSource, StreamSource, StreamWriter};
pub use ticket::LoadHandle;
pub(crate) use ticket::LoadTicket;

use crate::pipeline::{Pipeline, PipelineManager};
use crate::resource::ResourceManager;
use crate::state::StateManager;
use crate::Result;

/// Default size of one read: progress and cancellation are checked this often.
pub const DEFAULT_CHUNK_SIZE: usize = 4 << 20;

/// Default number of threads reading one file into host memory: the
/// available cores, at most 4 (always 1 on wasm32, which has no threads).
pub fn default_read_threads() -> usize {
    default_read_threads_for(crate::DeviceSpec::Cpu)
}

/// Default number of threads reading one file for a device: the available
/// cores, at most 4 for host memory, at most 8 for CUDA, where each thread
/// also feeds copies to the device (8 was the fastest on an H200: the sweep
/// is in BENCHMARKS.md, "On a GPU"). Always 1 on wasm32, which has no
/// threads.
pub fn default_read_threads_for(device: crate::DeviceSpec) -> usize {
    if cfg!(target_arch = "wasm32") {
        return 1;
    }
    let most = match device {
        crate::DeviceSpec::Cuda(_) => 8,
        crate::DeviceSpec::Cpu | crate::DeviceSpec::Metal => 4,
    };
    std::thread::available_parallelism().map_or(1, |n| n.get().min(most))
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
    pub(crate) staging: cuda::StagingPool,
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
            staging: cuda::StagingPool::default(),
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

/// The bytes a load of `source` holds at its peak (its tensors, plus the
/// conversion to `dtype` and any staging on `device`), read from headers
/// only: what a pool charges a load when it admits it. Blocking (file I/O).
pub(crate) fn estimate(
    source: &ModelSource,
    dtype: Option<candle_core::DType>,
    device: &candle_core::Device,
) -> crate::Result<u64> {
    read::peak_bytes(&plan::resolve(source)?, dtype, device)
}
