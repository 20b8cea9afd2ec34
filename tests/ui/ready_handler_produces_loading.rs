// A Ready handler cannot reach Loading: opening a step into its target state is the dispatcher's alone.
//
// The real typed states and the real dispatcher of the runtime machine are
// compiled here as they are in the crate (`#[path]`), beside a handlers
// module written as the crate's is; one handler tries an illegal move.
#![allow(dead_code, unused_imports, unused_variables, unreachable_code)]
use model_manager::{Command, Error, ModelSource, State};

#[path = "../../src/state/machine/mod.rs"]
mod machine;

mod handlers {
    use crate::machine::typed::{Failed, Idle, Loading, ModelId, Node, Ready, Step, Unloading};
    use crate::machine::{Input, Refusal, Verdict};

    pub(crate) fn idle(idle: Idle, input: &Input) -> Verdict<Idle> {
        match input {
            Input::Load { model, generation } => Ok(idle.load(model.clone(), *generation)),
            _ => Err((idle, Refusal::Stale)),
        }
    }
    pub(crate) fn loading(loading: Loading, input: &Input) -> Verdict<Loading> {
        match input {
            Input::Finish { .. } => Ok(loading.finish()),
            _ => Err((loading, Refusal::Stale)),
        }
    }
    pub(crate) fn ready(ready: Ready, input: &Input) -> Verdict<Ready> {
        let node = ready.unload(1).into_node();
        loop {}
    }
    pub(crate) fn unloading(unloading: Unloading, input: &Input) -> Verdict<Unloading> {
        match input {
            Input::Drain { .. } => Ok(unloading.drained()),
            _ => Err((unloading, Refusal::Stale)),
        }
    }
    pub(crate) fn failed(failed: Failed, input: &Input) -> Verdict<Failed> {
        match input {
            Input::Reset => Ok(failed.reset()),
            _ => Err((failed, Refusal::Stale)),
        }
    }
}

fn main() {
    let mut machine = machine::Machine::new();
    let _ = machine.handle(&machine::Input::Reset);
}
