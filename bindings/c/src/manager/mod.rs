//! `mm_manager`: the opaque manager handle and its functions.
//!
//! Each manager owns a small multi-thread tokio runtime (one worker thread,
//! a few blocking threads for reads) and hands its handle to the core with
//! `ModelManager::builder().runtime(..)`. Callbacks run on those threads.
//!
//! One concept per file, in the header's order: `options` (the options
//! struct's defaults), `lifecycle` (create and destroy), `load` (the
//! commands: load, wait, cancel, unload, reset) and `read` (the state and
//! what the ready model says about itself).

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

pub use lifecycle::*;
pub use load::*;
pub use options::*;
pub use read::*;

/// A model manager: loads one model at a time, hands it out under leases.
///
/// Create with `mm_manager_new`, free with `mm_manager_destroy`. Opaque.
pub struct mm_manager {
    pub(crate) inner: Arc<ModelManager>,
    pub(super) runtime: Runtime,
    /// The binding's tasks: load callbacks and subscriptions.
    pub(crate) tasks: TaskTracker,
    /// Cancelled by destroy: subscriptions deliver what is queued and stop.
    pub(crate) closing: CancellationToken,
    /// The latest load requested through this handle, for `mm_manager_wait`.
    pub(super) last_load: Mutex<Option<LastLoad>>,
}

/// A load `mm_manager_wait` waits for: its outcome, then its callback.
#[derive(Clone)]
pub(super) struct LastLoad {
    pub(super) handle: LoadHandle,
    /// Becomes `true` once its callback has returned (`None`: no callback).
    pub(super) callback_done: Option<watch::Receiver<bool>>,
}

impl mm_manager {
    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }
}
