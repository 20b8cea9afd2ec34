//! StateManager: the runtime machine under one lock, the generation counter,
//! the latest snapshot (lock-free reads) and the ordered event stream.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;
use tokio::sync::{broadcast, watch};

use super::machine::{Input, Machine, Refusal};
use super::typed::ModelId;
use super::{Command, ProgressCounters, Snapshot, State, StateEvent};
use crate::loader::LoadTicket;
use crate::Error;

/// How many transitions a subscriber may fall behind before it is told it
/// missed some.
const EVENT_CAPACITY: usize = 1024;

/// What is published after every transition; read without locking.
#[derive(Debug)]
pub(crate) struct Published {
    pub(crate) state: State,
    pub(crate) generation: u64,
    pub(crate) model: Option<ModelId>,
    pub(crate) error: Option<Error>,
    pub(crate) progress: Option<Arc<ProgressCounters>>,
}

impl Published {
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            state: self.state,
            generation: self.generation,
            model: self.model.clone(),
            progress: self.progress.as_ref().map(|p| p.read()).unwrap_or_default(),
            error: self.error.clone(),
        }
    }
}

pub(crate) struct StateManager {
    core: Mutex<Core>,
    current: ArcSwap<Published>,
    events: broadcast::Sender<StateEvent>,
    changed: watch::Sender<u64>,
}

struct Core {
    machine: Machine,
    generation: u64,
    progress: Option<Arc<ProgressCounters>>,
    /// The load running now (state `Loading`).
    active: Option<Arc<LoadTicket>>,
    /// A load waiting for the unload in flight to drain.
    pending: Option<Arc<LoadTicket>>,
    /// Set by shutdown: every command is refused from then on.
    closed: bool,
}

/// Exclusive access to the machine: every check and every transition made
/// through one `Txn` happen atomically with respect to other commands and
/// background results.
pub(crate) struct Txn<'a> {
    core: MutexGuard<'a, Core>,
    manager: &'a StateManager,
}

impl StateManager {
    pub(crate) fn new() -> Self {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        StateManager {
            core: Mutex::new(Core {
                machine: Machine::new(),
                generation: 0,
                progress: None,
                active: None,
                pending: None,
                closed: false,
            }),
            current: ArcSwap::from_pointee(Published {
                state: State::Idle,
                generation: 0,
                model: None,
                error: None,
                progress: None,
            }),
            events,
            changed: watch::Sender::new(0),
        }
    }

    /// Wait until `done` holds for the published state. Cancel safe.
    pub(crate) async fn wait_until(&self, mut done: impl FnMut(&Published) -> bool) {
        let mut rx = self.changed.subscribe();
        loop {
            if done(&self.current()) {
                // A command may publish two transitions under one lock (a
                // drain then the pending load): confirm under the lock so no
                // in-between state is taken for the outcome.
                let _settled = self.core.lock().unwrap_or_else(PoisonError::into_inner);
                if done(&self.current()) {
                    return;
                }
            }
            // The sender lives in `self`: the channel cannot close here.
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    pub(crate) fn lock(&self) -> Txn<'_> {
        Txn {
            // The core is consistent between any two statements that touch it,
            // so a panic elsewhere while the lock was held leaves nothing torn.
            core: self.core.lock().unwrap_or_else(PoisonError::into_inner),
            manager: self,
        }
    }

    /// The latest published state; lock-free.
    pub(crate) fn current(&self) -> arc_swap::Guard<Arc<Published>> {
        self.current.load()
    }

    pub(crate) fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.events.subscribe(),
        }
    }
}

