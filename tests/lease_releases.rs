//! `ModelManager::lease_releases`: a wait for a lease release that needs no
//! polling (what a pool's admission waits on when every resident model is
//! leased).
mod common;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use common::write_model;
use model_manager::ModelManager;

/// Whether `f` is still pending after one poll.
fn pending<F: Future>(f: std::pin::Pin<&mut F>) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    matches!(f.poll(&mut cx), Poll::Pending)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_the_waiter_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "m", 1, 2, 1024);
    let manager = ModelManager::new().unwrap();
    manager.load(&*model).unwrap().await.unwrap();

    let mut releases = manager.lease_releases();
    let lease = manager.acquire().unwrap();
    let second = manager.acquire().unwrap();
    {
        // Taking leases is not a release.
        let wait = pin!(releases.released());
        let mut wait = wait;
        assert!(pending(wait.as_mut()));
        drop(second);
        // Woken by the release, within a bound (never polled in a loop).
        let released = tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("a release wakes the waiter");
        assert!(released);
    }
    // Each release counts once: nothing new since.
    {
        let wait = pin!(releases.released());
        let mut wait = wait;
        assert!(pending(wait.as_mut()));
    }
    {
        let waiter = tokio::spawn(async move { releases.released().await });
        tokio::task::yield_now().await;
        drop(lease);
        let released = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the release from another task wakes it")
            .unwrap();
        assert!(released);
    }
    manager.shutdown().await;
}

#[tokio::test]
async fn a_release_before_the_wait_is_not_missed() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "m", 1, 2, 1024);
    let manager = ModelManager::new().unwrap();
    manager.load(&*model).unwrap().await.unwrap();
    let lease = manager.acquire().unwrap();
    // Taken before the check, as a waiter must: the release in between is
    // seen.
    let mut releases = manager.lease_releases();
    drop(lease);
    let released = tokio::time::timeout(Duration::from_secs(10), releases.released())
        .await
        .expect("not missed");
    assert!(released);
    manager.shutdown().await;
}

#[tokio::test]
async fn with_the_manager_and_its_leases_gone_the_wait_ends() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "m", 1, 2, 1024);
    let manager = ModelManager::new().unwrap();
    manager.load(&*model).unwrap().await.unwrap();
    let mut releases = manager.lease_releases();
    manager.shutdown().await;
    drop(manager);
    // No lease can be released any more: the wait says so, within a bound.
    let released = tokio::time::timeout(Duration::from_secs(10), releases.released())
        .await
        .expect("the wait ends");
    assert!(!released);
}
