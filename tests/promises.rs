//! Smaller promises users rely on: the same model is never superseded by
//! itself, progress streams end, a shut-down manager says so, bounded waits
//! report what blocked them.
mod common;

use std::time::Duration;

use common::write_model;
use model_manager::{Error, ModelManager, Pipeline, State, TensorPipeline};

/// `load(A)` twice while A waits behind an unload: one load, both handles
/// resolve with it (the second request does not supersede the first).
#[tokio::test]
async fn the_same_model_waiting_its_turn_is_not_superseded() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 2, 1024);
    let b = write_model(dir.path(), "b", 2, 2, 1024);
    let manager = ModelManager::new().unwrap();
    manager.load(&*b).unwrap().await.unwrap();
    let lease = manager.acquire().unwrap();
    let first = manager.load(&*a).unwrap();
    assert_eq!(manager.current_state(), State::Unloading);
    let second = manager.load(&*a).unwrap();
    drop(lease);
    let (first, second) = tokio::join!(first, second);
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.generation, second.generation, "one load");
    assert_eq!(first.state, State::Ready);
    manager.shutdown().await;
}

/// The README's progress loop ends: the stream closes when its load ends,
/// after the final value.
#[tokio::test]
async fn progress_updates_end_with_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 4, 64 * 1024);
    let manager = ModelManager::builder()
        .chunk_size(16 * 1024)
        .build()
        .unwrap();
    let handle = manager.load(&*a).unwrap();
    let mut progress = handle.progress_updates();
    let watcher = tokio::spawn(async move {
        let mut last = 0;
        while progress.changed().await.is_ok() {
            last = progress.borrow_and_update().bytes_done;
        }
        (last, progress.borrow().clone())
    });
    handle.clone().await.unwrap();
    let (_, last) = tokio::time::timeout(Duration::from_secs(10), watcher)
        .await
        .expect("the progress loop ends")
        .unwrap();
    assert_eq!(last.bytes_done, last.bytes_total);
    assert_eq!(last.tensors_done, 4);
    // A stream taken after the end is closed at once, holding the final value.
    let mut late = handle.progress_updates();
    assert!(late.changed().await.is_err());
    assert_eq!(late.borrow().bytes_done, 4 * 64 * 1024 * 4);
    manager.shutdown().await;
}

#[tokio::test]
async fn after_shutdown_every_command_says_shut_down() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 2, 1024);
    let manager = ModelManager::new().unwrap();
    manager.load(&*a).unwrap().await.unwrap();
    manager.shutdown().await;
    assert_eq!(manager.load(&*a).unwrap_err(), Error::ShutDown);
    assert_eq!(manager.unload().await, Err(Error::ShutDown));
    assert_eq!(manager.cancel(), Err(Error::ShutDown));
    assert_eq!(manager.reset(), Err(Error::ShutDown));
    assert_eq!(manager.acquire().unwrap_err(), Error::ShutDown);
    assert_eq!(
        manager.unload_timeout(Duration::from_millis(10)).await,
        Err(Error::ShutDown)
    );
}

/// A pipeline whose memory takes a while to free.
struct SlowToFree(#[allow(dead_code)] TensorPipeline);

impl Pipeline for SlowToFree {
    type Options = ();

    fn assemble(
        loaded: TensorPipeline,
        _: &model_manager::Assembly<'_, ()>,
    ) -> model_manager::Result<Self> {
        Ok(SlowToFree(loaded))
    }
}

impl Drop for SlowToFree {
    fn drop(&mut self) {
        std::thread::sleep(Duration::from_millis(400));
    }
}

/// `unload_timeout` reports the leases that blocked it, and never "0 leases
/// outstanding": with none held, running out of time is a plain timeout.
#[tokio::test]
async fn unload_timeout_never_reports_zero_leases() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 2, 1024);
    let manager = ModelManager::builder()
        .pipeline::<SlowToFree>()
        .build()
        .unwrap();
    manager.load(&*a).unwrap().await.unwrap();
    let lease = manager.acquire().unwrap();
    assert_eq!(
        manager.unload_timeout(Duration::from_millis(20)).await,
        Err(Error::LeasesOutstanding { count: 1 })
    );
    drop(lease);
    // No lease now; the free takes 400 ms.
    manager.load(&*a).unwrap().await.unwrap();
    assert_eq!(
        manager.unload_timeout(Duration::from_millis(20)).await,
        Err(Error::Timeout)
    );
    assert_eq!(manager.settled().await, State::Idle);
    manager.shutdown().await;
}

#[test]
fn io_errors_keep_their_kind() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where a weights file should be: reading it fails with an
    // I/O error whose kind the caller can match on.
    let missing = dir.path().join("nothing-here.safetensors");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let manager = ModelManager::new().unwrap();
    let err = rt
        .block_on(async { manager.load(&*missing).unwrap().await })
        .unwrap_err();
    assert_eq!(err.io_kind(), Some(std::io::ErrorKind::NotFound));
    let io = Error::Io {
        path: missing.clone(),
        message: "denied".into(),
        kind: std::io::ErrorKind::PermissionDenied,
    };
    assert_eq!(io.io_kind(), Some(std::io::ErrorKind::PermissionDenied));
    manager.shutdown_blocking().unwrap();
}

/// Progress streams of loads that never ran (superseded while waiting their
/// turn) or were already done (the model was ready) end too.
#[tokio::test]
async fn progress_streams_end_however_the_load_ends() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 2, 1024);
    let b = write_model(dir.path(), "b", 2, 2, 1024);
    let c = write_model(dir.path(), "c", 3, 2, 1024);
    let manager = ModelManager::new().unwrap();
    manager.load(&*a).unwrap().await.unwrap();
    let ready_again = manager.load(&*a).unwrap();
    let lease = manager.acquire().unwrap();
    let superseded = manager.load(&*b).unwrap();
    let last = manager.load(&*c).unwrap();
    drop(lease);
    for handle in [ready_again, superseded, last] {
        let mut progress = handle.progress_updates();
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            while progress.changed().await.is_ok() {}
        })
        .await;
        assert!(
            ended.is_ok(),
            "the stream of {:?} never ended",
            handle.model()
        );
        let _ = handle.await;
    }
    manager.shutdown().await;
}
