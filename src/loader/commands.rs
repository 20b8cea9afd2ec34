//! The commands' policies: latest request wins, the same model is never
//! loaded twice, unload waits for leases, shutdown refuses everything after.
//! Every decision is taken under the state lock and takes effect at once;
//! what a caller may wait for afterwards is a separate, cancel-safe wait.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{LoaderService, SHUTDOWN_GRACE};
use crate::error::{Error, Result};
use crate::io::plan::Plan;
use crate::pipeline::Pipeline;
use crate::state::store::Txn;
use crate::state::ticket::{CancelLoad, LoadHandle, LoadTicket};
use crate::state::typed::ModelId;
use crate::state::{Command, State};

/// What a caller of `unload` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnloadWait {
    /// Nothing: the manager is already idle or failed.
    Nothing,
    /// The load of this generation to stop and free its memory.
    Load(u64),
    /// The unload of this generation to drain.
    Unload(u64),
}

impl<P: Pipeline> CancelLoad for LoaderService<P> {
    fn cancel_load(&self, ticket: &Arc<LoadTicket>) {
        let mut txn = self.state.lock();
        if txn.active().is_some_and(|a| Arc::ptr_eq(a, ticket)) {
            ticket.stop(Error::Cancelled);
        } else if txn.pending().is_some_and(|p| Arc::ptr_eq(p, ticket)) {
            drop_pending(&mut txn, Error::Cancelled);
        }
    }
}

/// Resolve and forget the load waiting its turn (it never started: nothing
/// to free).
fn drop_pending<P: Pipeline>(txn: &mut Txn<'_, P>, reason: Error) {
    if let Some(pending) = txn.set_pending(None) {
        pending.stop(reason.clone());
        pending.resolve(Err(reason));
    }
}

impl<P: Pipeline> LoaderService<P> {
    fn new_ticket(self: &Arc<Self>, model: ModelId) -> Arc<LoadTicket> {
        let canceller: Weak<dyn CancelLoad> = Arc::downgrade(self) as Weak<dyn CancelLoad>;
        LoadTicket::new(model, self.load_token(), canceller)
    }

    /// Queue `model` behind the operation in flight, unless it is already
    /// the one queued (the same model is never superseded by itself).
    fn queue(self: &Arc<Self>, txn: &mut Txn<'_, P>, model: ModelId) -> LoadHandle {
        if let Some(pending) = txn.pending() {
            if pending.model == model {
                return pending.handle();
            }
        }
        drop_pending(txn, Error::Superseded);
        let ticket = self.new_ticket(model);
        txn.set_pending(Some(ticket.clone()));
        ticket.handle()
    }

    /// `load(source)`: latest request wins. `plan`: the source's layout when
    /// the caller resolved it already (used by a load that starts now; a
    /// joined or queued load resolves its own when it runs).
    pub(crate) fn load(self: &Arc<Self>, model: ModelId, plan: Option<Plan>) -> Result<LoadHandle> {
        if self.state.lock().is_closed() {
            return Err(Error::ShutDown);
        }
        // Started before the lock is taken again (starting spawns threads);
        // shutdown, if it came in between, shuts it down (or Drop does).
        #[cfg(not(target_arch = "wasm32"))]
        self.runtime.handle()?;
        let mut txn = self.state.lock();
        if txn.is_closed() {
            return Err(Error::ShutDown);
        }
        match txn.state() {
            State::Idle | State::Failed => {
                let ticket = self.new_ticket(model);
                if let Some(plan) = plan {
                    ticket.set_plan(plan);
                }
                self.start(&mut txn, ticket.clone())?;
                Ok(ticket.handle())
            }
            State::Loading => {
                if let Some(active) = txn.active() {
                    if active.model == model && !active.is_stopped() {
                        return Ok(active.handle());
                    }
                    // Replaced: it frees what it read, then the newest
                    // request starts.
                    active.stop(Error::Superseded);
                }
                Ok(self.queue(&mut txn, model))
            }
            State::Ready => {
                if txn.model() == Some(&model) {
                    let ticket = self.new_ticket(model);
                    return Ok(LoadHandle::resolved(ticket, Ok(txn.snapshot())));
                }
                self.begin_unload(&mut txn)?;
                Ok(self.queue(&mut txn, model))
            }
            State::Unloading => Ok(self.queue(&mut txn, model)),
        }
    }

    /// `cancel()`: stops the load in flight (its memory is freed before the
    /// state becomes `Idle`) and forgets the one waiting its turn.
    pub(crate) fn cancel(&self) -> Result<()> {
        let mut txn = self.state.lock();
        if txn.is_closed() {
            return Err(Error::ShutDown);
        }
        match txn.state() {
            State::Loading => {
                if let Some(active) = txn.active() {
                    active.stop(Error::Cancelled);
                }
                drop_pending(&mut txn, Error::Cancelled);
                Ok(())
            }
            State::Unloading if txn.pending().is_some() => {
                drop_pending(&mut txn, Error::Cancelled);
                Ok(())
            }
            from => Err(Error::InvalidTransition {
                from,
                event: Command::Cancel,
            }),
        }
    }

