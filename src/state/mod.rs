//! The lifecycle: typed states and transitions, the runtime machine, and the
//! snapshots and events it publishes.
//!
//! ```text
//! Idle    --load-->      Loading
//! Failed  --load-->      Loading        (retry, or another model)
//! Loading --finished-->  Ready
//! Loading --cancelled--> Idle
//! Loading --error-->     Failed
//! Ready   --unload-->    Unloading
//! Unloading --drained--> Idle           (all leases released, memory freed)
//! Failed  --reset-->     Idle
//! ```
//!
//! `machine::typed` holds the compile-time encoding; the runtime machine holds
//! exactly one of those typed values and hands it by value to the handler of
//! its state, whose result type admits only that state's transitions, so it
//! can only make the moves the types allow (`tests/ui/` shows that a handler
//! that tries anything else does not compile). Across the C and JS
//! boundaries the state is the plain [`State`] enum.
//!
//! ```
//! use model_manager::State;
//!
//! assert_eq!(State::Ready.to_string(), "ready");
//! assert_eq!(State::Unloading as u32, 3);
//! ```

// The typestate holds only in safe code: no `unsafe` may forge a state.
#![forbid(unsafe_code)]

mod events;
mod handlers;
pub(crate) mod machine;
pub(crate) mod store;
pub(crate) mod ticket;

use std::sync::Arc;

pub(crate) use machine::typed;

pub use crate::io::progress::Progress;
pub(crate) use crate::io::progress::ProgressCounters;
pub use crate::lifecycle::{Command, State};
pub use events::{LeaseReleases, RecvError, Subscription, TryRecvError};
pub(crate) use store::StateManager;

use crate::error::Error;
use crate::io::ModelSource;

/// A consistent view of the manager at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The lifecycle state.
    pub state: State,
    /// Increases with every transition; never repeats.
    pub generation: u64,
    /// The model loading, ready or unloading.
    pub model: Option<Arc<ModelSource>>,
    /// Progress of the current load (or of the load that produced `Ready`).
    pub progress: Progress,
    /// Why the last load failed, in `Failed`.
    pub error: Option<Error>,
    /// Bytes of model memory the manager holds: counted when a buffer is
    /// allocated, uncounted when it is freed. Always 0 in `Idle` and
    /// `Failed`: those states are published only once the memory is back.
    pub resident_bytes: u64,
    /// Bytes of an unloaded model still alive because a lease outlived
    /// shutdown's drain timeout; no longer the manager's, not hidden either.
    /// Falls to 0 when the last such lease is dropped.
    pub unreclaimed_bytes: u64,
    /// The device's free memory before the last load and after the last
    /// release, as its driver reports them (CUDA only; `None` elsewhere).
    pub device_memory: Option<crate::resource::DeviceMemory>,
}

/// One transition, as delivered to subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct StateEvent {
    /// The state left.
    pub from: State,
    /// The state entered (also `snapshot.state`).
    pub to: State,
    /// What caused it.
    pub command: Command,
    /// The manager right after the transition.
    pub snapshot: Snapshot,
}
