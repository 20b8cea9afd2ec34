mod common;

use std::sync::Arc;

use common::{write_model, Gate};
use model_manager::{Error, ModelManager, ModelSource, State, StateEvent};

#[tokio::test]
async fn load_b_supersedes_a() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 4, 50_000);
    let b = write_model(dir.path(), "b", 2, 4, 50_000);
    let gate = Gate::new();
    let manager = ModelManager::builder()
        .chunk_size(16 * 1024)
        .on_progress(gate.hook())
        .build()
        .unwrap();
    gate.close_at(2);
    let ha = manager.load(&*a).unwrap();
    gate.paused().await;
    let hb = manager.load(&*b).unwrap();
    gate.open();
    assert_eq!(ha.await.unwrap_err(), Error::Superseded);
    let snap = hb.await.unwrap();
    assert_eq!(snap.state, State::Ready);
    assert_eq!(snap.model.as_deref(), Some(&ModelSource::path(&b)));
    common::verify(&manager.acquire().unwrap(), 2);
    assert_eq!(manager.resident_bytes(), 4 * 50_000 * 4);
    manager.shutdown().await;
}

#[tokio::test]
async fn load_a_then_b_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 4, 50_000);
    let b = write_model(dir.path(), "b", 2, 4, 50_000);
    let manager = ModelManager::new().unwrap();
    let ha = manager.load(&*a).unwrap();
    let hb = manager.load(&*b).unwrap();
    assert_eq!(ha.await.unwrap_err(), Error::Superseded);
    hb.await.unwrap();
    common::verify(&manager.acquire().unwrap(), 2);
    manager.shutdown().await;
}

/// Every `Ready` must be for the model of the `Loading` right before it, and
/// that load must not have been superseded by then.
fn assert_no_stale_ready(events: &[StateEvent]) {
    let mut loading: Option<Arc<ModelSource>> = None;
    for e in events {
        match e.to {
            State::Loading => loading = e.snapshot.model.clone(),
            State::Ready => {
                assert_eq!(e.from, State::Loading);
                assert_eq!(e.snapshot.model, loading, "stale Ready published");
            }
            _ => {}
        }
        if e.from == State::Loading && e.to != State::Ready {
            loading = None;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_rapid_loads_end_with_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let models: Vec<_> = (0..5)
        .map(|i| write_model(dir.path(), &format!("m{i}"), i, 3, 20_000))
        .collect();
    let manager = ModelManager::builder()
        .chunk_size(8 * 1024)
        .build()
        .unwrap();
    let mut sub = manager.subscribe();
    let mut handles = Vec::new();
    for i in 0..50 {
        handles.push(manager.load(&*models[i % 5]).unwrap());
        if i % 7 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let last = handles.pop().unwrap().await.unwrap();
    assert_eq!(
        last.model.as_deref(),
        Some(&ModelSource::path(&models[49 % 5]))
    );
    for h in handles {
        // Each earlier load either finished before being replaced, or was
        // superseded; none failed.
        match h.await {
            Ok(_) | Err(Error::Superseded) => {}
            Err(e) => panic!("unexpected outcome {e}"),
        }
    }
    assert_eq!(manager.current_state(), State::Ready);
    common::verify(&manager.acquire().unwrap(), 4);
    assert_eq!(manager.resident_bytes(), 3 * 20_000 * 4);
    let mut events = Vec::new();
    while let Ok(e) = sub.try_recv() {
        events.push(e);
    }
    assert_no_stale_ready(&events);
    assert_eq!(events.last().unwrap().to, State::Ready);
    manager.shutdown().await;
}