    /// `unload()`: takes effect now; returns what to wait for.
    pub(crate) fn unload(self: &Arc<Self>) -> Result<UnloadWait> {
        let mut txn = self.state.lock();
        if txn.is_closed() {
            return Err(Error::ShutDown);
        }
        if let from @ (State::Idle | State::Failed) = txn.state() {
            return Err(Error::InvalidTransition {
                from,
                event: Command::Unload,
            });
        }
        self.stop_all(&mut txn, Error::Cancelled)
    }

    /// Stop whatever is in flight and drop what waits: a load is cancelled,
    /// a ready model unloaded.
    fn stop_all(self: &Arc<Self>, txn: &mut Txn<'_, P>, reason: Error) -> Result<UnloadWait> {
        drop_pending(txn, reason.clone());
        match txn.state() {
            State::Ready => Ok(UnloadWait::Unload(self.begin_unload(txn)?)),
            State::Loading => {
                if let Some(active) = txn.active() {
                    active.stop(reason);
                }
                Ok(txn
                    .op_generation()
                    .map_or(UnloadWait::Nothing, UnloadWait::Load))
            }
            State::Unloading => Ok(txn
                .op_generation()
                .map_or(UnloadWait::Nothing, UnloadWait::Unload)),
            State::Idle | State::Failed => Ok(UnloadWait::Nothing),
        }
    }

    /// `reset()`: `Failed --reset--> Idle`.
    pub(crate) fn reset(&self) -> Result<()> {
        let mut txn = self.state.lock();
        if txn.is_closed() {
            return Err(Error::ShutDown);
        }
        txn.reset()
    }

    /// Wait until what `unload` started is over. Cancel safe.
    pub(crate) async fn unloaded(&self, wait: UnloadWait) {
        let generation = match wait {
            UnloadWait::Nothing => return,
            UnloadWait::Load(g) | UnloadWait::Unload(g) => g,
        };
        self.state
            .wait_until(|p| {
                !(p.generation == generation
                    && matches!(p.state, State::Loading | State::Unloading))
            })
            .await;
    }

    /// `Ready --unload--> Unloading`, and spawn the drain.
    pub(crate) fn begin_unload(self: &Arc<Self>, txn: &mut Txn<'_, P>) -> Result<u64> {
        let (generation, retired) = txn.unload().map_err(|_| Error::InvalidTransition {
            from: txn.state(),
            event: Command::Unload,
        })?;
        self.spawn_unload(txn, retired, generation);
        Ok(generation)
    }

    /// Refuse every command from now on, stop any load, start unloading.
    fn close(self: &Arc<Self>) {
        let mut txn = self.state.lock();
        txn.close();
        let _ = self.stop_all(&mut txn, Error::Cancelled);
    }

    /// Whether nothing is in flight.
    fn settled(state: State) -> bool {
        !matches!(state, State::Loading | State::Unloading)
    }

    /// Shut down: refuse commands, cancel any load, drain leases (giving up
    /// after the drain timeout), unload, and join the manager's tasks and
    /// threads. Returns within the drain timeout plus [`SHUTDOWN_GRACE`]
    /// three times (1.5 s), whatever user code does: a thread still
    /// inside a progress hook or an `assemble` that does not return is left
    /// behind; when it returns, its load frees what it read.
    pub(crate) async fn shutdown(self: &Arc<Self>) {
        self.close();
        self.stopping.cancel();
        self.tracker.close();
        let drain = self.config.drain_timeout;
        let settle = self.state.wait_until(|p| Self::settled(p.state));
        let tasks = self.tracker.wait();
        #[cfg(not(target_arch = "wasm32"))]
        {
            let bound = drain + SHUTDOWN_GRACE;
            if tokio::time::timeout(bound, settle).await.is_err() {
                // A task is stuck in user code: do not wait for it twice.
                self.warn_left_behind();
            } else {
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, tasks).await;
            }
            self.runtime.shutdown(SHUTDOWN_GRACE).await;
        }
        // No timer on wasm32: the unload gives up on leases at once and a
        // load stops at its next chunk.
        #[cfg(target_arch = "wasm32")]
        {
            let _ = drain;
            settle.await;
            tasks.await;
            self.runtime.shutdown(SHUTDOWN_GRACE).await;
        }
    }

    /// [`shutdown`](Self::shutdown) for threads outside any async runtime.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn shutdown_blocking(self: &Arc<Self>) {
        let _one = self
            .shutting_down
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.close();
        self.stopping.cancel();
        self.tracker.close();
        let bound = self.config.drain_timeout + SHUTDOWN_GRACE;
        if !self.state.wait_blocking(bound, |p| Self::settled(p.state)) {
            self.warn_left_behind();
        }
        self.runtime.shutdown_now(SHUTDOWN_GRACE);
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn warn_left_behind(&self) {
        tracing::warn!(
            state = %self.state.current().state,
            "shutdown gave up waiting: a load is still inside user code (a progress hook or \
             assemble); it frees its memory when that returns"
        );
    }

    /// From `Drop`: stop everything; join the owned runtime (bounded) only
    /// where blocking is allowed. Never blocks in async code, never panics.
    pub(crate) fn shutdown_on_drop(self: &Arc<Self>) {
        self.close();
        self.stopping.cancel();
        self.tracker.close();
        self.runtime
            .shutdown_now(self.config.drain_timeout.min(Duration::from_secs(1)));
    }
}
