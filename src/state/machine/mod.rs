//! The runtime machine: one typed state value ([`typed::Node`]) and a
//! dispatcher that hands it, by value, to the handler of its state
//! (`super::handlers`).
//!
//! Each handler takes its state by value and returns either a
//! [`typed::Step`] out of that state (built only by a transition method of
//! that state) or the state back with a [`Refusal`]. The dispatcher is the
//! only code that can open a step; the handlers cannot see
//! [`typed::Node::initial`] or [`typed::Step::into_node`]. So the machine can
//! make exactly the moves the types allow, one per input, with no runtime
//! check of its own and nothing to `expect`.
//!
//! This is why the machine is a plain enum rather than `statig`: statig lends
//! each handler its state-local data by `&mut`, so consuming a typed value
//! needs an `Option` slot emptied at run time, and its state constructors
//! accept any value. Here the compiler checks each handler's result type.

pub(crate) mod input;
pub(crate) mod typed;

pub(crate) use self::input::{Input, Refusal, Verdict};
use self::typed::{Failed, Idle, Loading, ModelId, Node, Ready, Unloading};
use super::handlers;
use super::{Error, State};

/// The machine: its current typed state.
#[derive(Debug)]
pub(crate) struct Machine {
    node: Node,
}

impl Machine {
    pub(crate) fn new() -> Self {
        Machine {
            node: Node::initial(),
        }
    }

    pub(crate) fn node(&self) -> &Node {
        &self.node
    }

    /// Feed one input; `Ok` when it caused a transition.
    pub(crate) fn handle(&mut self, input: &Input) -> Result<(), Refusal> {
        // The handlers are total functions of plain values (panics are
        // denied by lints there); should one panic anyway, the machine holds
        // the initial state while the panic unwinds, never no state at all.
        replace_with::replace_with_and_return(&mut self.node, Node::initial, |node| {
            dispatch(node, input)
        })
    }
}

/// Hand `node` to its state's handler; open the step it returns.
fn dispatch(node: Node, input: &Input) -> (Result<(), Refusal>, Node) {
    fn open<S>(verdict: Verdict<S>, back: fn(S) -> Node) -> (Result<(), Refusal>, Node) {
        match verdict {
            Ok(step) => (Ok(()), step.into_node()),
            Err((state, refusal)) => (Err(refusal), back(state)),
        }
    }
    match node {
        Node::Idle(s) => open::<Idle>(handlers::idle(s, input), Node::Idle),
        Node::Loading(s) => open::<Loading>(handlers::loading(s, input), Node::Loading),
        Node::Ready(s) => open::<Ready>(handlers::ready(s, input), Node::Ready),
        Node::Unloading(s) => open::<Unloading>(handlers::unloading(s, input), Node::Unloading),
        Node::Failed(s) => open::<Failed>(handlers::failed(s, input), Node::Failed),
    }
}

impl Node {
    /// The plain state this node stands for.
    pub(crate) fn kind(&self) -> State {
        match self {
            Node::Idle(_) => State::Idle,
            Node::Loading(_) => State::Loading,
            Node::Ready(_) => State::Ready,
            Node::Unloading(_) => State::Unloading,
            Node::Failed(_) => State::Failed,
        }
    }

    /// The model this state is about, if any.
    pub(crate) fn model(&self) -> Option<&ModelId> {
        match self {
            Node::Loading(s) => Some(s.model()),
            Node::Ready(s) => Some(s.model()),
            Node::Unloading(s) => Some(s.model()),
            Node::Idle(_) | Node::Failed(_) => None,
        }
    }

    /// The error of a failed load.
    pub(crate) fn error(&self) -> Option<&Error> {
        match self {
            Node::Failed(s) => Some(s.error()),
            _ => None,
        }
    }

    /// The generation of the operation in flight (`Loading`, `Unloading`).
    pub(crate) fn op_generation(&self) -> Option<u64> {
        match self {
            Node::Loading(s) => Some(s.generation()),
            Node::Unloading(s) => Some(s.generation()),
            _ => None,
        }
    }
}
