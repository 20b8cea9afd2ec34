//! What the runtime machine is fed ([`Input`]) and what a handler answers
//! ([`Verdict`]): the vocabulary shared by the dispatcher (`super`) and the
//! handlers (`crate::state::handlers`), so that neither imports the other's
//! file.

// Through the parent module (the lifecycle's tests compile these files
// beside handlers of their own, where the parent is their crate root).
use super::super::{Command, Error, State};
use super::typed::{ModelId, Step};

/// An input to the runtime machine: a user command, or the result of a
/// background operation (tagged with the generation it belongs to).
#[derive(Debug)]
pub(crate) enum Input {
    /// A load was accepted.
    Load { model: ModelId, generation: u64 },
    /// The load of `generation` finished.
    Finish { generation: u64 },
    /// The load of `generation` stopped and freed what it had read.
    Cancel { generation: u64 },
    /// The load of `generation` failed and freed what it had read.
    Fail { generation: u64, error: Error },
    /// An unload was accepted.
    Unload { generation: u64 },
    /// The unload of `generation` drained and freed the memory.
    Drain { generation: u64 },
    /// A failure was acknowledged.
    Reset,
}

impl Input {
    pub(crate) fn command(&self) -> Command {
        match self {
            Input::Load { .. } => Command::Load,
            Input::Finish { .. } => Command::Finish,
            Input::Cancel { .. } => Command::Cancel,
            Input::Fail { .. } => Command::Fail,
            Input::Unload { .. } => Command::Unload,
            Input::Drain { .. } => Command::Drain,
            Input::Reset => Command::Reset,
        }
    }

    /// Whether this is the result of a background operation rather than a
    /// user command.
    pub(crate) fn is_result(&self) -> bool {
        matches!(
            self,
            Input::Finish { .. } | Input::Cancel { .. } | Input::Fail { .. } | Input::Drain { .. }
        )
    }
}

/// Why an input was not applied.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Refusal {
    /// A user command that is not an edge out of the current state.
    Illegal { from: State, event: Command },
    /// A background result for an operation that is no longer current.
    Stale,
}

/// What a handler answers: one step out of `S`, or `S` back with a refusal.
pub(crate) type Verdict<S> = Result<Step<S>, (S, Refusal)>;
