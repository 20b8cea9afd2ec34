//! One requested load: its cancellation, progress and outcome, shared by the
//! task that runs it and every [`LoadHandle`] on it.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::typed::ModelId;
use super::Snapshot;
use crate::alloc::Retention;
use crate::error::{Error, Result};
use crate::io::plan::Plan;
use crate::io::progress::{Progress, ProgressCounters};

/// Cancels one load if it is still the current one.
pub(crate) trait CancelLoad: Send + Sync {
    fn cancel_load(&self, ticket: &Arc<LoadTicket>);
}

pub(crate) struct LoadTicket {
    pub(crate) model: ModelId,
    generation: AtomicU64,
    pub(crate) cancel: CancellationToken,
    reason: OnceLock<Error>,
    pub(crate) progress: Arc<ProgressCounters>,
    outcome: watch::Sender<Option<Result<Snapshot>>>,
    canceller: Weak<dyn CancelLoad>,
    /// The source's layout, when the caller resolved it already (a pool,
    /// for its estimate): the load reads it instead of resolving again.
    plan: Mutex<Option<Plan>>,
    /// What the model this load replaces frees is kept for it
    /// (`crate::alloc`), until the load ends.
    keep: Mutex<Option<Retention>>,
}

impl LoadTicket {
    pub(crate) fn new(
        model: ModelId,
        cancel: CancellationToken,
        canceller: Weak<dyn CancelLoad>,
    ) -> Arc<Self> {
        Arc::new(LoadTicket {
            model,
            generation: AtomicU64::new(0),
            cancel,
            reason: OnceLock::new(),
            progress: Arc::default(),
            outcome: watch::Sender::new(None),
            canceller,
            plan: Mutex::new(None),
            keep: Mutex::new(None),
        })
    }

    /// What was kept for this load, to drop once it has ended (before its
    /// end is published: memory freed means given back).
    pub(crate) fn take_keep(&self) -> Option<Retention> {
        self.keep
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Keep what is freed from now on for this load, until it ends.
    pub(crate) fn keep(&self, retention: Retention) {
        let mut keep = self.keep.lock().unwrap_or_else(PoisonError::into_inner);
        if keep.is_none() {
            *keep = Some(retention);
        }
    }

    /// Hand the load a layout resolved beforehand.
    pub(crate) fn set_plan(&self, plan: Plan) {
        *self.plan.lock().unwrap_or_else(PoisonError::into_inner) = Some(plan);
    }

    /// The layout resolved beforehand, if any (taken once).
    pub(crate) fn take_plan(&self) -> Option<Plan> {
        self.plan
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    pub(crate) fn set_generation(&self, generation: u64) {
        self.generation.store(generation, Ordering::Release);
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Ask the load to stop, with `reason` as its outcome. The first reason
    /// wins. The outcome is published once the load has let go of its memory
    /// (see [`resolve`](Self::resolve)).
    pub(crate) fn stop(&self, reason: Error) {
        let _ = self.reason.set(reason);
        self.cancel.cancel();
    }

    pub(crate) fn stop_reason(&self) -> Error {
        self.reason.get().cloned().unwrap_or(Error::Cancelled)
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.reason.get().is_some()
    }

    /// Publish the outcome (only the first one counts) and end the load's
    /// progress stream.
    pub(crate) fn resolve(&self, outcome: Result<Snapshot>) {
        // A plan the load never took holds its files open: close them.
        drop(self.take_plan());
        // What was kept for the load and not taken goes back.
        drop(self.take_keep());
        if let (Err(reason), crate::io::ModelSource::Stream(stream)) = (&outcome, &*self.model) {
            // A stream this load never took would keep its producer
            // waiting for as long as a handle on the load lives.
            stream.close_unloaded(reason.clone());
        }
        self.outcome.send_if_modified(|slot| {
            if slot.is_none() {
                *slot = Some(outcome);
                true
            } else {
                false
            }
        });
        self.progress.close();
    }

    pub(crate) fn handle(self: &Arc<Self>) -> LoadHandle {
        LoadHandle {
            ticket: self.clone(),
        }
    }
}

/// A requested load: await it for its outcome, watch its progress, cancel it.
///
/// Awaiting resolves to `Ok(snapshot)` once the model is `Ready`, or to
/// `Err(Error::Cancelled)`, `Err(Error::Superseded)` or the load's error. A
/// cancelled or superseded load resolves only after it has freed every byte
/// it had read. Dropping the handle does not cancel the load.
///
/// ```no_run
/// # async fn f(manager: &model_manager::ModelManager) -> Result<(), model_manager::Error> {
/// let handle = manager.load("model.safetensors")?;
/// let mut progress = handle.progress_updates();
/// tokio::spawn(async move {
///     while progress.changed().await.is_ok() {
///         let p = progress.borrow_and_update().clone();
///         println!("{}/{} bytes", p.bytes_done, p.bytes_total);
///     }
/// });
/// let snapshot = handle.await?;
/// println!("ready at generation {}", snapshot.generation);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LoadHandle {
    ticket: Arc<LoadTicket>,
}

impl std::fmt::Debug for LoadHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadHandle")
            .field("model", &self.ticket.model)
            .field("outcome", &self.try_outcome())
            .finish()
    }
}

impl LoadHandle {
    pub(crate) fn resolved(ticket: Arc<LoadTicket>, outcome: Result<Snapshot>) -> Self {
        ticket.resolve(outcome);
        LoadHandle { ticket }
    }

    /// The model this load is for.
    pub fn model(&self) -> &ModelId {
        &self.ticket.model
    }

    /// Progress so far (lock-free).
    pub fn progress(&self) -> Progress {
        self.ticket.progress.read()
    }

    /// A receiver notified at every chunk read; it closes (after the final
    /// value) when the load ends, however it ends.
    pub fn progress_updates(&self) -> watch::Receiver<Progress> {
        self.ticket.progress.subscribe()
    }

    /// Cancel this load if it is still the current (or pending) one; a no-op
    /// once it has finished or been replaced.
    pub fn cancel(&self) {
        if let Some(canceller) = self.ticket.canceller.upgrade() {
            canceller.cancel_load(&self.ticket);
        }
    }

    /// Whether the outcome is known.
    pub fn is_finished(&self) -> bool {
        self.ticket.outcome.borrow().is_some()
    }

    /// The outcome, if known.
    pub fn try_outcome(&self) -> Option<Result<Snapshot>> {
        self.ticket.outcome.borrow().clone()
    }

    /// Wait for the outcome. Cancel safe: dropping the future leaves the load
    /// running.
    pub async fn wait(&self) -> Result<Snapshot> {
        let mut rx = self.ticket.outcome.subscribe();
        let outcome = match rx.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            // The sender lives in the ticket we hold: it cannot be dropped.
            Err(_) => None,
        };
        outcome.unwrap_or(Err(Error::ShutDown))
    }
}

impl IntoFuture for LoadHandle {
    type Output = Result<Snapshot>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Snapshot>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.wait().await })
    }
}
