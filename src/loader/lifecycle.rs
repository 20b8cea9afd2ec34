//! The commands' policies (latest request wins, unload waits for leases) and
//! the tasks that carry them out. Every decision is taken under the state
//! lock, and every background result is applied under it only if its
//! generation is still current.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::plan::resolve;
#[cfg(not(target_arch = "wasm32"))]
use super::read::read_plan;
use super::read::{resident_bytes, ReadContext};
use super::ticket::{CancelLoad, LoadHandle, LoadTicket};
use crate::manager::Shared;
use crate::pipeline::{Pipeline, Resident, Retired};
use crate::state::machine::Input;
use crate::state::store::Txn;
use crate::state::typed::ModelId;
use crate::state::{Command, State};
use crate::{Error, Lease, Result};

impl<P: Pipeline> CancelLoad for Shared<P> {
    fn cancel_load(&self, ticket: &Arc<LoadTicket>) {
        let mut txn = self.state.lock();
        if txn.active().is_some_and(|a| Arc::ptr_eq(a, ticket)) {
            self.cancel_active(&mut txn, Error::Cancelled);
        } else if txn.pending().is_some_and(|p| Arc::ptr_eq(p, ticket)) {
            drop_pending(&mut txn, Error::Cancelled);
        }
    }
}

/// Resolves a load's handles if its task ends without doing so.
struct ResolveOnDrop(Arc<LoadTicket>);

impl Drop for ResolveOnDrop {
    fn drop(&mut self) {
        let reason = if self.0.is_stopped() {
            self.0.stop_reason()
        } else {
            Error::ShutDown
        };
        // A no-op when the load already resolved: the first outcome wins.
        self.0.resolve(Err(reason));
    }
}

/// Resolve and forget the load waiting for an unload.
fn drop_pending(txn: &mut Txn<'_>, reason: Error) {
    if let Some(pending) = txn.set_pending(None) {
        pending.stop(reason.clone());
        // It never started: nothing to free.
        pending.resolve(Err(reason));
    }
}

impl<P: Pipeline> Shared<P> {
    fn new_ticket(self: &Arc<Self>, model: ModelId) -> Arc<LoadTicket> {
        let canceller: Weak<dyn CancelLoad> = Arc::downgrade(self) as Weak<dyn CancelLoad>;
        LoadTicket::new(model, self.loader.load_token(), canceller)
    }

    /// `load(source)`: latest request wins.
    pub(crate) fn load(self: &Arc<Self>, model: ModelId) -> Result<LoadHandle> {
        let mut txn = self.state.lock();
        if txn.is_closed() {
            return Err(Error::ShutDown);
        }
        match txn.state() {
            State::Idle | State::Failed => {
                let ticket = self.new_ticket(model);
                self.start(&mut txn, ticket.clone());
                Ok(ticket.handle())
            }
            State::Loading => {
                let active = txn.active().expect("Loading has an active load").clone();
                if active.model == model {
                    return Ok(active.handle());
                }
                self.cancel_active(&mut txn, Error::Superseded);
                let ticket = self.new_ticket(model);
                self.start(&mut txn, ticket.clone());
                Ok(ticket.handle())
            }
            State::Ready => {
                if txn.model() == Some(&model) {
                    let ticket = self.new_ticket(model);
                    let snapshot = self.state.current().snapshot();
                    return Ok(LoadHandle::resolved(ticket, Ok(snapshot)));
                }
                let ticket = self.new_ticket(model);
                self.begin_unload(&mut txn);
                txn.set_pending(Some(ticket.clone()));
                Ok(ticket.handle())
            }
            State::Unloading => {
                drop_pending(&mut txn, Error::Superseded);
                let ticket = self.new_ticket(model);
                txn.set_pending(Some(ticket.clone()));
                Ok(ticket.handle())
            }
        }
    }

