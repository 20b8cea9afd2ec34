//! `mm_manager`: the opaque manager handle and its functions.
//!
//! Each manager has two small tokio runtimes: the core's own (started by
//! the first load and joined, bounded, by the core's shutdown: one worker
//! thread, a few blocking threads for reads, where progress callbacks run),
//! and the binding's, whose one worker thread runs the load and event
//! callbacks, so that a callback that blocks cannot stall the core's tasks
//! and timers.
//!
//! One concept per file, in the header's order: `options` (the options
//! struct's defaults), `lifecycle` (create and destroy), `load` (the
//! commands: load, wait, cancel, unload, reset) and `read` (the state and
//! what the ready model says about itself); `progress` counts the progress
//! callback's calls for destroy.

use std::sync::{Arc, Mutex};

use model_manager::{LoadHandle, ModelManager};
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

// The header lists the functions in this order.
mod options;

mod lifecycle;

mod load;

mod read;

mod progress;

pub use lifecycle::*;
pub use load::*;
pub use options::*;
pub use read::*;

/// A model manager: loads one model at a time, hands it out under leases.
///
/// Create with `mm_manager_new`, free with `mm_manager_destroy`. Opaque.
pub struct mm_manager {
    pub(crate) inner: Arc<ModelManager>,
    /// Where load and event callbacks run: its one worker thread. (The
    /// core's tasks run on a runtime the core owns; its blocking threads
    /// are the loader threads, where progress callbacks run.)
    pub(super) runtime: Runtime,
    /// The binding's tasks: load callbacks and subscriptions.
    pub(crate) tasks: TaskTracker,
    /// Cancelled by destroy: subscriptions deliver what is queued and stop.
    pub(crate) closing: CancellationToken,
    /// The latest load requested through this handle, for `mm_manager_wait`.
    pub(super) last_load: Mutex<Option<LastLoad>>,
    /// The progress callback's calls in flight, for destroy.
    progress: Arc<progress::ProgressCalls>,
}

/// A load `mm_manager_wait` waits for: its outcome, then its callback.
#[derive(Clone)]
pub(super) struct LastLoad {
    pub(super) handle: LoadHandle,
    /// Becomes `true` once its callback has returned (`None`: no callback).
    pub(super) callback_done: Option<watch::Receiver<bool>>,
}

impl mm_manager {
    /// The runtime of the binding's tasks (callbacks).
    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }
}
