//! Shared by the compile-fail cases: handlers written as the crate's are
//! (`benign!`), and the `main` that drives the real dispatcher. Each case
//! writes one handler of its own that tries an illegal move.

/// The named handlers, as the crate writes them.
macro_rules! benign {
    ($($state:ident),*) => { $(benign!(@ $state);)* };
    (@ idle) => {
        pub(crate) fn idle(idle: Idle, input: &Input) -> Verdict<Idle> {
            match input {
                Input::Load { model, generation } => Ok(idle.load(model.clone(), *generation)),
                _ => Err((idle, Refusal::Stale)),
            }
        }
    };
    (@ loading) => {
        pub(crate) fn loading(loading: Loading, input: &Input) -> Verdict<Loading> {
            match input {
                Input::Finish { .. } => Ok(loading.finish()),
                _ => Err((loading, Refusal::Stale)),
            }
        }
    };
    (@ ready) => {
        pub(crate) fn ready(ready: Ready, input: &Input) -> Verdict<Ready> {
            match input {
                Input::Unload { generation } => Ok(ready.unload(*generation)),
                _ => Err((ready, Refusal::Stale)),
            }
        }
    };
    (@ unloading) => {
        pub(crate) fn unloading(unloading: Unloading, input: &Input) -> Verdict<Unloading> {
            match input {
                Input::Drain { .. } => Ok(unloading.drained()),
                _ => Err((unloading, Refusal::Stale)),
            }
        }
    };
    (@ failed) => {
        pub(crate) fn failed(failed: Failed, input: &Input) -> Verdict<Failed> {
            match input {
                Input::Reset => Ok(failed.reset()),
                _ => Err((failed, Refusal::Stale)),
            }
        }
    };
}

/// Drive the real dispatcher once, so every handler is used.
macro_rules! drive {
    () => {
        fn main() {
            let mut machine = machine::Machine::new();
            let _ = machine.handle(&machine::Input::Reset);
        }
    };
}