    /// `cancel()`: affects only a load (running, or waiting for an unload).
    pub(crate) fn cancel(&self) -> Result<()> {
        let mut txn = self.state.lock();
        match txn.state() {
            State::Loading => {
                self.cancel_active(&mut txn, Error::Cancelled);
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

    /// `unload()`: returns the generation of the unload to wait for, if any.
    pub(crate) fn unload(self: &Arc<Self>) -> Result<Option<u64>> {
        let mut txn = self.state.lock();
        match txn.state() {
            State::Ready => Ok(Some(self.begin_unload(&mut txn))),
            State::Loading => {
                self.cancel_active(&mut txn, Error::Cancelled);
                Ok(None)
            }
            State::Unloading => {
                drop_pending(&mut txn, Error::Cancelled);
                Ok(txn.op_generation())
            }
            from => Err(Error::InvalidTransition {
                from,
                event: Command::Unload,
            }),
        }
    }

    /// `reset()`: `Failed --reset--> Idle`.
    pub(crate) fn reset(&self) -> Result<()> {
        let mut txn = self.state.lock();
        if txn.is_closed() {
            return Err(Error::ShutDown);
        }
        txn.command(Input::Reset, None)
    }

    pub(crate) fn acquire(&self) -> Result<Lease<P>> {
        self.pipelines
            .acquire()
            .ok_or_else(|| Error::NotReady(self.state.current().state))
    }

    /// Wait until the unload of generation `generation` has drained.
    pub(crate) async fn unloaded(&self, generation: u64) {
        self.state
            .wait_until(|p| p.generation != generation || p.state != State::Unloading)
            .await;
    }

    /// Refuse further commands, stop any load, start unloading; returns
    /// whether an unload is in flight.
    pub(crate) fn close(self: &Arc<Self>) -> bool {
        let mut txn = self.state.lock();
        txn.close();
        match txn.state() {
            State::Loading => {
                self.cancel_active(&mut txn, Error::Cancelled);
                false
            }
            State::Ready => {
                self.begin_unload(&mut txn);
                true
            }
            State::Unloading => {
                drop_pending(&mut txn, Error::Cancelled);
                true
            }
            State::Idle | State::Failed => false,
        }
    }

    /// `Loading --cancelled--> Idle`, telling the load why.
    fn cancel_active(&self, txn: &mut Txn<'_>, reason: Error) {
        if let Some(active) = txn.set_active(None) {
            active.stop(reason);
        }
        txn.fire(Input::Cancel, None)
            .expect("Loading --cancelled--> Idle is legal");
    }

    /// `Idle|Failed --load--> Loading`, and spawn the load.
    fn start(self: &Arc<Self>, txn: &mut Txn<'_>, ticket: Arc<LoadTicket>) {
        let generation = txn.next_generation();
        ticket.set_generation(generation);
        txn.fire(
            Input::Load {
                model: ticket.model.clone(),
                generation,
            },
            Some(ticket.progress.clone()),
        )
        .expect("Idle|Failed --load--> Loading is legal");
        txn.set_active(Some(ticket.clone()));
        let this = self.clone();
        self.loader
            .spawn(async move { this.run_load(ticket).await });
    }

    /// `Ready --unload--> Unloading`, and spawn the drain.
    fn begin_unload(self: &Arc<Self>, txn: &mut Txn<'_>) -> u64 {
        let generation = txn.next_generation();
        txn.fire(Input::Unload { generation }, None)
            .expect("Ready --unload--> Unloading is legal");
        let retired = self.pipelines.retire();
        let this = self.clone();
        self.loader
            .spawn(async move { this.run_unload(retired, generation).await });
        generation
    }

    async fn run_load(self: Arc<Self>, ticket: Arc<LoadTicket>) {
        // If this task is dropped before it finishes (its runtime shut down
        // under it), its handles still resolve instead of waiting forever.
        let _resolve_on_drop = ResolveOnDrop(ticket.clone());
        // Wait until the load this one replaces has let go of its memory.
        let slot = tokio::select! {
            biased;
            _ = ticket.cancel.cancelled() => None,
            slot = self.loader.slot.clone().lock_owned() => Some(slot),
        };
        let Some(slot) = slot else {
            return self.finish_load(&ticket, Err(Error::Cancelled));
        };
        #[cfg(not(target_arch = "wasm32"))]
        let outcome = {
            let this = self.clone();
            let reader = ticket.clone();
            self.loader
                .blocking(move || this.read(&reader))
                .await
                .unwrap_or_else(|| Err(Error::Device("the loader thread stopped".into())))
        };
        #[cfg(target_arch = "wasm32")]
        let outcome = self.read_paced(&ticket).await;
        self.finish_load(&ticket, outcome);
        drop(slot);
    }

    /// The blocking part of a load: resolve, check the budget, read, assemble.
    #[cfg(not(target_arch = "wasm32"))]
    fn read(&self, ticket: &LoadTicket) -> Result<Resident<P>> {
        let plan = resolve(&ticket.model)?;
        self.resources
            .check_budget(resident_bytes(&plan, self.loader.config.dtype)?)?;
        let mut reservation = self.resources.reservation();
        let loaded = read_plan(plan, &self.read_context(ticket), &mut reservation);
        let resident = loaded.and_then(|loaded| self.assemble(loaded, reservation));
        if resident.is_err() {
            // A cancelled or failed load has dropped what it read.
            self.resources.return_freed_memory();
        }
        resident
    }

    /// A load on the JS event loop: the same steps, yielding between chunks.
    #[cfg(target_arch = "wasm32")]
    async fn read_paced(&self, ticket: &LoadTicket) -> Result<Resident<P>> {
        let plan = resolve(&ticket.model)?;
        self.resources
            .check_budget(resident_bytes(&plan, self.loader.config.dtype)?)?;
        let mut reservation = self.resources.reservation();
        let pace = self.loader.config.pace.clone();
        let loaded = super::read::read_plan_paced(
            plan,
            &self.read_context(ticket),
            &mut reservation,
            pace.as_ref(),
        )
        .await?;
        self.assemble(loaded, reservation)
    }

    fn read_context<'a>(&'a self, ticket: &'a LoadTicket) -> ReadContext<'a> {
        let config = &self.loader.config;
        ReadContext {
            cancel: &ticket.cancel,
            progress: &ticket.progress,
            chunk_size: config.chunk_size,
            threads: config.threads,
            hook: config.hook.as_ref(),
            hook_lock: Default::default(),
            device: self.resources.device(),
            dtype: config.dtype,
        }
    }

    fn assemble(
        &self,
        loaded: crate::TensorPipeline,
        reservation: crate::resource::Reservation,
    ) -> Result<Resident<P>> {
        let info = loaded.info.clone();
        let pipeline = catch_unwind(AssertUnwindSafe(|| P::assemble(loaded)))
            .unwrap_or_else(|_| Err(Error::Assemble("the pipeline's assemble panicked".into())))?;
        Ok(Resident::new(pipeline, info, reservation))
    }

    /// Apply a load's result if it is still the current load.
    fn finish_load(&self, ticket: &Arc<LoadTicket>, outcome: Result<Resident<P>>) {
        let mut txn = self.state.lock();
        let current = txn.active().is_some_and(|a| Arc::ptr_eq(a, ticket));
        if !current || ticket.is_stopped() {
            drop(txn);
            // Free what was read before telling anyone the load is over.
            drop(outcome);
            ticket.resolve(Err(ticket.stop_reason()));
            return;
        }
        txn.set_active(None);
        let generation = ticket.generation();
        match outcome {
            Ok(resident) => {
                txn.fire(Input::Finish { generation }, None)
                    .expect("the current load's Finish is applied");
                self.pipelines.install(resident);
                let snapshot = self.state.current().snapshot();
                drop(txn);
                ticket.resolve(Ok(snapshot));
            }
            Err(Error::Cancelled) => {
                // Cancelled by shutdown's token without a command: go back to Idle.
                txn.fire(Input::Cancel, None)
                    .expect("Loading --cancelled--> Idle is legal");
                drop(txn);
                ticket.resolve(Err(Error::Cancelled));
            }
            Err(error) => {
                tracing::warn!(model = %ticket.model, %error, "load failed");
                txn.fire(
                    Input::Fail {
                        generation,
                        error: error.clone(),
                    },
                    None,
                )
                .expect("the current load's Fail is applied");
                drop(txn);
                ticket.resolve(Err(error));
            }
        }
    }

    async fn run_unload(self: Arc<Self>, retired: Option<Retired<P>>, generation: u64) {
        if let Some(Retired { resident, leases }) = retired {
            let drain = self.loader.config.drain_timeout;
            tokio::select! {
                _ = leases.drained() => {}
                _ = self.bounded_drain(&leases, drain) => {
                    tracing::warn!(
                        leases = leases.outstanding(),
                        "shutdown: leases still held; their pipeline is freed when the last is dropped"
                    );
                }
            }
            // Free on a blocking thread: releasing gigabytes takes a while.
            let this = self.clone();
            let _ = self
                .loader
                .blocking(move || {
                    drop(resident);
                    this.resources.return_freed_memory();
                })
                .await;
            if let Err(error) = self.resources.synchronize() {
                tracing::warn!(%error, "device synchronisation after unload failed");
            }
            self.pipelines.forget_retired();
        }
        let mut txn = self.state.lock();
        if txn.fire(Input::Drain { generation }, None).is_err() {
            return;
        }
        if let Some(next) = txn.set_pending(None) {
            if txn.is_closed() {
                next.stop(Error::Cancelled);
                next.resolve(Err(Error::Cancelled));
            } else {
                self.start(&mut txn, next);
            }
        }
    }

    /// Completes `drain` after shutdown has started: the bound on how long
    /// shutdown waits for leases.
    async fn bounded_drain(&self, leases: &crate::pipeline::LeaseCount, drain: Duration) {
        self.loader.stopping.cancelled().await;
        #[cfg(not(target_arch = "wasm32"))]
        let _ = tokio::time::timeout(drain, leases.drained()).await;
        // No timer on wasm32: shutdown gives up on leases at once.
        #[cfg(target_arch = "wasm32")]
        let _ = (leases, drain);
    }
}
