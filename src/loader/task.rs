//! The tasks: a load (on one blocking thread, or paced on wasm32) and an
//! unload's drain. Each applies its result under the state lock, and each
//! ends its operation even if it is dropped unrun (a runtime shut down under
//! it): no handle is left unresolved and no state stays `Loading` or
//! `Unloading` with nothing behind it.

#[cfg(not(target_arch = "wasm32"))]
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::LoaderService;
use crate::error::{Error, Result};
use crate::io::read::stream::read_stream;
use crate::io::read::{peak_bytes, read_plan, ReadContext};
use crate::io::ModelSource;
use crate::pipeline::{Installed, Pipeline, Resident};
use crate::state::store::Txn;
use crate::state::ticket::LoadTicket;

/// Ends a load whose task was dropped before it could: nothing was read (or
/// what was read was dropped with the task), so the load ends as cancelled.
struct EndLoad<P: Pipeline> {
    loader: Arc<LoaderService<P>>,
    ticket: Arc<LoadTicket>,
    done: bool,
}

impl<P: Pipeline> EndLoad<P> {
    /// The load ran: apply its outcome.
    fn complete(mut self, outcome: Result<Resident<P>>) {
        self.done = true;
        self.loader.finish_load(&self.ticket, outcome);
    }
}

impl<P: Pipeline> Drop for EndLoad<P> {
    fn drop(&mut self) {
        if !self.done {
            // Dropped unrun: its runtime refused it (shut down under it).
            self.ticket.stop(Error::ShutDown);
            self.loader.finish_load(&self.ticket, Err(Error::Cancelled));
        }
    }
}

impl<P: Pipeline> LoaderService<P> {
    /// `Idle|Failed --load--> Loading`, and start the load.
    pub(crate) fn start(
        self: &Arc<Self>,
        txn: &mut Txn<'_, P>,
        ticket: Arc<LoadTicket>,
    ) -> Result<()> {
        txn.start_load(&ticket)
            .map_err(|_| Error::InvalidTransition {
                from: txn.state(),
                event: crate::state::Command::Load,
            })?;
        let end = EndLoad {
            loader: self.clone(),
            ticket,
            done: false,
        };
        let this = self.clone();
        // Spawned once the lock is released: if the runtime refuses the
        // task, dropping it (and its `EndLoad`) ends the load at once, which
        // takes the lock.
        txn.defer(move || {
            #[cfg(not(target_arch = "wasm32"))]
            let _ = this.spawn_blocking(move || {
                // A panic (a bug, or a library under us) ends the load in
                // `Failed` with what was read dropped, never unwinds away.
                let outcome = catch_unwind(AssertUnwindSafe(|| end.loader.read(&end.ticket)))
                    .unwrap_or_else(|panic| Err(Error::Device(panic_message(&panic))));
                end.complete(outcome);
            });
            #[cfg(target_arch = "wasm32")]
            let _ = this.spawn(async move {
                let outcome = end.loader.read_paced(&end.ticket).await;
                end.complete(outcome);
            });
        });
        Ok(())
    }

    /// The blocking part of a load, on its blocking thread. Nothing paces
    /// it: a stream's read suspends to wait for its producer (this thread
    /// waits; cancel and the producer's end wake it); any other read never
    /// suspends, and one that did would be an error, not a wait.
    #[cfg(not(target_arch = "wasm32"))]
    fn read(&self, ticket: &LoadTicket) -> Result<Resident<P>> {
        let read = self.read_source(ticket, None);
        if matches!(&*ticket.model, ModelSource::Stream(_)) {
            return crate::io::read::stream::block_on(read);
        }
        complete_now(read)
            .unwrap_or_else(|| Err(Error::Device("internal: an unpaced read suspended".into())))
    }

    /// A load on the JS event loop: the same steps, yielding between chunks.
    #[cfg(target_arch = "wasm32")]
    async fn read_paced(&self, ticket: &LoadTicket) -> Result<Resident<P>> {
        // Without a pace from the host, yield to the executor between chunks.
        let pace: crate::io::Pace = self
            .config
            .pace
            .clone()
            .unwrap_or_else(|| Arc::new(|| Box::pin(tokio::task::yield_now())));
        self.read_source(ticket, Some(&pace)).await
    }

