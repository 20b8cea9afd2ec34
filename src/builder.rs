//! [`ModelManagerBuilder`]: the settings of a [`ModelManager`].

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use candle_core::DType;
use tokio::runtime::Handle;

use crate::error::{Error, Result};
use crate::io::loaded::TensorPipeline;
use crate::io::progress::Progress;
use crate::io::{default_read_threads_for, PageCache, ProgressHook, DEFAULT_CHUNK_SIZE};
use crate::loader::{LoaderConfig, LoaderService, Runtime};
use crate::manager::{ModelManager, Parts};
use crate::pipeline::{Pipeline, PipelineManager};
use crate::resource::{DeviceSpec, ResourceManager};
use crate::state::StateManager;

impl ModelManager {
    /// A manager on the CPU with default settings.
    ///
    /// Its tasks run on a small runtime of its own, started by the first
    /// load and joined on shutdown (or on the runtime given to
    /// [`ModelManagerBuilder::runtime`]).
    pub fn new() -> Result<Self> {
        Self::builder().build()
    }

    /// Configure a manager.
    pub fn builder() -> ModelManagerBuilder {
        ModelManagerBuilder::default()
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
pub struct ModelManagerBuilder<P: Pipeline = TensorPipeline> {
    settings: Settings,
    options: Arc<P::Options>,
    _pipeline: PhantomData<fn() -> P>,
}

/// A manager's settings: what [`ModelManagerBuilder`] sets, and what a
/// pool hands the manager of each model it loads. One struct, so that
/// neither builder copies the other's fields one by one.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) device: DeviceSpec,
    pub(crate) budget: Option<u64>,
    pub(crate) chunk_size: usize,
    pub(crate) threads: Option<usize>,
    pub(crate) dtype: Option<DType>,
    pub(crate) hook: Option<ProgressHook>,
    pub(crate) runtime: Option<Handle>,
    pub(crate) drain_timeout: Duration,
    pub(crate) pace: Option<crate::io::Pace>,
    pub(crate) trim_heap: bool,
    pub(crate) page_cache: PageCache,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            device: DeviceSpec::Cpu,
            budget: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            threads: None,
            dtype: None,
            hook: None,
            runtime: None,
            drain_timeout: Duration::from_secs(5),
            pace: None,
            trim_heap: true,
            page_cache: PageCache::Auto,
        }
    }
}

impl Settings {
    /// Refuse what no load could honour (the one check of a target dtype,
    /// for a manager and a pool alike).
    pub(crate) fn check(&self) -> Result<()> {
        match self.dtype {
            Some(dtype) if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) => {
                Err(Error::InvalidArgument(format!(
                    "target dtype must be f32, f16 or bf16, not {dtype:?}"
                )))
            }
            _ => Ok(()),
        }
    }
}

impl Default for ModelManagerBuilder {
    fn default() -> Self {
        ModelManagerBuilder::with_settings(Settings::default(), Arc::new(()))
    }
}

impl<P: Pipeline> ModelManagerBuilder<P> {
    /// A builder holding `settings` (a pool's, for one of its models).
    pub(crate) fn with_settings(settings: Settings, options: Arc<P::Options>) -> Self {
        ModelManagerBuilder {
            settings,
            options,
            _pipeline: PhantomData,
        }
    }

    /// The device to load onto (default: CPU).
    pub fn device(mut self, device: DeviceSpec) -> Self {
        self.settings.device = device;
        self
    }

    /// Refuse loads whose tensors need more than `bytes` (checked from the
    /// headers, before anything is allocated). Default: the memory available
    /// on the device at the time of the load (on the CPU, `MemAvailable`; on
    /// CUDA, the driver's free memory; on Metal, no check: the allocation
    /// reports a shortage).
    pub fn memory_budget(mut self, bytes: u64) -> Self {
        self.settings.budget = Some(bytes);
        self
    }

