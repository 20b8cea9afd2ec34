mod common;

use std::time::Duration;

use common::{write_model, Gate};
use model_manager::{Error, ModelManager, State};

#[tokio::test]
async fn shutdown_cancels_a_running_load() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 8, 64 * 1024);
    let gate = Gate::new();
    let manager = ModelManager::builder()
        .chunk_size(64 * 1024)
        .on_progress(gate.hook())
        .build()
        .unwrap();
    gate.close_at(2);
    let handle = manager.load(&*a).unwrap();
    gate.paused().await;
    let opener = tokio::spawn({
        let gate = gate.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            gate.open();
        }
    });
    manager.shutdown().await;
    opener.await.unwrap();
    assert_eq!(handle.await.unwrap_err(), Error::Cancelled);
    assert_eq!(manager.current_state(), State::Idle);
    assert_eq!(manager.resident_bytes(), 0);
    assert_eq!(manager.load(&*a).unwrap_err(), Error::ShutDown);
    assert_eq!(manager.reset().unwrap_err(), Error::ShutDown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_shutdowns_all_wait_for_the_one() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 4, 10_000);
    let manager = std::sync::Arc::new(ModelManager::new().unwrap());
    manager.load(&*a).unwrap().await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let m = manager.clone();
            tokio::spawn(async move {
                m.shutdown().await;
                (m.current_state(), m.resident_bytes())
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), (State::Idle, 0));
    }
}

#[tokio::test]
async fn shutdown_drains_leases_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 4, 10_000);
    let manager = ModelManager::builder()
        .drain_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    manager.load(&*a).unwrap().await.unwrap();
    let lease = manager.acquire().unwrap();
    // Shutdown gives up on the lease after the bound, never hangs.
    tokio::time::timeout(Duration::from_secs(10), manager.shutdown())
        .await
        .expect("shutdown is bounded");
    assert_eq!(manager.current_state(), State::Idle);
    // The lease still works: its pipeline is freed when it is dropped. Until
    // then its bytes are no longer the manager's, and not hidden either.
    common::verify(&lease, 1);
    let idle = manager.snapshot();
    assert_eq!(idle.resident_bytes, 0);
    assert_eq!(idle.unreclaimed_bytes, 4 * 10_000 * 4);
    drop(lease);
    assert_eq!(manager.snapshot().unreclaimed_bytes, 0);
    assert_eq!(manager.resident_bytes(), 0);
}

#[tokio::test]
async fn shutdown_with_a_lease_released_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 4, 10_000);
    let manager = ModelManager::new().unwrap();
    manager.load(&*a).unwrap().await.unwrap();
    let lease = manager.acquire().unwrap();
    let releaser = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(lease);
    });
    manager.shutdown().await;
    releaser.await.unwrap();
    assert_eq!(manager.resident_bytes(), 0);
}

#[tokio::test]
async fn drop_inside_async_context_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 8, 64 * 1024);
    // Borrowing the test's runtime, in every state.
    for stop_after in 0..4 {
        let manager = ModelManager::builder()
            .chunk_size(64 * 1024)
            .build()
            .unwrap();
        if stop_after >= 1 {
            let h = manager.load(&*a).unwrap();
            if stop_after >= 2 {
                h.await.unwrap();
            }
        }
        let lease = (stop_after == 3).then(|| manager.acquire().unwrap());
        drop(manager);
        drop(lease);
    }
    // Owning its runtime (built outside any runtime), dropped inside one.
    let owned = std::thread::spawn(|| ModelManager::new().unwrap())
        .join()
        .unwrap();
    let _ = owned.load(&*a).unwrap();
    drop(owned);
}

#[test]
fn shutdown_blocking_refuses_inside_a_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let manager = ModelManager::new().unwrap();
    rt.block_on(async {
        assert!(matches!(
            manager.shutdown_blocking(),
            Err(Error::InvalidArgument(_))
        ));
    });
    manager.shutdown_blocking().unwrap();
}

#[tokio::test]
async fn unload_while_loading_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 8, 64 * 1024);
    let gate = Gate::new();
    let manager = ModelManager::builder()
        .chunk_size(64 * 1024)
        .on_progress(gate.hook())
        .build()
        .unwrap();
    gate.close_at(1);
    let h = manager.load(&*a).unwrap();
    gate.paused().await;
    // The unload takes effect when called; it completes once the load has
    // let go of what it read (the loader is parked in the gate until then).
    let unload = manager.unload();
    assert_eq!(manager.current_state(), State::Loading);
    gate.open();
    unload.await.unwrap();
    assert_eq!(manager.current_state(), State::Idle);
    assert_eq!(manager.resident_bytes(), 0);
    assert_eq!(h.await.unwrap_err(), Error::Cancelled);
    manager.shutdown().await;
}

#[test]
fn a_handle_resolves_when_its_manager_is_dropped_mid_load() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 8, 64 * 1024);
    let gate = Gate::new();
    // Built outside any runtime: the manager owns its runtime, and dropping
    // the manager shuts it down with the load's task still parked.
    let manager = ModelManager::builder()
        .chunk_size(64 * 1024)
        .read_threads(1)
        .drain_timeout(Duration::from_millis(100))
        .on_progress(gate.hook())
        .build()
        .unwrap();
    gate.close_at(1);
    let handle = manager.load(&*a).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(gate.paused());
    let opener = {
        let gate = gate.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            gate.open();
        })
    };
    drop(manager);
    opener.join().unwrap();
    let outcome =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), handle.wait()).await });
    let err = outcome.expect("the handle resolves").unwrap_err();
    assert!(
        matches!(err, Error::Cancelled | Error::ShutDown),
        "unexpected {err}"
    );
}
