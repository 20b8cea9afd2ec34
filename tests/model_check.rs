//! Property test: random command sequences against a reference model of the
//! lifecycle. Every load is held at its first chunk until a `Finish` step, so
//! the real manager is deterministic and must match the model step by step.
mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{write_failing_model, write_model, Gate, Strict};
use model_manager::{Error, Lease, ModelManager, ModelSource, State};
use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
enum Step {
    Load(usize),
    Cancel,
    Unload,
    Reset,
    Acquire,
    Release,
    Finish,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..3usize).prop_map(Step::Load),
        1 => Just(Step::Cancel),
        1 => Just(Step::Unload),
        1 => Just(Step::Reset),
        1 => Just(Step::Acquire),
        1 => Just(Step::Release),
        3 => Just(Step::Finish),
    ]
}

/// Models 0 and 1 load; model 2 is read, then refused by `Strict`.
const BAD: usize = 2;

#[derive(Debug, Clone, PartialEq)]
enum Ref {
    Idle,
    /// `stopping`: asked to stop, it frees what it read before `Idle`;
    /// `pending`: the load that starts then.
    Loading {
        m: usize,
        stopping: bool,
        pending: Option<usize>,
    },
    Ready(usize),
    Unloading(usize, Option<usize>),
    Failed,
}

struct Model {
    state: Ref,
    leases: usize,
}

fn loading(m: usize) -> Ref {
    Ref::Loading {
        m,
        stopping: false,
        pending: None,
    }
}

fn stopping(m: usize, pending: Option<usize>) -> Ref {
    Ref::Loading {
        m,
        stopping: true,
        pending,
    }
}

impl Model {
    fn kind(&self) -> State {
        match self.state {
            Ref::Idle => State::Idle,
            Ref::Loading { .. } => State::Loading,
            Ref::Ready(_) => State::Ready,
            Ref::Unloading(..) => State::Unloading,
            Ref::Failed => State::Failed,
        }
    }

    fn model(&self) -> Option<usize> {
        match self.state {
            Ref::Loading { m, .. } | Ref::Ready(m) | Ref::Unloading(m, _) => Some(m),
            Ref::Idle | Ref::Failed => None,
        }
    }

    /// What starts once the running operation let go of its memory.
    fn next(pending: Option<usize>) -> Ref {
        pending.map_or(Ref::Idle, loading)
    }

