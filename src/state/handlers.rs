//! The transition table, one handler per state.
//!
//! Each handler receives its typed state by value and answers one input: a
//! [`Step`] out of that state (the result type admits nothing else) or the
//! state back with a refusal. A user command that is not an edge is
//! [`Refusal::Illegal`]; a background result that does not belong to the
//! operation in flight is [`Refusal::Stale`].
//!
//! ```text
//! Idle    --load-->      Loading
//! Failed  --load-->      Loading        (retry, or another model)
//! Loading --finished-->  Ready
//! Loading --cancelled--> Idle
//! Loading --error-->     Failed
//! Ready   --unload-->    Unloading
//! Unloading --drained--> Idle           (all leases released, memory freed)
//! Failed  --reset-->     Idle
//! ```

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::machine::input::{Input, Refusal, Verdict};
use super::machine::typed::{Failed, Idle, Loading, Ready, Unloading};
use super::State;

pub(crate) fn idle(idle: Idle, input: &Input) -> Verdict<Idle> {
    match input {
        Input::Load { model, generation } => Ok(idle.load(model.clone(), *generation)),
        _ => Err((idle, refuse(State::Idle, input))),
    }
}

pub(crate) fn loading(loading: Loading, input: &Input) -> Verdict<Loading> {
    let current = loading.generation();
    match input {
        Input::Finish { generation } if *generation == current => Ok(loading.finish()),
        Input::Cancel { generation } if *generation == current => Ok(loading.cancel()),
        Input::Fail { generation, error } if *generation == current => {
            Ok(loading.fail(error.clone()))
        }
        _ => Err((loading, refuse(State::Loading, input))),
    }
}

pub(crate) fn ready(ready: Ready, input: &Input) -> Verdict<Ready> {
    match input {
        Input::Unload { generation } => Ok(ready.unload(*generation)),
        _ => Err((ready, refuse(State::Ready, input))),
    }
}

pub(crate) fn unloading(unloading: Unloading, input: &Input) -> Verdict<Unloading> {
    match input {
        Input::Drain { generation } if *generation == unloading.generation() => {
            Ok(unloading.drained())
        }
        _ => Err((unloading, refuse(State::Unloading, input))),
    }
}

pub(crate) fn failed(failed: Failed, input: &Input) -> Verdict<Failed> {
    match input {
        Input::Load { model, generation } => Ok(failed.load(model.clone(), *generation)),
        Input::Reset => Ok(failed.reset()),
        _ => Err((failed, refuse(State::Failed, input))),
    }
}

