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

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod builder;
mod error;
mod loader;
mod manager;
mod pipeline;
mod pool;
mod resource;
pub mod state;

pub use builder::ModelManagerBuilder;
pub use error::{Blocker, Error, ErrorCode, Result};
pub use loader::{
    default_read_threads, default_read_threads_for, inspect, ComponentSummary, LoadHandle,
    ModelSource, ModelSummary, Pace, ProgressHook, StreamSource, StreamWriter, TensorSummary,
    DEFAULT_CHUNK_SIZE,
};
pub use manager::ModelManager;
pub use pipeline::{Assembly, Component, Lease, Pipeline, PipelineInfo, TensorPipeline};
pub use pool::{
    ModelOptions, ModelPool, ModelPoolBuilder, ModelStatus, PoolCounters, PoolEvent, PoolEventKind,
    PoolLease, PoolSnapshot, ReloadPolicy, UnloadReason,
};
pub use resource::{DeviceMemory, DeviceSpec};
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