    /// Bytes per read: progress and cancellation are checked this often
    /// (default 4 MiB).
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.settings.chunk_size = bytes.max(1);
        self
    }

    /// Threads reading one file in parallel (default: the available cores,
    /// at most 4; at most 8 on CUDA: [`default_read_threads_for`](crate::io::default_read_threads_for)).
    pub fn read_threads(mut self, threads: usize) -> Self {
        self.settings.threads = Some(threads.max(1));
        self
    }

    /// What a load leaves in the page cache (default [`PageCache::Auto`]:
    /// the pages of a file read cold are dropped as they are read, so a
    /// cold load leaves no second copy of the model in memory; a warm
    /// file's stay).
    pub fn page_cache(mut self, policy: PageCache) -> Self {
        self.settings.page_cache = policy;
        self
    }

    /// Convert floating-point tensors to `dtype` while loading (F32, F16 or
    /// BF16); integer tensors keep their dtype.
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.settings.dtype = Some(dtype);
        self
    }

    /// Call `hook` on a loader thread after every chunk read. It runs on the
    /// blocking pool, never on the async runtime; calls never overlap and
    /// each sees more bytes done than the last; a slow hook slows the load.
    pub fn on_progress(mut self, hook: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.settings.hook = Some(Arc::new(hook));
        self
    }

    /// Run the manager's tasks on this runtime. By default the manager starts
    /// a small runtime of its own on first use and joins it on shutdown; it
    /// never adopts the runtime it happens to be created in, which could be
    /// shut down under a load. A runtime given here must outlive the loads.
    pub fn runtime(mut self, handle: Handle) -> Self {
        self.settings.runtime = Some(handle);
        self
    }

    /// How long shutdown waits for leases before giving up on them
    /// (default 5 s). Memory held by a lease is freed when it is dropped.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.settings.drain_timeout = timeout;
        self
    }

    /// How a load yields to the host between chunks on wasm32 (for example
    /// a `setTimeout(0)` or `MessageChannel` turn); by default, a yield to
    /// the async executor only.
    pub fn pace(mut self, pace: crate::io::Pace) -> Self {
        self.settings.pace = Some(pace);
        self
    }

    /// After an unload (or a cancelled or failed load), return the memory
    /// allocator's free pages to the OS (glibc's `malloc_trim`; default on).
    /// Without it, glibc keeps the pages of tensors under 32 MiB in its heap
    /// after they are freed. On, it also sets glibc's `M_TRIM_THRESHOLD` to
    /// its default (128 KiB) once per process, since `malloc_trim` cannot
    /// return the top of a thread's arena; this turns off glibc's dynamic
    /// mmap threshold. Turn it off if the application manages its allocator
    /// itself.
    pub fn return_memory_to_os(mut self, enabled: bool) -> Self {
        self.settings.trim_heap = enabled;
        self
    }

    /// Load into another pipeline type, whose options are its default.
    pub fn pipeline<Q>(self) -> ModelManagerBuilder<Q>
    where
        Q: Pipeline,
        Q::Options: Default,
    {
        self.pipeline_with(Q::Options::default())
    }

    /// Load into another pipeline type, giving its `assemble` these
    /// options (see [`Assembly::options`](crate::pipeline::Assembly::options)).
    pub fn pipeline_with<Q: Pipeline>(self, options: Q::Options) -> ModelManagerBuilder<Q> {
        self.pipeline_shared(Arc::new(options))
    }

    /// [`pipeline_with`](Self::pipeline_with), the options shared (by the
    /// managers of a pool).
    pub(crate) fn pipeline_shared<Q: Pipeline>(
        self,
        options: Arc<Q::Options>,
    ) -> ModelManagerBuilder<Q> {
        ModelManagerBuilder::with_settings(self.settings, options)
    }

    /// Create the manager.
    pub fn build(self) -> Result<ModelManager<P>> {
        self.settings.check()?;
        let Settings {
            device,
            budget,
            chunk_size,
            threads,
            dtype,
            hook,
            runtime,
            drain_timeout,
            pace,
            trim_heap,
            page_cache,
        } = self.settings;
        let resources = Arc::new(ResourceManager::new(device, budget, trim_heap)?);
        let state = Arc::new(StateManager::new(resources.ledger().clone()));
        let pipelines = Arc::new(PipelineManager::new(self.options));
        let loader = Arc::new(LoaderService::new(
            state.clone(),
            resources.clone(),
            pipelines,
            Runtime::new(runtime),
            LoaderConfig {
                chunk_size,
                threads: threads.unwrap_or_else(|| default_read_threads_for(device)),
                dtype,
                hook,
                drain_timeout,
                page_cache,
                pace,
            },
        ));
        Ok(ModelManager::from_parts(Parts {
            state,
            resources,
            loader,
        }))
    }
}