impl Txn<'_> {
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

    pub(crate) fn set_active(
        &mut self,
        ticket: Option<Arc<LoadTicket>>,
    ) -> Option<Arc<LoadTicket>> {
        std::mem::replace(&mut self.core.active, ticket)
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

    /// The generation the next transition will carry.
    pub(crate) fn next_generation(&self) -> u64 {
        self.core.generation + 1
    }

    /// Feed `input` to the machine; on a transition, publish the new snapshot
    /// and the event, in order, before the lock is released.
    pub(crate) fn fire(
        &mut self,
        input: Input,
        progress: Option<Arc<ProgressCounters>>,
    ) -> Result<(), Refusal> {
        let from = self.state();
        let command = input.command();
        self.core.machine.handle(&input)?;
        self.core.generation += 1;
        let to = self.state();
        match to {
            State::Loading => self.core.progress = progress,
            State::Idle | State::Failed => self.core.progress = None,
            State::Ready | State::Unloading => {}
        }
        let node = self.core.machine.node();
        let published = Published {
            state: to,
            generation: self.core.generation,
            model: node.model().cloned(),
            error: node.error().cloned(),
            progress: self.core.progress.clone(),
        };
        let snapshot = published.snapshot();
        self.manager.current.store(Arc::new(published));
        tracing::debug!(%from, %to, %command, generation = snapshot.generation, "transition");
        // No receivers is fine: events are for whoever listens.
        let generation = snapshot.generation;
        let _ = self.manager.events.send(StateEvent {
            from,
            to,
            command,
            snapshot,
        });
        self.manager.changed.send_replace(generation);
        Ok(())
    }

    /// Like [`fire`](Self::fire) for user commands: a refusal becomes the
    /// public error.
    pub(crate) fn command(
        &mut self,
        input: Input,
        progress: Option<Arc<ProgressCounters>>,
    ) -> Result<(), Error> {
        self.fire(input, progress).map_err(|refusal| match refusal {
            Refusal::Illegal { from, event } => Error::InvalidTransition { from, event },
            // Commands carry the current generation by construction.
            Refusal::Stale => Error::InvalidTransition {
                from: self.state(),
                event: Command::Load,
            },
        })
    }
}

/// A stream of every transition, in order.
///
/// Created by [`ModelManager::subscribe`](crate::ModelManager::subscribe). A
/// subscriber that falls more than 1024 transitions behind is told how many it
/// missed ([`RecvError::Lagged`]) and then continues with the oldest kept.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<StateEvent>,
}

/// Why [`Subscription::recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The subscriber fell behind; this many events were dropped.
    #[error("missed {0} state events")]
    Lagged(u64),
    /// The manager is gone; no more events will come.
    #[error("the model manager is gone")]
    Closed,
}

/// Why [`Subscription::try_recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// No event is waiting.
    #[error("no state event waiting")]
    Empty,
    /// The subscriber fell behind; this many events were dropped.
    #[error("missed {0} state events")]
    Lagged(u64),
    /// The manager is gone; no more events will come.
    #[error("the model manager is gone")]
    Closed,
}

impl Subscription {
    /// Wait for the next transition.
    ///
    /// Cancel safe: dropping the future loses no event.
    pub async fn recv(&mut self) -> Result<StateEvent, RecvError> {
        self.rx.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(n) => RecvError::Lagged(n),
            broadcast::error::RecvError::Closed => RecvError::Closed,
        })
    }

    /// Take the next transition if one is waiting.
    pub fn try_recv(&mut self) -> Result<StateEvent, TryRecvError> {
        self.rx.try_recv().map_err(|e| match e {
            broadcast::error::TryRecvError::Empty => TryRecvError::Empty,
            broadcast::error::TryRecvError::Lagged(n) => TryRecvError::Lagged(n),
            broadcast::error::TryRecvError::Closed => TryRecvError::Closed,
        })
    }

    #[cfg(not(target_arch = "wasm32"))]
    /// Wait for the next transition without an async runtime (for threads
    /// outside one, such as a C host's).
    pub fn blocking_recv(&mut self) -> Result<StateEvent, RecvError> {
        self.rx.blocking_recv().map_err(|e| match e {
            broadcast::error::RecvError::Lagged(n) => RecvError::Lagged(n),
            broadcast::error::RecvError::Closed => RecvError::Closed,
        })
    }
}
