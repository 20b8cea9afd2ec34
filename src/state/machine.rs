//! The runtime machine, driven by `statig`, whose state-local data are the
//! typed state values of [`super::typed`].
//!
//! Every handler can only build its target state by consuming its own typed
//! value through a transition method, so the runtime machine can make exactly
//! the moves the types allow. An event that is illegal in the current state is
//! refused with an [`InvalidTransition`](crate::Error::InvalidTransition), and a
//! background result whose generation is no longer current is refused as stale.

use statig::prelude::*;

use super::typed::{Failed, Idle, Loading, ModelId, Ready, Unloading};
use super::{Command, State};
use crate::Error;

/// An input to the runtime machine.
#[derive(Debug)]
pub(crate) enum Input {
    Load { model: ModelId, generation: u64 },
    Finish { generation: u64 },
    Cancel,
    Fail { generation: u64, error: Error },
    Unload { generation: u64 },
    Drain { generation: u64 },
    Reset,
}

impl Input {
    pub(crate) fn command(&self) -> Command {
        match self {
            Input::Load { .. } => Command::Load,
            Input::Finish { .. } => Command::Finish,
            Input::Cancel => Command::Cancel,
            Input::Fail { .. } => Command::Fail,
            Input::Unload { .. } => Command::Unload,
            Input::Drain { .. } => Command::Drain,
            Input::Reset => Command::Reset,
        }
    }
}

/// Why an input was not applied.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Refusal {
    /// The input is not an edge out of the current state.
    Illegal { from: State, event: Command },
    /// A background result for an operation that is no longer current.
    Stale,
}

/// Holds a typed state value so that a handler can consume it.
///
/// A slot is emptied only by the handler that returns the transition built
/// from its value, and statig replaces the whole state right after, so an
/// empty slot is never observed.
#[derive(Debug)]
pub(crate) struct Slot<T>(Option<T>);

impl<T> Slot<T> {
    fn new(value: T) -> Self {
        Slot(Some(value))
    }

    fn take(&mut self) -> T {
        self.0
            .take()
            .expect("a state slot is taken only once, by the transition that leaves it")
    }

    pub(crate) fn get(&self) -> &T {
        self.0
            .as_ref()
            .expect("a state slot is full while its state is current")
    }
}

/// Shared storage of the machine (none: all data is state-local).
#[derive(Debug, Default)]
pub(crate) struct Lifecycle;

/// The verdict on one input, passed to the handlers as statig's context.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    refusal: Option<Refusal>,
}

#[state_machine(
    initial = "Node::idle(Slot::new(Idle::new()))",
    state(name = "Node", derive(Debug)),
    visibility = "pub(crate)"
)]
impl Lifecycle {
    #[state]
    fn idle(idle: &mut Slot<Idle>, context: &mut Verdict, event: &Input) -> Outcome<Node> {
        match event {
            Input::Load { model, generation } => Transition(Node::loading(Slot::new(
                idle.take().load(model.clone(), *generation),
            ))),
            _ => context.refuse(State::Idle, event),
        }
    }

    #[state]
    fn loading(loading: &mut Slot<Loading>, context: &mut Verdict, event: &Input) -> Outcome<Node> {
        let current = loading.get().generation();
        match event {
            Input::Finish { generation } if *generation == current => {
                Transition(Node::ready(Slot::new(loading.take().finish())))
            }
            Input::Fail { generation, error } if *generation == current => {
                Transition(Node::failed(Slot::new(loading.take().fail(error.clone()))))
            }
            Input::Finish { .. } | Input::Fail { .. } => context.stale(),
            Input::Cancel => Transition(Node::idle(Slot::new(loading.take().cancel()))),
            _ => context.refuse(State::Loading, event),
        }
    }

    #[state]
    fn ready(ready: &mut Slot<Ready>, context: &mut Verdict, event: &Input) -> Outcome<Node> {
        match event {
            Input::Unload { generation } => {
                Transition(Node::unloading(Slot::new(ready.take().unload(*generation))))
            }
            Input::Finish { .. } | Input::Fail { .. } => context.stale(),
            _ => context.refuse(State::Ready, event),
        }
    }

    #[state]
    fn unloading(
        unloading: &mut Slot<Unloading>,
        context: &mut Verdict,
        event: &Input,
    ) -> Outcome<Node> {
        match event {
            Input::Drain { generation } if *generation == unloading.get().generation() => {
                Transition(Node::idle(Slot::new(unloading.take().drained())))
            }
            Input::Drain { .. } | Input::Finish { .. } | Input::Fail { .. } => context.stale(),
            _ => context.refuse(State::Unloading, event),
        }
    }

    #[state]
    fn failed(failed: &mut Slot<Failed>, context: &mut Verdict, event: &Input) -> Outcome<Node> {
        match event {
            Input::Load { model, generation } => Transition(Node::loading(Slot::new(
                failed.take().load(model.clone(), *generation),
            ))),
            Input::Reset => Transition(Node::idle(Slot::new(failed.take().reset()))),
            Input::Finish { .. } | Input::Fail { .. } | Input::Drain { .. } => context.stale(),
            _ => context.refuse(State::Failed, event),
        }
    }
}

impl Verdict {
    fn refuse(&mut self, from: State, event: &Input) -> Outcome<Node> {
        // A drain can only be stale outside `Unloading`: it is never a user command.
        self.refusal = Some(match event {
            Input::Drain { .. } => Refusal::Stale,
            _ => Refusal::Illegal {
                from,
                event: event.command(),
            },
        });
        Handled
    }

    fn stale(&mut self) -> Outcome<Node> {
        self.refusal = Some(Refusal::Stale);
        Handled
    }
}

impl Node {
    /// The plain state this node stands for.
    pub(crate) fn kind(&self) -> State {
        match self {
            Node::Idle { .. } => State::Idle,
            Node::Loading { .. } => State::Loading,
            Node::Ready { .. } => State::Ready,
            Node::Unloading { .. } => State::Unloading,
            Node::Failed { .. } => State::Failed,
        }
    }

    /// The model this state is about, if any.
    pub(crate) fn model(&self) -> Option<&ModelId> {
        match self {
            Node::Loading { loading } => Some(loading.get().model()),
            Node::Ready { ready } => Some(ready.get().model()),
            Node::Unloading { unloading } => Some(unloading.get().model()),
            Node::Idle { .. } | Node::Failed { .. } => None,
        }
    }

    /// The error of a failed load.
    pub(crate) fn error(&self) -> Option<&Error> {
        match self {
            Node::Failed { failed } => Some(failed.get().error()),
            _ => None,
        }
    }

    /// The generation of the operation in flight (`Loading`, `Unloading`).
    pub(crate) fn op_generation(&self) -> Option<u64> {
        match self {
            Node::Loading { loading } => Some(loading.get().generation()),
            Node::Unloading { unloading } => Some(unloading.get().generation()),
            _ => None,
        }
    }
}

/// The machine plus the verdict of each input.
pub(crate) struct Machine {
    inner: statig::blocking::StateMachine<Lifecycle>,
}

impl Machine {
    pub(crate) fn new() -> Self {
        let mut inner = Lifecycle.state_machine();
        inner.init_with_context(&mut Verdict::default());
        Machine { inner }
    }

    pub(crate) fn node(&self) -> &Node {
        self.inner.state()
    }

    /// Feed one input; `Ok` when it caused a transition.
    pub(crate) fn handle(&mut self, input: &Input) -> Result<(), Refusal> {
        let mut verdict = Verdict::default();
        self.inner.handle_with_context(input, &mut verdict);
        match verdict.refusal {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }
}
