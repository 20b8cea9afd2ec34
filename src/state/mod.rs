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

mod handlers;
pub(crate) mod machine;
mod progress;
pub(crate) mod store;

use std::ffi::CStr;
use std::fmt;
use std::sync::Arc;

pub(crate) use machine::typed;

pub use progress::Progress;
pub(crate) use progress::ProgressCounters;
pub(crate) use store::StateManager;
pub use store::{LeaseReleases, RecvError, Subscription, TryRecvError};

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

impl State {
    /// Every state, in numeric order.
    pub const ALL: [State; 5] = [
        State::Idle,
        State::Loading,
        State::Ready,
        State::Unloading,
        State::Failed,
    ];

    /// The state's name, NUL-terminated: the one table of names, used by
    /// `Display`, the C binding and the JS binding alike.
    pub const fn c_name(self) -> &'static CStr {
        match self {
            State::Idle => c"idle",
            State::Loading => c"loading",
            State::Ready => c"ready",
            State::Unloading => c"unloading",
            State::Failed => c"failed",
        }
    }

    /// The state's name (`"idle"`, `"loading"`, ...).
    pub const fn name(self) -> &'static str {
        name_of(self.c_name())
    }

    /// The state with this numeric value, if any.
    pub const fn from_u32(value: u32) -> Option<State> {
        if (value as usize) < State::ALL.len() {
            Some(State::ALL[value as usize])
        } else {
            None
        }
    }
}

/// A name from the table as `&str` (the table holds ASCII only).
const fn name_of(name: &'static CStr) -> &'static str {
    match std::str::from_utf8(name.to_bytes()) {
        Ok(name) => name,
        Err(_) => "",
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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

impl Command {
    /// Every command, in numeric order.
    pub const ALL: [Command; 7] = [
        Command::Load,
        Command::Finish,
        Command::Cancel,
        Command::Fail,
        Command::Unload,
        Command::Drain,
        Command::Reset,
    ];

    /// The command's name, NUL-terminated (the one table of names).
    pub const fn c_name(self) -> &'static CStr {
        match self {
            Command::Load => c"load",
            Command::Finish => c"finish loading",
            Command::Cancel => c"cancel",
            Command::Fail => c"fail",
            Command::Unload => c"unload",
            Command::Drain => c"drain",
            Command::Reset => c"reset",
        }
    }

    /// The command's name (`"load"`, `"finish loading"`, ...).
    pub const fn name(self) -> &'static str {
        name_of(self.c_name())
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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
    pub device_memory: Option<crate::DeviceMemory>,
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
