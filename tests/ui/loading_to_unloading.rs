// Loading --unload--> Unloading is not an edge: unloading a load cancels it.
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

    benign!(idle, ready, unloading, failed);

    pub(crate) fn loading(loading: Loading, input: &Input) -> Verdict<Loading> {
        Ok(loading.unload(1))
    }
}

drive!();