    /// Apply a step; `Err(())` where the manager must refuse it.
    fn apply(&mut self, step: Step) -> Result<(), ()> {
        use Ref::*;
        let next = match (&self.state, step) {
            (Idle | Failed, Step::Load(m)) => loading(m),
            (
                &Loading {
                    m: x,
                    stopping: false,
                    ..
                },
                Step::Load(m),
            ) if x == m => return Ok(()),
            (&Loading { pending, .. }, Step::Load(m)) if pending == Some(m) => return Ok(()),
            (&Loading { m: x, .. }, Step::Load(m)) => stopping(x, Some(m)),
            (Ready(x), Step::Load(m)) if *x == m => Ready(m),
            (Ready(_), Step::Load(m)) if self.leases == 0 => loading(m),
            (Ready(x), Step::Load(m)) => Unloading(*x, Some(m)),
            (Unloading(x, _), Step::Load(m)) => Unloading(*x, Some(m)),
            (&Loading { m: x, .. }, Step::Cancel) => stopping(x, None),
            (Unloading(x, Some(_)), Step::Cancel) => Unloading(*x, None),
            (_, Step::Cancel) => return Err(()),
            (Ready(_), Step::Unload) if self.leases == 0 => Idle,
            (Ready(x), Step::Unload) => Unloading(*x, None),
            (&Loading { m: x, .. }, Step::Unload) => stopping(x, None),
            (Unloading(x, _), Step::Unload) => Unloading(*x, None),
            (_, Step::Unload) => return Err(()),
            (Failed, Step::Reset) => Idle,
            (_, Step::Reset) => return Err(()),
            (Ready(_), Step::Acquire) => {
                self.leases += 1;
                return Ok(());
            }
            (_, Step::Acquire) => return Err(()),
            (_, Step::Release) => {
                if self.leases > 0 {
                    self.leases -= 1;
                    if self.leases == 0 {
                        if let Unloading(_, p) = self.state {
                            self.state = Self::next(p);
                        }
                    }
                }
                return Ok(());
            }
            (
                &Loading {
                    stopping: true,
                    pending,
                    ..
                },
                Step::Finish,
            ) => Self::next(pending),
            (&Loading { m, .. }, Step::Finish) if m == BAD => Failed,
            (&Loading { m, .. }, Step::Finish) => Ready(m),
            (_, Step::Finish) => return Ok(()),
        };
        self.state = next;
        Ok(())
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    paths: Vec<PathBuf>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let paths = vec![
        write_model(dir.path(), "m0", 0, 2, 2048),
        write_model(dir.path(), "m1", 1, 2, 3072),
        write_failing_model(dir.path(), "bad"),
    ];
    Fixture { _dir: dir, paths }
}

async fn run(steps: Vec<Step>) {
    let fx = fixture();
    let gate = Gate::new();
    // Every load is held at its first chunk until a `Finish` step.
    gate.hold_loads(1024);
    let manager = ModelManager::builder()
        .chunk_size(1024)
        .on_progress(gate.hook())
        .pipeline::<Strict>()
        .build()
        .unwrap();
    let mut model = Model {
        state: Ref::Idle,
        leases: 0,
    };
    let mut leases: Vec<Lease<Strict>> = Vec::new();

    for (i, &step) in steps.iter().enumerate() {
        let expected = model.apply(step);
        let got: Result<(), Error> = match step {
            Step::Load(m) => manager.load(&fx.paths[m]).map(drop),
            Step::Cancel => manager.cancel(),
            Step::Unload => {
                // Apply the command; do not wait for leases this test holds.
                tokio::select! {
                    biased;
                    r = manager.unload() => r,
                    _ = std::future::ready(()) => Ok(()),
                }
            }
            Step::Reset => manager.reset(),
            Step::Acquire => manager.acquire().map(|l| leases.push(l)),
            Step::Release => {
                leases.pop();
                Ok(())
            }
            Step::Finish => {
                if manager.current_state() == State::Loading {
                    // Let the running load through; it ends (ready, failed,
                    // or stopped and freed), then what waited starts.
                    let generation = manager.snapshot().generation;
                    gate.let_one_through();
                    common::eventually(|| manager.snapshot().generation != generation).await;
                }
                Ok(())
            }
        };
        assert_eq!(got.is_ok(), expected.is_ok(), "step {i} {step:?}: {got:?}");
        // An unload with no lease left drains on its own: wait for it.
        if model.leases == 0 {
            tokio::time::timeout(
                Duration::from_secs(10),
                manager_state_leaves_unloading(&manager),
            )
            .await
            .expect("the unload drains");
        }
        // A step may publish an intermediate state first (a stopped load's
        // `Idle`, then the load that waited its turn starts): wait, bounded,
        // for the state the model expects. A wrong state still fails, below,
        // once the bound has passed.
        let want = model.kind();
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while manager.current_state() != want {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        // A load that started is held at the gate before the next step, so
        // no load ends on its own.
        if manager.current_state() == State::Loading {
            gate.parked().await;
        }
        let snap = manager.snapshot();
        assert_eq!(snap.state, model.kind(), "step {i} {step:?} in {steps:?}");
        let want = model.model().map(|m| ModelSource::path(&fx.paths[m]));
        assert_eq!(snap.model.as_deref(), want.as_ref(), "step {i} {step:?}");
        assert_eq!(manager.outstanding_leases(), model.leases);
        assert_eq!(
            manager.sample_size().is_some(),
            snap.state == State::Ready,
            "config lives in Ready"
        );
    }

    // Let everything finish: release leases, open the gate, settle.
    leases.clear();
    gate.open();
    let end = tokio::time::timeout(Duration::from_secs(10), manager.settled())
        .await
        .expect("settles");
    let expected_bytes = match (end, manager.snapshot().model) {
        (State::Ready, Some(m)) if *m == ModelSource::path(&fx.paths[0]) => 2 * 2048 * 4,
        (State::Ready, Some(_)) => 2 * 3072 * 4,
        _ => 0,
    };
    if end == State::Ready {
        // Every earlier load let go of its memory before this one could read.
        assert_eq!(manager.resident_bytes(), expected_bytes);
    }
    manager.shutdown().await;
    assert_eq!(manager.resident_bytes(), 0, "shutdown unloads everything");
}

async fn manager_state_leaves_unloading(manager: &ModelManager<Strict>) {
    while manager.current_state() == State::Unloading {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn matches_the_reference_model(steps in prop::collection::vec(step(), 1..40)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run(steps));
    }
}
