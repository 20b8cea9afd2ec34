//! [`Txn`]: the commands' view of the state under its lock: each
//! transition fed to the machine, and the snapshot it publishes.

use std::sync::Arc;

use super::{Published, Txn};
use crate::error::{Error, Result};
use crate::pipeline::{Installed, Pipeline};
use crate::state::machine::{Input, Refusal};
use crate::state::ticket::LoadTicket;
use crate::state::typed::ModelId;
use crate::state::{Command, Snapshot, State, StateEvent};

impl<'a, P: Pipeline> Txn<'a, P> {
    /// Run `work` once the lock is released.
    pub(crate) fn defer(&mut self, work: impl FnOnce() + 'a) {
        self.after.0.push(Box::new(work));
    }

    pub(crate) fn state(&self) -> State {
        self.core.machine.node().kind()
    }

    pub(crate) fn model(&self) -> Option<&ModelId> {
        self.core.machine.node().model()
    }

    /// The generation of the operation in flight (`Loading`, `Unloading`).
    pub(crate) fn op_generation(&self) -> Option<u64> {
        self.core.machine.node().op_generation()
    }

    pub(crate) fn active(&self) -> Option<&Arc<LoadTicket>> {
        self.core.active.as_ref()
    }

    pub(crate) fn pending(&self) -> Option<&Arc<LoadTicket>> {
        self.core.pending.as_ref()
    }

    pub(crate) fn set_pending(
        &mut self,
        ticket: Option<Arc<LoadTicket>>,
    ) -> Option<Arc<LoadTicket>> {
        std::mem::replace(&mut self.core.pending, ticket)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.core.closed
    }

    pub(crate) fn close(&mut self) {
        self.core.closed = true;
    }

    /// The current snapshot (under the lock, so exactly the state now).
    pub(crate) fn snapshot(&self) -> Snapshot {
        // Under the lock nothing can publish: no retry (and no re-lock).
        self.manager.snapshot_of(&self.manager.current())
    }

    /// `Idle|Failed --load--> Loading` with `ticket` as the running load.
    pub(crate) fn start_load(&mut self, ticket: &Arc<LoadTicket>) -> Result<u64, Refusal> {
        let generation = self.core.generation + 1;
        ticket.set_generation(generation);
        self.core.progress = Some(ticket.progress.clone());
        self.fire(Input::Load {
            model: ticket.model.clone(),
            generation,
        })?;
        self.core.active = Some(ticket.clone());
        Ok(generation)
    }

    /// `Loading --finished--> Ready`: the pipeline is published in the same
    /// step as the state, so a reader that sees `Ready` can lease it.
    pub(crate) fn finish_load(
        &mut self,
        generation: u64,
        installed: Installed<P>,
    ) -> Result<(), Refusal> {
        let previous = self.core.installed.replace(installed);
        let fired = self.fire(Input::Finish { generation });
        if fired.is_err() {
            self.core.installed = previous;
        } else {
            self.core.active = None;
        }
        fired
    }

    /// `Loading --cancelled--> Idle` or `Loading --error--> Failed`, once the
    /// load has freed what it read.
    pub(crate) fn end_load(
        &mut self,
        generation: u64,
        error: Option<Error>,
    ) -> Result<(), Refusal> {
        let input = match error {
            None => Input::Cancel { generation },
            Some(error) => Input::Fail { generation, error },
        };
        self.fire(input)?;
        self.core.active = None;
        Ok(())
    }

    /// `Ready --unload--> Unloading`: returns the unload's generation and the
    /// retired pipeline (no lease can be taken on it from now on).
    pub(crate) fn unload(&mut self) -> Result<(u64, Option<Installed<P>>), Refusal> {
        let generation = self.core.generation + 1;
        self.fire(Input::Unload { generation })?;
        let retired = self.core.installed.take();
        self.core.retiring = retired.as_ref().map(|i| i.leases.clone());
        Ok((generation, retired))
    }

    /// `Unloading --drained--> Idle`.
    pub(crate) fn drain(&mut self, generation: u64) -> Result<(), Refusal> {
        self.fire(Input::Drain { generation })?;
        self.core.retiring = None;
        Ok(())
    }

    /// `Failed --reset--> Idle`.
    pub(crate) fn reset(&mut self) -> Result<()> {
        self.fire(Input::Reset).map_err(|refusal| match refusal {
            Refusal::Illegal { from, event } => Error::InvalidTransition { from, event },
            Refusal::Stale => Error::InvalidTransition {
                from: self.state(),
                event: Command::Reset,
            },
        })
    }

    /// Feed `input` to the machine; on a transition, publish the new snapshot
    /// and the event, in order, before the lock is released.
    fn fire(&mut self, input: Input) -> Result<(), Refusal> {
        let from = self.state();
        let command = input.command();
        self.core.machine.handle(&input)?;
        self.core.generation += 1;
        let to = self.state();
        if matches!(to, State::Idle | State::Failed) {
            self.core.progress = None;
        }
        let node = self.core.machine.node();
        let published = Published {
            state: to,
            generation: self.core.generation,
            model: node.model().cloned(),
            error: node.error().cloned(),
            progress: self.core.progress.clone(),
            info: match (&self.core.installed, to) {
                (Some(installed), State::Ready) => Some(installed.info.clone()),
                _ => None,
            },
        };
        self.manager.current.store(Arc::new(published));
        let snapshot = self.manager.snapshot_of(&self.manager.current());
        tracing::debug!(%from, %to, %command, generation = snapshot.generation, "transition");
        let generation = snapshot.generation;
        // No receivers is fine: events are for whoever listens.
        let _ = self.manager.events.send(StateEvent {
            from,
            to,
            command,
            snapshot,
        });
        self.manager.changed.send_replace(generation);
        self.manager.settle.notify_all();
        Ok(())
    }
}
