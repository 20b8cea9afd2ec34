//! No hang, whatever the host does: a runtime shut down under a load, a
//! progress hook or an `assemble` that never returns. Each wait here has a
//! bound far above what the code needs; a hang fails instead of stalling.
mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::write_model;
use model_manager::{Error, ModelManager, Pipeline, State, TensorPipeline};

const DRAIN: Duration = Duration::from_millis(200);
/// What the bound allows beyond the drain timeout (the manager's grace is
/// 0.5 s twice; the rest is slack for a loaded machine).
const SLACK: Duration = Duration::from_secs(3);

/// A manager created inside a runtime that is then shut down: it never
/// adopted that runtime, so the load goes on and resolves.
#[test]
fn a_load_survives_the_runtime_it_was_started_from() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 8, 256 * 1024);
    let caller = tokio::runtime::Runtime::new().unwrap();
    let (manager, handle) = caller.block_on(async {
        let manager = ModelManager::builder()
            .chunk_size(64 * 1024)
            .build()
            .unwrap();
        let handle = manager.load(&*a).unwrap();
        (manager, handle)
    });
    caller.shutdown_timeout(Duration::from_secs(1));
    let other = tokio::runtime::Runtime::new().unwrap();
    let outcome = other
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), handle).await })
        .expect("the load resolves");
    assert_eq!(outcome.unwrap().state, State::Ready);
    assert_eq!(manager.current_state(), State::Ready);
    common::verify(&manager.acquire().unwrap(), 1);
    manager.shutdown_blocking().unwrap();
}

/// A runtime given by the user and shut down before the load's task ran:
/// the task is dropped unrun, and its handle still resolves, the state
/// returns to `Idle`.
#[test]
fn a_load_whose_task_never_runs_still_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 2, 1024);
    let given = tokio::runtime::Runtime::new().unwrap();
    let manager = ModelManager::builder()
        .runtime(given.handle().clone())
        .build()
        .unwrap();
    given.shutdown_timeout(Duration::from_secs(1));
    let mut events = manager.subscribe();
    match manager.load(&*a) {
        Ok(handle) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let outcome = rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), handle).await })
                .expect("the handle resolves");
            assert_eq!(outcome.unwrap_err(), Error::ShutDown);
            assert_eq!(manager.current_state(), State::Idle);
            let load = events.try_recv().unwrap();
            let back = events.try_recv().unwrap();
            assert_eq!((load.to, back.to), (State::Loading, State::Idle));
        }
        // Refusing the load outright is as good: nothing hangs.
        Err(e) => assert_eq!(manager.current_state(), State::Idle, "{e}"),
    }
}

/// A progress hook that blocks until the host releases it.
struct Blocker {
    release: Mutex<Option<mpsc::Receiver<()>>>,
    entered: Mutex<Option<mpsc::Sender<()>>>,
}

impl Blocker {
    fn new() -> (Arc<Self>, mpsc::Sender<()>, mpsc::Receiver<()>) {
        let (release_tx, release_rx) = mpsc::channel();
        let (entered_tx, entered_rx) = mpsc::channel();
        let blocker = Arc::new(Blocker {
            release: Mutex::new(Some(release_rx)),
            entered: Mutex::new(Some(entered_tx)),
        });
        (blocker, release_tx, entered_rx)
    }

    /// Block (once) until released, or 20 s at most so a failing test ends.
    fn block(&self) {
        let release = self.release.lock().unwrap().take();
        if let Some(release) = release {
            if let Some(entered) = self.entered.lock().unwrap().take() {
                let _ = entered.send(());
            }
            let _ = release.recv_timeout(Duration::from_secs(20));
        }
    }
}

fn manager_with_blocking_hook(blocker: &Arc<Blocker>) -> ModelManager {
    let blocker = blocker.clone();
    ModelManager::builder()
        .drain_timeout(DRAIN)
        .chunk_size(64 * 1024)
        .on_progress(move |_| blocker.block())
        .build()
        .unwrap()
}

#[test]
fn shutdown_blocking_is_bounded_while_a_hook_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 4, 256 * 1024);
    let (blocker, release, entered) = Blocker::new();
    let manager = manager_with_blocking_hook(&blocker);
    let handle = manager.load(&*a).unwrap();
    entered.recv_timeout(Duration::from_secs(10)).unwrap();
    let started = Instant::now();
    manager.shutdown_blocking().unwrap();
    let took = started.elapsed();
    assert!(took < DRAIN + SLACK, "shutdown_blocking took {took:?}");
    // What it left behind: the load, still inside the hook. Once released,
    // it frees what it read and publishes Idle.
    assert_eq!(manager.current_state(), State::Loading);
    release.send(()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let outcome = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), handle).await })
        .expect("the load ends once the hook returns");
    assert!(outcome.is_err());
    assert_eq!(manager.current_state(), State::Idle);
    assert_eq!(manager.resident_bytes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_while_a_hook_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 4, 256 * 1024);
    let (blocker, release, entered) = Blocker::new();
    let manager = manager_with_blocking_hook(&blocker);
    let handle = manager.load(&*a).unwrap();
    tokio::task::spawn_blocking(move || entered.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(30), manager.shutdown())
        .await
        .expect("shutdown returns");
    let took = started.elapsed();
    assert!(took < DRAIN + SLACK, "shutdown took {took:?}");
    release.send(()).unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("the load ends once the hook returns")
        .is_err());
    assert_eq!(manager.resident_bytes(), 0);
}

/// A pipeline whose `assemble` blocks until released.
struct Stuck;

static STUCK: Mutex<Option<mpsc::Receiver<()>>> = Mutex::new(None);

impl Pipeline for Stuck {
    type Options = ();

    fn assemble(
        _: TensorPipeline,
        _: &model_manager::Assembly<'_, ()>,
    ) -> model_manager::Result<Self> {
        let release = STUCK.lock().unwrap().take();
        if let Some(release) = release {
            let _ = release.recv_timeout(Duration::from_secs(20));
        }
        Ok(Stuck)
    }
}

#[test]
fn shutdown_is_bounded_while_assemble_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 2, 1024);
    let (release, rx) = mpsc::channel();
    *STUCK.lock().unwrap() = Some(rx);
    let manager = ModelManager::builder()
        .drain_timeout(DRAIN)
        .pipeline::<Stuck>()
        .build()
        .unwrap();
    let handle = manager.load(&*a).unwrap();
    // Wait until the read is done and assemble is running.
    let deadline = Instant::now() + Duration::from_secs(10);
    while STUCK.lock().unwrap().is_some() {
        assert!(Instant::now() < deadline, "assemble never ran");
        std::thread::sleep(Duration::from_millis(1));
    }
    let started = Instant::now();
    manager.shutdown_blocking().unwrap();
    assert!(started.elapsed() < DRAIN + SLACK);
    release.send(()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The load was stopped by shutdown: what assemble built is freed.
    let outcome = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), handle).await })
        .expect("resolves");
    assert_eq!(outcome.unwrap_err(), Error::Cancelled);
    assert_eq!(manager.current_state(), State::Idle);
    assert_eq!(manager.resident_bytes(), 0);
}
