//! [`ModelPoolBuilder`]: a pool's settings, and the pool built from them.

use std::sync::Arc;
use std::time::Duration;

use candle_core::DType;

use super::api::ModelPool;
use super::core::Core;
use super::options::PoolConfig;
use super::rt;
use crate::builder::Settings;
use crate::error::{Error, Result};
use crate::io::loaded::TensorPipeline;
use crate::io::Pace;
use crate::loader::Runtime;
use crate::pipeline::Pipeline;
use crate::resource::DeviceSpec;

impl ModelPool {
    /// Configure a pool.
    pub fn builder() -> ModelPoolBuilder {
        ModelPoolBuilder::default()
    }
}

/// Settings for a [`ModelPool`].
pub struct ModelPoolBuilder<P: Pipeline = TensorPipeline> {
    config: PoolConfig<P::Options>,
    budget: Option<u64>,
    headroom: u64,
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
                host_budget: 0,
                simulate_host_tier: false,
                options: Arc::new(()),
            },
            budget: None,
            headroom: 0,
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

    /// Memory the pool leaves to other processes on the same device: the
    /// budget is the [`memory_budget`](Self::memory_budget) (or the free
    /// memory when the pool is built) less this (default 0). Larger than
    /// the budget: an error at [`build`](Self::build).
    pub fn headroom(mut self, bytes: u64) -> Self {
        self.headroom = bytes;
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

    /// What a load leaves in the page cache (see
    /// [`ModelManagerBuilder::page_cache`](crate::builder::ModelManagerBuilder::page_cache)).
    pub fn page_cache(mut self, policy: crate::io::PageCache) -> Self {
        self.config.manager.page_cache = policy;
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

    /// The host tier (default 0: none): a model evicted from the device is
    /// **parked** in page-locked host memory when it fits these many bytes
    /// (the least recently used parked models are freed to make room), and
    /// an acquire brings it back with one host-to-device copy: no file
    /// read, no parse, no dtype conversion. A model back on the device
    /// keeps its copy while the tier has room (weights never change), so
    /// that evicting it again frees its device memory at once. Parked
    /// models show in the status (`parked`, `parked_bytes`), the events
    /// (`Parked`, `Unparked`) and the metrics; they are never leased (a
    /// lease is on the device). A model whose pipeline does not keep its
    /// tensors ([`Pipeline::loaded`]) is freed instead.
    ///
    /// For CUDA pools: a pool on the CPU holds its models in host memory
    /// already, and [`build`](Self::build) refuses a host budget there (and
    /// on Metal, whose memory is the host's too).
    pub fn host_budget(mut self, bytes: u64) -> Self {
        self.config.host_budget = bytes;
        self
    }

    /// A host tier on the CPU, parking by copying the tensors: for tests of
    /// the tier's decisions on machines without a GPU (it saves no memory).
    #[doc(hidden)]
    pub fn simulate_host_tier(mut self, yes: bool) -> Self {
        self.config.simulate_host_tier = yes;
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
                host_budget: c.host_budget,
                simulate_host_tier: c.simulate_host_tier,
                options: Arc::new(options),
            },
            budget: self.budget,
            headroom: self.headroom,
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
        let budget = match self.budget {
            Some(bytes) => bytes,
            None => default_budget(&device)?,
        };
        config.budget = budget.checked_sub(self.headroom).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "a headroom of {} bytes leaves nothing of a budget of {budget} bytes",
                self.headroom
            ))
        })?;
        if config.host_budget > 0 {
            match &device {
                candle_core::Device::Cuda(_) => {}
                candle_core::Device::Cpu if config.simulate_host_tier => {}
                candle_core::Device::Cpu => {
                    return Err(Error::InvalidArgument(
                        "a host tier parks device models in host memory: a pool on the CPU \
                         holds its models there already (set no host budget)"
                            .into(),
                    ))
                }
                _ => {
                    return Err(Error::InvalidArgument(
                        "the host tier parks CUDA models: this device has none (set no host \
                         budget)"
                            .into(),
                    ))
                }
            }
        }
        #[cfg(not(target_arch = "wasm32"))]
        let (runtime, spawner) = {
            let runtime = Runtime::new(self.runtime);
            let handle = runtime.handle()?;
            (runtime, rt::Spawner::new(handle))
        };
        #[cfg(target_arch = "wasm32")]
        let (runtime, spawner) = (Runtime::new(None), rt::Spawner::new());
        Ok(ModelPool::from_core(Core::new(
            config, device, runtime, spawner,
        )))
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