    /// A load's steps, the same on every target: resolve, check the budget
    /// against the peak, read (yielding to `pace` between chunks, if any),
    /// assemble. What a failed or cancelled load read is dropped before it
    /// returns.
    async fn read_source(
        &self,
        ticket: &LoadTicket,
        pace: Option<&crate::io::Pace>,
    ) -> Result<Resident<P>> {
        let ctx = self.read_context(ticket);
        let resources = &self.resources;
        let mut reservation;
        let loaded = match &*ticket.model {
            ModelSource::Stream(stream) => {
                // Paced by the producer: the budget is checked file by
                // file, as headers arrive.
                resources.note_load_start();
                reservation = resources.reservation();
                read_stream(resources, stream, &ctx, &mut reservation).await
            }
            ModelSource::Parked(parked) => {
                // Back from a pool's host tier: one copy per tensor.
                resources.check_budget(parked.bytes())?;
                resources.note_load_start();
                reservation = resources.reservation();
                crate::io::read::resume::resume(parked, &ctx, &mut reservation)
            }
            _ => {
                let plan = match ticket.take_plan() {
                    Some(plan) => plan,
                    None => resolve(&ticket.model, &ctx)?,
                };
                // Device memory only: the CUDA path's pinned staging is
                // host memory, pooled for the manager's life.
                let device = resources.device();
                let config = &self.config;
                resources.check_budget(peak_bytes(
                    &plan,
                    config.dtype,
                    device,
                    config.page_cache,
                )?)?;
                resources.note_load_start();
                reservation = resources.reservation();
                read_plan(plan, &ctx, &mut reservation, pace).await
            }
        };
        let resident = loaded.and_then(|loaded| {
            self.pipelines
                .assemble(loaded, resources.device(), self.config.dtype, reservation)
        });
        if resident.is_err() {
            // A cancelled or failed load has dropped what it read.
            resources.return_freed_memory();
        }
        resident
    }

    fn read_context<'a>(&'a self, ticket: &'a LoadTicket) -> ReadContext<'a> {
        let config = &self.config;
        ReadContext {
            cancel: &ticket.cancel,
            progress: &ticket.progress,
            chunk_size: config.chunk_size,
            threads: config.threads,
            hook: config.hook.as_ref(),
            hook_lock: Default::default(),
            device: self.resources.device(),
            dtype: config.dtype,
            page_cache: config.page_cache,
            #[cfg(feature = "cuda")]
            staging: &self.staging,
        }
    }

    /// Apply a load's result. A load asked to stop frees what it read first,
    /// then goes `Loading --cancelled--> Idle`; then the load waiting its
    /// turn, if any, starts.
    fn finish_load(self: &Arc<Self>, ticket: &Arc<LoadTicket>, outcome: Result<Resident<P>>) {
        // The load is over: what was kept for it and not taken goes back
        // before its end is published.
        drop(ticket.take_keep());
        let mut outcome = Some(outcome);
        let mut txn = self.state.lock();
        if !txn.active().is_some_and(|a| Arc::ptr_eq(a, ticket)) {
            // Not the running load (cannot happen: only this task clears it).
            drop(txn);
            drop(outcome);
            ticket.resolve(Err(ticket.stop_reason()));
            return;
        }
        let generation = ticket.generation();
        let stopped = ticket.is_stopped() || matches!(outcome, Some(Err(Error::Cancelled)));
        if stopped {
            if matches!(outcome, Some(Ok(_))) {
                // Free the model outside the lock, before saying it is gone.
                drop(txn);
                drop(outcome.take());
                self.resources.return_freed_memory();
                txn = self.state.lock();
            }
            let _ = txn.end_load(generation, None);
            self.start_pending(&mut txn);
            drop(txn);
            ticket.resolve(Err(ticket.stop_reason()));
            return;
        }
        match outcome.take() {
            Some(Ok(resident)) => {
                let released = self.state.lease_release_counter();
                let _ = txn.finish_load(generation, Installed::new(resident, released));
                let snapshot = txn.snapshot();
                drop(txn);
                ticket.resolve(Ok(snapshot));
            }
            Some(Err(error)) => {
                tracing::warn!(model = %ticket.model, %error, "load failed");
                let _ = txn.end_load(generation, Some(error.clone()));
                drop(txn);
                ticket.resolve(Err(error));
            }
            None => {}
        }
    }

    /// Start the load that waited its turn (or resolve it, after shutdown).
    fn start_pending(self: &Arc<Self>, txn: &mut Txn<'_, P>) {
        let Some(next) = txn.set_pending(None) else {
            return;
        };
        if txn.is_closed() {
            next.stop(Error::Cancelled);
            next.resolve(Err(Error::Cancelled));
        } else if let Err(error) = self.start(txn, next.clone()) {
            next.resolve(Err(error));
        }
    }

