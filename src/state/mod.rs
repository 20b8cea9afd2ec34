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
//! [`typed`] holds the compile-time encoding; the runtime machine (driven by
//! `statig`) carries those typed values as its state-local data, so it can
//! only make the moves the types allow. Across the C and JS boundaries the
//! state is the plain [`State`] enum.
//!
//! ```
//! use model_manager::State;
//!
//! assert_eq!(State::Ready.to_string(), "ready");
//! assert_eq!(State::Unloading as u32, 3);
//! ```

pub(crate) mod machine;
mod progress;
pub(crate) mod store;
pub mod typed;

use std::fmt;
use std::sync::Arc;

pub use progress::Progress;
pub(crate) use progress::ProgressCounters;
pub(crate) use store::StateManager;
pub use store::{RecvError, Subscription, TryRecvError};

use crate::{Error, ModelSource};

/// The lifecycle state, as a plain value (what C and JS see).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Nothing is loaded.
    Idle = 0,
    /// A model is being loaded.
    Loading = 1,
    /// A model is loaded and can be leased.
    Ready = 2,
    /// A model is being unloaded (waiting for leases, then freeing memory).
    Unloading = 3,
    /// The last load failed; see [`Snapshot::error`].
    Failed = 4,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Idle => "idle",
            State::Loading => "loading",
            State::Ready => "ready",
            State::Unloading => "unloading",
            State::Failed => "failed",
        })
    }
}

/// What caused a transition, or what was refused.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// A load was requested.
    Load = 0,
    /// A load finished.
    Finish = 1,
    /// A load was cancelled (by `cancel`, `unload`, a newer load or shutdown).
    Cancel = 2,
    /// A load failed.
    Fail = 3,
    /// An unload was requested.
    Unload = 4,
    /// Every lease was released and the memory freed.
    Drain = 5,
    /// A failure was acknowledged.
    Reset = 6,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Command::Load => "load",
            Command::Finish => "finish loading",
            Command::Cancel => "cancel",
            Command::Fail => "fail",
            Command::Unload => "unload",
            Command::Drain => "drain",
            Command::Reset => "reset",
        })
    }
}

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
