mod common;

use std::time::Duration;

use common::{write_model, Gate};
use model_manager::{Command, Error, ModelManager, State, StateEvent};

fn drain(sub: &mut model_manager::Subscription) -> Vec<StateEvent> {
    let mut out = Vec::new();
    while let Ok(e) = sub.try_recv() {
        out.push(e);
    }
    out
}

fn edges(events: &[StateEvent]) -> Vec<(State, State, Command)> {
    events.iter().map(|e| (e.from, e.to, e.command)).collect()
}

#[tokio::test]
async fn subscriber_sees_every_transition_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 4, 1000);
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}").unwrap();

    let manager = ModelManager::new().unwrap();
    let mut sub = manager.subscribe();

    manager.load(&*a).unwrap().await.unwrap(); // Idle -> Loading -> Ready
    manager.unload().await.unwrap(); // Ready -> Unloading -> Idle
    assert!(manager.load(&*bad).unwrap().await.is_err()); // Idle -> Loading -> Failed
    manager.load(&*a).unwrap().await.unwrap(); // Failed -> Loading -> Ready
    manager.unload().await.unwrap();
    assert!(manager.load(&*bad).unwrap().await.is_err());
    manager.reset().unwrap(); // Failed -> Idle

    let events = drain(&mut sub);
    use Command::*;
    use State::*;
    assert_eq!(
        edges(&events),
        vec![
            (Idle, Loading, Load),
            (Loading, Ready, Finish),
            (Ready, Unloading, Unload),
            (Unloading, Idle, Drain),
            (Idle, Loading, Load),
            (Loading, Failed, Fail),
            (Failed, Loading, Load),
            (Loading, Ready, Finish),
            (Ready, Unloading, Unload),
            (Unloading, Idle, Drain),
            (Idle, Loading, Load),
            (Loading, Failed, Fail),
            (Failed, Idle, Reset),
        ]
    );
    // Generations strictly increase, one per transition, and each event's
    // snapshot agrees with its edge.
    for pair in events.windows(2) {
        assert_eq!(pair[1].snapshot.generation, pair[0].snapshot.generation + 1);
        assert_eq!(pair[1].from, pair[0].to);
    }
    for e in &events {
        assert_eq!(e.snapshot.state, e.to);
    }
    let failed = events.iter().find(|e| e.to == Failed).unwrap();
    let err = failed.snapshot.error.as_ref().unwrap();
    assert!(err.to_string().contains("bad.safetensors"), "{err}");
    manager.shutdown().await;
}

#[tokio::test]
async fn illegal_commands_return_invalid_transition() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 2, 100);
    let manager = ModelManager::new().unwrap();

    // Idle: no unload, no cancel, no reset, no lease.
    let idle = |event| Error::InvalidTransition {
        from: State::Idle,
        event,
    };
    assert_eq!(manager.unload().await, Err(idle(Command::Unload)));
    assert_eq!(manager.cancel(), Err(idle(Command::Cancel)));
    assert_eq!(manager.reset(), Err(idle(Command::Reset)));
    assert_eq!(manager.acquire().unwrap_err(), Error::NotReady(State::Idle));
    assert_eq!(manager.current_state(), State::Idle);
    assert_eq!(manager.snapshot().generation, 0, "refusals change nothing");

    // Ready: no cancel, no reset.
    manager.load(&*a).unwrap().await.unwrap();
    let ready = |event| Error::InvalidTransition {
        from: State::Ready,
        event,
    };
    assert_eq!(manager.cancel(), Err(ready(Command::Cancel)));
    assert_eq!(manager.reset(), Err(ready(Command::Reset)));
    assert_eq!(manager.current_state(), State::Ready);
    manager.shutdown().await;
    assert_eq!(manager.load(&*a).unwrap_err(), Error::ShutDown);
}

#[tokio::test]
async fn cancel_mid_load_frees_partial_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 8, 64 * 1024); // 8 tensors x 256 KiB
    let gate = Gate::new();
    // One reader thread, so the chunk the loader pauses at is exact.
    let manager = ModelManager::builder()
        .chunk_size(64 * 1024)
        .read_threads(1)
        .on_progress(gate.hook())
        .build()
        .unwrap();
    for pause_at in [1, 5, 17, 31] {
        gate.close_at(pause_at);
        let handle = manager.load(&*a).unwrap();
        gate.paused().await;
        let progress = handle.progress();
        assert_eq!(progress.bytes_done, pause_at * 64 * 1024);
        assert!(manager.resident_bytes() > 0, "partial tensors are counted");
        let mut events = manager.subscribe();
        manager.cancel().unwrap();
        // Idle means nothing is held: the load stays `Loading` until the
        // loader (parked in the gate) has dropped what it read.
        assert_eq!(manager.current_state(), State::Loading);
        assert!(manager.resident_bytes() > 0);
        gate.open();
        assert_eq!(handle.await.unwrap_err(), Error::Cancelled);
        let idle = events.recv().await.unwrap();
        assert_eq!((idle.from, idle.to), (State::Loading, State::Idle));
        assert_eq!(idle.snapshot.resident_bytes, 0, "published once freed");
        assert_eq!(manager.resident_bytes(), 0, "cancelled at chunk {pause_at}");
        assert_eq!(manager.current_state(), State::Idle);
    }
    // The manager is still usable.
    manager.load(&*a).unwrap().await.unwrap();
    assert_eq!(manager.resident_bytes(), 8 * 256 * 1024);
    manager.shutdown().await;
    assert_eq!(manager.resident_bytes(), 0);
}