    /// Spawn the drain of an unload: wait for the leases (async), then free
    /// and drain on a blocking thread.
    pub(crate) fn spawn_unload(
        self: &Arc<Self>,
        txn: &mut Txn<'_, P>,
        retired: Option<Installed<P>>,
        generation: u64,
    ) {
        let end = EndUnload {
            loader: self.clone(),
            generation,
            retired,
        };
        let task = async move {
            if let Some(installed) = &end.retired {
                let leases = installed.leases.clone();
                tokio::select! {
                    _ = leases.drained() => {}
                    _ = end.loader.bounded_drain(&leases) => {}
                }
            }
            let loader = end.loader.clone();
            loader.keep_for_next();
            // Freeing gigabytes and synchronising a device block: do it on a
            // blocking thread. `EndUnload` does it wherever it is dropped,
            // also inline if that thread is refused.
            #[cfg(not(target_arch = "wasm32"))]
            let _ = loader.spawn_blocking(move || drop(end));
            #[cfg(target_arch = "wasm32")]
            {
                let _ = loader;
                drop(end);
            }
        };
        let this = self.clone();
        // Spawned once the lock is released: a task the runtime refuses is
        // dropped, and its `EndUnload` frees and drains at once.
        txn.defer(move || {
            let _ = this.spawn(task);
        });
    }

    /// The leases of a model being unloaded have drained and its memory is
    /// about to be freed: if a load waits to start after it (a `load` of
    /// another model while this one was ready), on the CPU, what it frees
    /// is kept for that load (`crate::alloc`), up to its size, until the
    /// load ends. Not for a stream or a download, which would hold it for
    /// as long as their bytes take to come.
    fn keep_for_next(&self) {
        if !self.resources.device().is_cpu() {
            return;
        }
        let txn = self.state.lock();
        let Some(next) = txn.pending() else { return };
        let waits_for_bytes = match &*next.model {
            crate::io::ModelSource::Stream(_) => true,
            crate::io::ModelSource::Hub { download, .. } => download.is_some(),
            _ => false,
        };
        if !waits_for_bytes {
            next.keep(crate::alloc::Retention::new(
                self.resources.resident_bytes(),
            ));
        }
    }

    /// Completes once shutdown has started and `drain_timeout` has passed:
    /// the bound on how long shutdown waits for leases.
    async fn bounded_drain(&self, leases: &crate::pipeline::LeaseCount) {
        self.stopping.cancelled().await;
        #[cfg(not(target_arch = "wasm32"))]
        let _ = tokio::time::timeout(self.config.drain_timeout, leases.drained()).await;
        // No timer on wasm32: shutdown gives up on leases at once.
        #[cfg(target_arch = "wasm32")]
        let _ = leases;
    }

    /// `Unloading --drained--> Idle`, then start the load waiting its turn.
    fn finish_unload(self: &Arc<Self>, generation: u64) {
        let mut txn = self.state.lock();
        if txn.drain(generation).is_ok() {
            self.start_pending(&mut txn);
        }
    }
}

/// Ends an unload: whatever it still holds is freed (a lease outliving it
/// makes it unreclaimed) and the state drains to `Idle`, also when the task
/// is dropped before it ran.
struct EndUnload<P: Pipeline> {
    loader: Arc<LoaderService<P>>,
    generation: u64,
    retired: Option<Installed<P>>,
}

impl<P: Pipeline> Drop for EndUnload<P> {
    fn drop(&mut self) {
        if let Some(Installed {
            resident, leases, ..
        }) = self.retired.take()
        {
            if leases.outstanding() > 0 {
                tracing::warn!(
                    leases = leases.outstanding(),
                    "shutdown: leases still held; their memory is unreclaimed until the last is dropped"
                );
                resident.abandon();
            }
            drop(resident);
            // Synchronizes the device and notes its free memory too.
            self.loader.resources.return_freed_memory();
        }
        self.loader.finish_unload(self.generation);
    }
}

/// What a caught panic said.
#[cfg(not(target_arch = "wasm32"))]
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let said = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    format!("the loader panicked: {said}")
}

/// The plan of a load's source: a hub source with the download switch
/// downloads here, with the load's progress and cancel.
#[cfg(not(target_arch = "wasm32"))]
fn resolve(source: &ModelSource, ctx: &ReadContext<'_>) -> Result<crate::io::plan::Plan> {
    crate::io::resolve_for_load(source, ctx)
}

/// The plan of a load's source (wasm32 has no downloads).
#[cfg(target_arch = "wasm32")]
fn resolve(source: &ModelSource, _: &ReadContext<'_>) -> Result<crate::io::plan::Plan> {
    crate::io::plan::resolve(source)
}

/// Poll a future that never suspends (an unpaced read) to its end.
#[cfg(not(target_arch = "wasm32"))]
fn complete_now<F: std::future::Future>(future: F) -> Option<F::Output> {
    use std::task::{Context, Poll, Waker};
    let future = std::pin::pin!(future);
    match future.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}