/// A background result that is not an edge here belongs to an operation that
/// is over: stale. A user command that is not an edge is illegal.
fn refuse(from: State, input: &Input) -> Refusal {
    if input.is_result() {
        Refusal::Stale
    } else {
        Refusal::Illegal {
            from,
            event: input.command(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::sync::Arc;

    use super::super::machine::{Input, Machine, Refusal};
    use super::super::{Command, State};
    use crate::error::Error;
    use crate::io::ModelSource;

    /// DESIGN.md's transition table, and nothing else.
    const TABLE: [(State, Command, State); 8] = [
        (State::Idle, Command::Load, State::Loading),
        (State::Failed, Command::Load, State::Loading),
        (State::Loading, Command::Finish, State::Ready),
        (State::Loading, Command::Cancel, State::Idle),
        (State::Loading, Command::Fail, State::Failed),
        (State::Ready, Command::Unload, State::Unloading),
        (State::Unloading, Command::Drain, State::Idle),
        (State::Failed, Command::Reset, State::Idle),
    ];

    fn model() -> Arc<ModelSource> {
        Arc::new(ModelSource::path("m"))
    }

    /// A machine in `state`, reached by legal inputs; the operation in
    /// flight (if any) has generation 1.
    fn machine_in(state: State) -> Machine {
        let mut m = Machine::new();
        let mut feed = |input| m.handle(&input).unwrap();
        match state {
            State::Idle => {}
            State::Loading => feed(Input::Load {
                model: model(),
                generation: 1,
            }),
            State::Ready => {
                feed(Input::Load {
                    model: model(),
                    generation: 1,
                });
                feed(Input::Finish { generation: 1 });
            }
            State::Unloading => {
                feed(Input::Load {
                    model: model(),
                    generation: 0,
                });
                feed(Input::Finish { generation: 0 });
                feed(Input::Unload { generation: 1 });
            }
            State::Failed => {
                feed(Input::Load {
                    model: model(),
                    generation: 1,
                });
                feed(Input::Fail {
                    generation: 1,
                    error: Error::Cancelled,
                });
            }
        }
        assert_eq!(m.node().kind(), state);
        m
    }

    /// An input of kind `command`, for the operation of `generation`.
    fn input(command: Command, generation: u64) -> Input {
        match command {
            Command::Load => Input::Load {
                model: model(),
                generation,
            },
            Command::Finish => Input::Finish { generation },
            Command::Cancel => Input::Cancel { generation },
            Command::Fail => Input::Fail {
                generation,
                error: Error::Timeout,
            },
            Command::Unload => Input::Unload { generation },
            Command::Drain => Input::Drain { generation },
            Command::Reset => Input::Reset,
        }
    }

    #[test]
    fn every_state_and_input_against_the_table() {
        let mut edges = 0;
        for from in State::ALL {
            for command in Command::ALL {
                let mut m = machine_in(from);
                let answer = m.handle(&input(command, 1));
                let to = m.node().kind();
                match TABLE.iter().find(|(f, c, _)| *f == from && *c == command) {
                    Some(&(_, _, target)) => {
                        edges += 1;
                        assert_eq!(answer, Ok(()), "{from} --{command}-->");
                        assert_eq!(to, target, "{from} --{command}-->");
                    }
                    None => {
                        let expected = match command {
                            Command::Load | Command::Unload | Command::Reset => Refusal::Illegal {
                                from,
                                event: command,
                            },
                            _ => Refusal::Stale,
                        };
                        assert_eq!(answer, Err(expected), "{from} --{command}-->");
                        assert_eq!(to, from, "a refused input leaves {from} as it is");
                    }
                }
            }
        }
        assert_eq!(edges, TABLE.len());
    }

    #[test]
    fn results_of_another_generation_are_stale() {
        for (from, command) in [
            (State::Loading, Command::Finish),
            (State::Loading, Command::Cancel),
            (State::Loading, Command::Fail),
            (State::Unloading, Command::Drain),
        ] {
            let mut m = machine_in(from);
            assert_eq!(m.handle(&input(command, 7)), Err(Refusal::Stale));
            assert_eq!(m.node().kind(), from);
        }
    }

    /// The table documented in this module is the table tested here.
    #[test]
    fn the_documented_table_is_the_tested_table() {
        let source = include_str!("handlers.rs");
        let mut documented: Vec<(String, String, String)> = source
            .lines()
            .filter_map(|l| l.strip_prefix("//! "))
            .filter_map(|l| {
                let (from, rest) = l.split_once(" --")?;
                let (event, rest) = rest.split_once("--> ")?;
                let to = rest.split_whitespace().next()?;
                Some((from.trim().into(), event.into(), to.into()))
            })
            .collect();
        documented.sort();
        let name = |c: Command| match c {
            Command::Finish => "finished".to_string(),
            Command::Cancel => "cancelled".to_string(),
            Command::Fail => "error".to_string(),
            Command::Drain => "drained".to_string(),
            other => other.name().to_string(),
        };
        let title = |s: State| {
            let n = s.name();
            n[..1].to_uppercase() + &n[1..]
        };
        let mut tested: Vec<(String, String, String)> = TABLE
            .iter()
            .map(|&(f, c, t)| (title(f), name(c), title(t)))
            .collect();
        tested.sort();
        assert_eq!(documented, tested);
    }
}
