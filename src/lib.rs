//! # model-manager
//!
//! Owns the life of an ML model inside an application: loads weights onto a
//! device (through candle-core) without blocking the caller, reports progress,
//! cancels at any moment, hands the model out for inference under leases,
//! frees every byte on unload, and shuts down without leaking a thread.
//!
//! ```no_run
//! use model_manager::{ModelManager, State};
//!
//! # #[tokio::main] async fn main() -> Result<(), model_manager::Error> {
//! let manager = ModelManager::new()?;
//! let mut events = manager.subscribe();
//! let snapshot = manager.load("models/tiny")?.await?;
//! println!("ready: sample_size = {:?}", manager.sample_size());
//! let lease = manager.acquire()?;
//! let weight = lease.tensor("weight").expect("tensor present");
//! println!("{:?}", weight.dims());
//! drop(lease);
//! manager.unload().await?;
//! while let Ok(event) = events.try_recv() {
//!     println!("{} -> {}", event.from, event.to);
//! }
//! manager.shutdown().await;
//! # let _ = snapshot; Ok(()) }
//! ```
//!
//! ## Semantics
//!
//! - **The lifecycle** is `Idle → Loading → Ready → Unloading → Idle`, with
//!   `Loading → Idle` on cancel and `Loading → Failed → Loading|Idle` on error.
//!   It is encoded in types (each state a type, each transition consuming it): illegal transitions do not
//!   compile; at run time an illegal command returns
//!   [`Error::InvalidTransition`].
//! - **Latest request wins.** `load(B)` while A loads supersedes A; while A is
//!   ready, unloads A (waiting for its leases) then loads B.
//! - **Leases** keep the pipeline alive; `Unloading` waits for all of them.
//! - **Events**: [`ModelManager::subscribe`] yields every transition, in
//!   order, each with its [`Snapshot`].
//! - **Shutdown** cancels, drains, unloads and joins every task and thread.
//!
//! ## Map
//!
//! From the ground up; each module imports only from those above it in
//! this list (never from a later one, and never through this file's
//! re-exports):
//!
//! | module | owns | may import |
//! |---|---|---|
//! | [`alloc`] | the allocator a binary installs so that a load reuses the pages an evicted model freed; what it keeps | nothing |
//! | `lifecycle` | the states and commands, with the one table of their names | nothing |
//! | `error` | [`Error`] and [`ErrorCode`] (`ErrorCode::ALL`: the one table of codes) | `lifecycle` |
//! | `resource` | ResourceManager: the device, memory figures, the budget check, reservations, the device's free memory | `error` |
//! | `io` | everything that reads weights: sources and streams, layouts, safetensors and PyTorch archives, the hub cache and its downloads, the read engine (one chunk planner and one loop over a host or CUDA target; streams), what a load leaves in the page cache | `resource`, `error` |
//! | `pipeline` | PipelineManager: the [`Pipeline`] trait, assembly, the resident pipeline and its [`Lease`]s | `io`, `resource`, `error` |
//! | [`state`] | StateManager: the typed machine, the published snapshot, events, load tickets | `pipeline`, `io`, `resource`, `error`, `lifecycle` |
//! | `loader` | LoaderService: commands (latest request wins), load and unload tasks, the runtime | all of the above |
//! | `manager` | [`ModelManager`], the facade over the four | all of the above |
//! | `builder` | [`ModelManagerBuilder`]: settings, and the four parts wired together | all of the above |
//! | `pool` | [`ModelPool`]: several managers under one budget | every module above; of `io` only its public types, `estimate` and the plan it returns (handed to the manager that loads it), and a pipeline's component names; of `loader` only the runtime |

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod alloc;
mod builder;
mod error;
mod io;
mod lifecycle;
mod loader;
mod manager;
mod pipeline;
mod pool;
mod resource;
pub mod state;

pub use builder::ModelManagerBuilder;
pub use error::{Blocker, Error, ErrorCode, Result};
pub use io::loaded::{Component, PipelineInfo, TensorPipeline};
pub use io::{
    default_read_threads, default_read_threads_for, inspect, pull, tensor_data, ComponentSummary,
    DataError, Download, ModelSource, ModelSummary, Pace, PageCache, ParkedModel, ProgressHook,
    StreamSource, StreamWriter, TensorData, TensorSummary, DEFAULT_CHUNK_SIZE, DEFAULT_ENDPOINT,
};
pub use manager::ModelManager;
pub use pipeline::{Assembly, Lease, Pipeline};
pub use pool::{
    ModelOptions, ModelPool, ModelPoolBuilder, ModelStatus, PoolCounters, PoolEvent, PoolEventKind,
    PoolLease, PoolSnapshot, ReloadPolicy, UnloadReason,
};
pub use resource::{DeviceMemory, DeviceSpec};
pub use state::ticket::LoadHandle;
pub use state::{
    Command, LeaseReleases, Progress, RecvError, Snapshot, State, StateEvent, Subscription,
    TryRecvError,
};

/// Re-export of the candle-core version tensors are built with.
pub use candle_core;

/// The README's examples, compiled as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
