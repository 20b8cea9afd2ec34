//! The lifecycle as types: each state is a type, each transition consumes its
//! source state.
//!
//! No state value can be built outside this module: the fields are private
//! and there are no constructors, only transitions. The machine's initial
//! [`Idle`] is made by [`Node::initial`], visible to the dispatcher (the parent
//! module) alone, not to the handlers.
//!
//! A transition does not hand out its target state: it returns an opaque
//! [`Step<S>`] marked with its *source* state, which only the dispatcher can
//! open. So a handler for `Ready`, whose signature returns `Step<Ready>`, can
//! produce nothing but a transition out of `Ready` (`Ready::unload`); it
//! cannot chain two steps (`ready.unload(g).drained()` does not compile: a
//! `Step` has no transitions) and cannot produce `Idle` or `Loading` (no
//! value of those types is reachable from a `Ready`). The compile-fail cases
//! in `tests/ui/` include this file and the real dispatcher and show it.

use std::marker::PhantomData;
use std::sync::Arc;

// Through the parent modules (the lifecycle's tests compile these files
// beside handlers of their own, where the grandparent is their crate root).
use super::super::{Error, ModelSource};

/// Identity of a model: what was asked to be loaded.
pub type ModelId = Arc<ModelSource>;

/// Nothing is loaded, nothing is held.
#[derive(Debug)]
pub struct Idle {
    _sealed: (),
}

/// A model is being loaded (or is letting go of what it read, after a cancel).
#[derive(Debug)]
pub struct Loading {
    model: ModelId,
    generation: u64,
}

/// A model is loaded and can be leased.
#[derive(Debug)]
pub struct Ready {
    model: ModelId,
}

/// A model is being unloaded: waiting for its leases, then freeing memory.
#[derive(Debug)]
pub struct Unloading {
    model: ModelId,
    generation: u64,
}

/// The last load failed; nothing is held.
#[derive(Debug)]
pub struct Failed {
    error: Error,
}

/// One transition out of state `S`. Opaque: only the dispatcher can turn it
/// into the next [`Node`], so a handler can take exactly one step.
#[must_use = "a transition takes effect only when the handler returns it"]
pub struct Step<S> {
    next: Node,
    _from: PhantomData<fn(S) -> S>,
}

/// The current state of the machine: exactly one typed state value.
#[derive(Debug)]
pub enum Node {
    /// See [`Idle`].
    Idle(Idle),
    /// See [`Loading`].
    Loading(Loading),
    /// See [`Ready`].
    Ready(Ready),
    /// See [`Unloading`].
    Unloading(Unloading),
    /// See [`Failed`].
    Failed(Failed),
}

impl Node {
    /// The initial state of every lifecycle: for the dispatcher only.
    pub(super) fn initial() -> Node {
        Node::Idle(Idle { _sealed: () })
    }
}

impl<S> Step<S> {
    fn to(next: Node) -> Self {
        Step {
            next,
            _from: PhantomData,
        }
    }

    /// The state this step leads to: for the dispatcher only.
    pub(super) fn into_node(self) -> Node {
        self.next
    }
}

impl Idle {
    /// `Idle --load--> Loading`.
    pub fn load(self, model: ModelId, generation: u64) -> Step<Idle> {
        Step::to(Node::Loading(Loading { model, generation }))
    }
}

impl Loading {
    /// `Loading --finished--> Ready`.
    pub fn finish(self) -> Step<Loading> {
        Step::to(Node::Ready(Ready { model: self.model }))
    }

    /// `Loading --cancelled--> Idle`. There is no cancelling state: cancelling
    /// is an outcome of loading, taken once what was read is freed.
    pub fn cancel(self) -> Step<Loading> {
        Step::to(Node::Idle(Idle { _sealed: () }))
    }

    /// `Loading --error--> Failed`.
    pub fn fail(self, error: Error) -> Step<Loading> {
        Step::to(Node::Failed(Failed { error }))
    }

    /// The model being loaded.
    pub fn model(&self) -> &ModelId {
        &self.model
    }

    /// The generation at which this load was accepted.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl Ready {
    /// `Ready --unload--> Unloading`. Switching to another model goes through
    /// here: there is no edge from `Ready` to `Loading`.
    pub fn unload(self, generation: u64) -> Step<Ready> {
        Step::to(Node::Unloading(Unloading {
            model: self.model,
            generation,
        }))
    }

    /// The loaded model.
    pub fn model(&self) -> &ModelId {
        &self.model
    }
}

impl Unloading {
    /// `Unloading --drained--> Idle`: every lease is released and memory freed.
    pub fn drained(self) -> Step<Unloading> {
        Step::to(Node::Idle(Idle { _sealed: () }))
    }

    /// The model being unloaded.
    pub fn model(&self) -> &ModelId {
        &self.model
    }

    /// The generation at which the unload was accepted.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl Failed {
    /// `Failed --load--> Loading`: a retry, or another model.
    pub fn load(self, model: ModelId, generation: u64) -> Step<Failed> {
        Step::to(Node::Loading(Loading { model, generation }))
    }

    /// `Failed --reset--> Idle`.
    pub fn reset(self) -> Step<Failed> {
        Step::to(Node::Idle(Idle { _sealed: () }))
    }

    /// Why the load failed.
    pub fn error(&self) -> &Error {
        &self.error
    }
}