#[tokio::test]
async fn handle_cancel_only_affects_its_own_load() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 4, 64 * 1024);
    let b = write_model(dir.path(), "b", 2, 4, 64 * 1024);
    let gate = Gate::new();
    let manager = ModelManager::builder()
        .chunk_size(64 * 1024)
        .on_progress(gate.hook())
        .build()
        .unwrap();
    gate.close_at(1);
    let ha = manager.load(&*a).unwrap();
    gate.paused().await;
    let hb = manager.load(&*b).unwrap();
    ha.cancel(); // A is no longer current: no effect on B
    assert_eq!(manager.current_state(), State::Loading);
    gate.open();
    assert_eq!(ha.await.unwrap_err(), Error::Superseded);
    let snap = hb.await.unwrap();
    assert_eq!(
        snap.model.as_deref(),
        Some(&model_manager::ModelSource::path(&b))
    );
    manager.shutdown().await;
}

#[tokio::test]
async fn progress_is_monotonic_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 3, 5, 100_000);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let manager = ModelManager::builder()
        .chunk_size(32 * 1024)
        .on_progress(move |p| s2.lock().unwrap().push(p.clone()))
        .build()
        .unwrap();
    let snap = manager.load(&*a).unwrap().await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() > 10);
    for w in seen.windows(2) {
        assert!(w[1].bytes_done > w[0].bytes_done);
        assert!(w[1].tensors_done >= w[0].tensors_done);
    }
    assert_eq!(snap.progress.bytes_done, 5 * 400_000);
    assert_eq!(snap.progress.bytes_total, 5 * 400_000);
    assert_eq!(snap.progress.tensors_done, 5);
    assert_eq!(snap.progress.tensors_total, 5);
    assert!(snap
        .progress
        .current
        .as_deref()
        .unwrap()
        .ends_with("model.safetensors"));
    assert_eq!(manager.sample_size(), Some(35));
    manager.shutdown().await;
}

#[tokio::test]
async fn loading_the_same_model_does_not_reload() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 2, 1000);
    let manager = ModelManager::new().unwrap();
    let mut sub = manager.subscribe();
    let h1 = manager.load(&*a).unwrap();
    let h2 = manager.load(&*a).unwrap(); // joins the load in flight
    let (s1, s2) = (h1.await.unwrap(), h2.await.unwrap());
    assert_eq!(s1, s2);
    let s3 = manager.load(&*a).unwrap().await.unwrap(); // already ready
    assert_eq!(s3.generation, s1.generation);
    assert_eq!(drain(&mut sub).len(), 2, "one Loading, one Ready");
    manager.shutdown().await;
}

#[tokio::test]
async fn unload_waits_for_leases() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 4, 10_000);
    let manager = ModelManager::new().unwrap();
    manager.load(&*a).unwrap().await.unwrap();
    let lease = manager.acquire().unwrap();
    let lease2 = manager.acquire().unwrap();
    assert_eq!(manager.outstanding_leases(), 2);

    let err = manager
        .unload_timeout(Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(err, Error::LeasesOutstanding { count: 2 });
    assert_eq!(manager.current_state(), State::Unloading);
    assert_eq!(
        manager.acquire().unwrap_err(),
        Error::NotReady(State::Unloading)
    );
    assert_eq!(manager.sample_size(), None, "config lives in Ready");
    common::verify(&lease, 1); // still usable while unloading
    drop(lease);
    assert_eq!(manager.current_state(), State::Unloading);
    assert_eq!(manager.outstanding_leases(), 1);

    let unload = manager.unload(); // joins the unload in flight
    tokio::pin!(unload);
    assert!(
        tokio::time::timeout(Duration::from_millis(20), &mut unload)
            .await
            .is_err(),
        "still waiting for the second lease"
    );
    drop(lease2);
    unload.await.unwrap();
    assert_eq!(manager.current_state(), State::Idle);
    assert_eq!(manager.resident_bytes(), 0);
    manager.shutdown().await;
}

#[tokio::test]
async fn switching_models_goes_through_unloading() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 3, 5000);
    let b = write_model(dir.path(), "b", 2, 3, 7000);
    let manager = ModelManager::new().unwrap();
    manager.load(&*a).unwrap().await.unwrap();
    let lease = manager.acquire().unwrap();
    let mut sub = manager.subscribe();
    let hb = manager.load(&*b).unwrap();
    assert_eq!(manager.current_state(), State::Unloading);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!hb.is_finished(), "B waits for A's lease");
    common::verify(&lease, 1);
    drop(lease);
    hb.await.unwrap();
    let lease = manager.acquire().unwrap();
    common::verify(&lease, 2);
    assert_eq!(manager.resident_bytes(), 3 * 7000 * 4);
    use State::*;
    assert_eq!(
        drain(&mut sub)
            .iter()
            .map(|e| (e.from, e.to))
            .collect::<Vec<_>>(),
        vec![
            (Ready, Unloading),
            (Unloading, Idle),
            (Idle, Loading),
            (Loading, Ready)
        ],
    );
    drop(lease);
    manager.shutdown().await;
}
