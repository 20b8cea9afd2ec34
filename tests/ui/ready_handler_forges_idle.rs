// A Ready handler cannot make an Idle out of nothing: state values have private fields.
//
// The crate's real typed states and dispatcher (`#[path]`), beside handlers
// written as the crate's are (`benign!`); one handler tries an illegal move.
#![allow(dead_code, unused_imports, unused_variables, unreachable_code)]
use model_manager::{Command, Error, ModelSource, State};

#[path = "../../src/state/machine/mod.rs"]
mod machine;
#[macro_use]
#[path = "support/mod.rs"]
mod support;

mod handlers {
    use crate::machine::typed::{Failed, Idle, Loading, ModelId, Node, Ready, Step, Unloading};
    use crate::machine::{Input, Refusal, Verdict};

    benign!(idle, loading, unloading, failed);

    pub(crate) fn ready(ready: Ready, input: &Input) -> Verdict<Ready> {
        let idle = Idle { _sealed: () };
        Err((ready, Refusal::Stale))
    }
}

drive!();
