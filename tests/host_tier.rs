//! The pool's host tier (`ModelPoolBuilder::host_budget`): a model evicted
//! from the device is parked in host memory and comes back from there,
//! without its files. A CUDA pool parks in page-locked memory; these tests
//! run the same decisions on the CPU with the tier simulated (parking
//! copies the tensors), so they run on every machine.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use model_manager::{
    Assembly, Error, ModelPool, ModelPoolBuilder, Pipeline, PoolEvent, PoolEventKind, State,
    TensorPipeline,
};
use tokio::sync::broadcast;

const MIB: u64 = 1 << 20;

/// 2 MiB models (2 tensors of 256 Ki f32), seeds 1, 2, 3, 4.
fn models(dir: &Path, names: &[&str]) -> Vec<PathBuf> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| common::write_model(dir, name, i as u32 + 1, 2, 1 << 18))
        .collect()
}

/// A pool with room for one 2 MiB model on the "device" and `host` bytes
/// of host tier.
fn pool(dir: &Path, names: &[&str], host: u64) -> ModelPool {
    let pool = tiered(host)
        .admission_timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    add_models(&pool, dir, names);
    pool
}

/// Room for one 2 MiB model on the "device", `host` bytes of host tier
/// (simulated on the CPU).
fn tiered(host: u64) -> ModelPoolBuilder {
    ModelPool::builder()
        .memory_budget(3 * MIB)
        .host_budget(host)
        .simulate_host_tier(true)
}

/// Write and add the models `names` (2 MiB each, seeds 1, 2, ...).
fn add_models<P: Pipeline>(pool: &ModelPool<P>, dir: &Path, names: &[&str]) {
    for (name, path) in names.iter().zip(models(dir, names)) {
        pool.add(name, path.as_path()).unwrap();
    }
}

/// The kinds of the events received so far for `id`, by name.
fn kinds(
    rx: &mut broadcast::Receiver<PoolEvent>,
    seen: &mut Vec<PoolEvent>,
    id: &str,
) -> Vec<&'static str> {
    while let Ok(event) = rx.try_recv() {
        seen.push(event);
    }
    seen.iter()
        .filter(|e| e.id == id)
        .map(|e| e.kind.name())
        .collect()
}

/// Whether `want` occurs in `got` in this order (not necessarily adjacent).
fn in_order(got: &[&str], want: &[&str]) -> bool {
    let mut it = got.iter();
    want.iter().all(|w| it.any(|g| g == w))
}

async fn use_model(pool: &ModelPool, id: &str, seed: u32) {
    let lease = pool.acquire(id).await.unwrap();
    common::verify(lease.pipeline(), seed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_model_is_parked_and_comes_back_without_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(dir.path(), &["a", "b"], 5 * MIB);
    let mut rx = pool.subscribe();
    let mut seen = Vec::new();
    use_model(&pool, "a", 1).await;
    // b's load evicts a, which is copied to host memory before its device
    // memory goes (b waits for that memory).
    use_model(&pool, "b", 2).await;
    let a = pool.status("a").unwrap();
    assert!(a.parked, "{a:?}");
    assert_eq!(a.parked_bytes, 2 * MIB);
    assert_eq!(
        (a.state, a.version, a.leases, a.charged_bytes),
        (State::Idle, None, 0, 0)
    );
    let snapshot = pool.snapshot();
    assert_eq!((snapshot.host_budget, snapshot.parked), (5 * MIB, 2 * MIB));
    assert!(in_order(
        &kinds(&mut rx, &mut seen, "a"),
        &["ready", "unloading", "parked", "freed"]
    ));

    // Its files are gone: it comes back from the parked copy, intact, and
    // keeps the copy (the tier has room).
    std::fs::remove_dir_all(dir.path().join("a")).unwrap();
    use_model(&pool, "a", 1).await;
    let a = pool.status("a").unwrap();
    assert!(!a.parked && a.state == State::Ready, "{a:?}");
    assert_eq!(a.parked_bytes, 2 * MIB, "its copy is kept");
    let a_events = kinds(&mut rx, &mut seen, "a");
    assert!(in_order(
        &a_events,
        &["parked", "freed", "queued", "loading", "ready"]
    ));
    assert!(!a_events.contains(&"unparked"));
    assert!(
        pool.status("b").unwrap().parked,
        "b made room for a, parked"
    );
    let counters = pool.snapshot().counters;
    assert_eq!((counters.parks, counters.resumes), (2, 1));
    let metrics = pool.metrics_text();
    for line in [
        "model_manager_pool_parks_total 2",
        "model_manager_pool_resumes_total 1",
        "model_manager_pool_parked_bytes 4194304",
        "model_manager_pool_parked_models 1",
        "model_manager_pool_host_budget_bytes 5242880",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }

    // Evicted again, a is parked at once from its kept copy (its files are
    // gone; b comes back from its own copy).
    use_model(&pool, "b", 2).await;
    let a = pool.status("a").unwrap();
    assert!(a.parked && a.parked_bytes == 2 * MIB, "{a:?}");
    assert_eq!(pool.snapshot().counters.parks, 3);
    use_model(&pool, "a", 1).await;

    pool.unload("a").await.unwrap();
    pool.unload("b").await.unwrap();
    let snapshot = pool.snapshot();
    assert_eq!((snapshot.charged, snapshot.parked), (0, 0));
    assert!(in_order(
        &kinds(&mut rx, &mut seen, "b"),
        &["parked", "unparked"]
    ));
    assert!(in_order(
        &kinds(&mut rx, &mut seen, "a"),
        &["ready", "unparked"]
    ));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_drops_its_least_recently_used_copy() {
    let dir = tempfile::tempdir().unwrap();
    // Room for one parked model.
    let pool = pool(dir.path(), &["a", "b", "c"], 3 * MIB);
    let mut rx = pool.subscribe();
    let mut seen = Vec::new();
    use_model(&pool, "a", 1).await;
    use_model(&pool, "b", 2).await;
    use_model(&pool, "c", 3).await;
    assert!(!pool.status("a").unwrap().parked, "dropped for b's copy");
    assert!(pool.status("b").unwrap().parked);
    assert!(in_order(
        &kinds(&mut rx, &mut seen, "a"),
        &["parked", "unparked"]
    ));
    // The event says how much host memory went (it said 0 when the tier
    // had already let go of the copy's charge).
    assert!(
        seen.iter().any(|e| e.id == "a"
            && matches!(e.kind, PoolEventKind::Unparked { bytes } if bytes == 2 * MIB)),
        "{seen:?}"
    );
    // a comes back from its files.
    use_model(&pool, "a", 1).await;
    assert_eq!(pool.snapshot().counters.resumes, 0);
    assert!(pool.snapshot().parked <= 3 * MIB);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_larger_than_the_tier_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(dir.path(), &["a", "b"], MIB);
    let mut rx = pool.subscribe();
    let mut seen = Vec::new();
    use_model(&pool, "a", 1).await;
    use_model(&pool, "b", 2).await;
    assert!(!pool.status("a").unwrap().parked);
    assert!(!kinds(&mut rx, &mut seen, "a").contains(&"parked"));
    assert_eq!(pool.snapshot().counters.parks, 0);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unload_reload_and_remove_drop_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(dir.path(), &["a", "b", "c"], 5 * MIB);
    let mut rx = pool.subscribe();
    let mut seen = Vec::new();
    use_model(&pool, "a", 1).await;
    use_model(&pool, "b", 2).await;
    assert!(pool.status("a").unwrap().parked);
    pool.unload("a").await.unwrap();
    assert!(!pool.status("a").unwrap().parked);
    assert_eq!(pool.snapshot().parked, 0);
    assert!(in_order(
        &kinds(&mut rx, &mut seen, "a"),
        &["parked", "unparked"]
    ));

    // A reload reads its source, and drops the older parked copy.
    use_model(&pool, "c", 3).await;
    assert!(pool.status("b").unwrap().parked);
    let b_path = dir.path().join("b");
    pool.reload("b", b_path.as_path()).await.unwrap();
    let b = pool.status("b").unwrap();
    assert!(!b.parked && b.state == State::Ready, "{b:?}");
    assert_eq!(pool.snapshot().counters.resumes, 0, "a reload is no resume");

    // Removed: its copy goes with it.
    assert!(pool.status("c").unwrap().parked);
    pool.remove("c").await.unwrap();
    assert_eq!(pool.snapshot().parked, 0);
    pool.shutdown().await;
    let snapshot = pool.snapshot();
    assert_eq!((snapshot.charged, snapshot.parked), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_frees_the_parked_copies() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(dir.path(), &["a", "b"], 5 * MIB);
    use_model(&pool, "a", 1).await;
    use_model(&pool, "b", 2).await;
    assert_eq!(pool.snapshot().parked, 2 * MIB);
    pool.shutdown().await;
    assert_eq!(pool.snapshot().parked, 0);
    assert!(matches!(pool.acquire("a").await, Err(Error::ShutDown)));
}

/// A pipeline that keeps no tensors of its own (`loaded()` is `None`).
struct Opaque;

static ASSEMBLED: AtomicBool = AtomicBool::new(false);

impl Pipeline for Opaque {
    type Options = ();

    fn assemble(_: TensorPipeline, _: &Assembly<'_, ()>) -> model_manager::Result<Self> {
        ASSEMBLED.store(true, Ordering::SeqCst);
        Ok(Opaque)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_without_its_tensors_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let pool = tiered(5 * MIB).pipeline::<Opaque>().build().unwrap();
    add_models(&pool, dir.path(), &["a", "b"]);
    drop(pool.acquire("a").await.unwrap());
    drop(pool.acquire("b").await.unwrap());
    assert!(ASSEMBLED.load(Ordering::SeqCst));
    assert!(!pool.status("a").unwrap().parked);
    assert_eq!(pool.snapshot().counters.parks, 0);
    pool.shutdown().await;
}

#[test]
fn a_host_budget_on_the_cpu_is_refused() {
    let refused = ModelPool::builder().host_budget(MIB).build();
    assert!(
        matches!(refused, Err(Error::InvalidArgument(_))),
        "{refused:?}"
    );
    // No tier: fine.
    assert!(ModelPool::builder().host_budget(0).build().is_ok());
}

/// Several callers acquiring four models (one with working memory) and
/// one reloading them, through a device that holds two and a host tier
/// that holds two (not all four: it drops copies too): both budgets hold at every instant
/// sampled, a parked model is never leased nor serving, every lease sees
/// its model's data, and everything unloaded leaves no charge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_acquires_keep_both_budgets() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["a", "b", "c", "d"];
    let pool = Arc::new(
        ModelPool::builder()
            .memory_budget(5 * MIB)
            .host_budget(5 * MIB)
            .simulate_host_tier(true)
            .admission_timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    );
    for (name, path) in names.iter().zip(models(dir.path(), &names)) {
        pool.add(name, path.as_path()).unwrap();
    }
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (pool, done) = (pool.clone(), done.clone());
        tokio::spawn(async move {
            let mut samples = 0u32;
            while !done.load(Ordering::SeqCst) {
                let s = pool.snapshot();
                assert!(s.charged <= s.budget, "{s:?}");
                assert!(s.parked <= s.host_budget, "{s:?}");
                for m in &s.models {
                    if m.parked {
                        assert!(m.leases == 0 && m.version.is_none(), "{m:?}");
                    }
                }
                samples += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            samples
        })
    };
    // Three plain acquirers, one that reserves working memory with its
    // lease (evicting, so parking, as a load does), one that reloads.
    let mut workers: Vec<_> = (0..4u32)
        .map(|w| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for i in 0..25u32 {
                    let k = ((w * 7 + i * 3) % 4) as usize;
                    let lease = match w {
                        3 => pool.acquire_with(names[k], MIB / 2).await,
                        _ => pool.acquire(names[k]).await,
                    };
                    let lease = lease.unwrap();
                    common::verify(lease.pipeline(), k as u32 + 1);
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    workers.push({
        let (pool, dir) = (pool.clone(), dir.path().to_path_buf());
        tokio::spawn(async move {
            for i in 0..10usize {
                let name = names[i % 4];
                // A reload may find no room beside the serving version
                // (KeepServing refuses): that is an answer, not a failure.
                match pool.reload(name, dir.join(name).as_path()).await {
                    Ok(_)
                    | Err(Error::InsufficientMemory { .. })
                    | Err(Error::MemoryBusy { .. }) => {}
                    Err(e) => panic!("reload of {name}: {e}"),
                }
            }
        })
    });
    for w in workers {
        w.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    assert!(sampler.await.unwrap() > 0);
    let counters = pool.snapshot().counters;
    assert!(counters.parks > 0 && counters.resumes > 0, "{counters:?}");
    for name in names {
        pool.unload(name).await.unwrap();
    }
    let s = pool.snapshot();
    assert_eq!((s.charged, s.parked), (0, 0), "{s:?}");
    pool.shutdown().await;
}

#[test]
fn event_names_include_the_tier() {
    assert!(PoolEventKind::NAMES.contains(&"parked"));
    assert!(PoolEventKind::NAMES.contains(&"unparked"));
}

/// A pipeline that keeps its tensors and fails to assemble while `FAIL`
/// is set.
struct Fragile(TensorPipeline);

static FAIL: AtomicBool = AtomicBool::new(false);

impl Pipeline for Fragile {
    type Options = ();

    fn assemble(loaded: TensorPipeline, _: &Assembly<'_, ()>) -> model_manager::Result<Self> {
        if FAIL.load(Ordering::SeqCst) {
            return Err(Error::Assemble("refused".into()));
        }
        Ok(Fragile(loaded))
    }

    fn loaded(&self) -> Option<&TensorPipeline> {
        Some(&self.0)
    }
}

/// A copy that fails to come back is dropped: the next acquire reads the
/// model's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_fails_to_come_back_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let pool = tiered(5 * MIB)
        // The default cooldown: a failed copy is no reason to refuse the
        // next acquire (the copy failed, not the model).
        .retry_cooldown(Duration::from_secs(60))
        .pipeline::<Fragile>()
        .build()
        .unwrap();
    add_models(&pool, dir.path(), &["a", "b"]);
    drop(pool.acquire("a").await.unwrap());
    drop(pool.acquire("b").await.unwrap());
    assert!(pool.status("a").unwrap().parked);
    FAIL.store(true, Ordering::SeqCst);
    let failed = pool.acquire("a").await;
    FAIL.store(false, Ordering::SeqCst);
    assert!(
        matches!(failed, Err(Error::Assemble(_))),
        "{:?}",
        failed.err()
    );
    let a = pool.status("a").unwrap();
    assert!(!a.parked && a.parked_bytes == 0, "{a:?}");
    let lease = pool.acquire("a").await.unwrap();
    common::verify(&lease.pipeline().0, 1);
    drop(lease);
    assert_eq!(pool.snapshot().counters.resumes, 0);
    pool.shutdown().await;
}

/// A model back from the tier with its copy kept, then idle past its
/// keep-alive: its device memory goes, its copy stays, it is parked (and
/// says so), and comes back from the copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_model_with_its_copy_is_parked() {
    let dir = tempfile::tempdir().unwrap();
    let pool = tiered(5 * MIB)
        .keep_alive(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    add_models(&pool, dir.path(), &["a", "b"]);
    let mut rx = pool.subscribe();
    let mut seen = Vec::new();
    use_model(&pool, "a", 1).await;
    use_model(&pool, "b", 2).await;
    use_model(&pool, "a", 1).await; // back from its copy, which it keeps
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.status("a").unwrap().version.is_some() {
        assert!(std::time::Instant::now() < deadline, "a never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = pool.status("a").unwrap();
    assert!(a.parked && a.parked_bytes == 2 * MIB, "{a:?}");
    let events = kinds(&mut rx, &mut seen, "a");
    let last_ready = events.iter().rposition(|k| *k == "ready").unwrap();
    assert!(
        in_order(&events[last_ready..], &["ready", "unloading", "parked"]),
        "{events:?}"
    );
    use_model(&pool, "a", 1).await;
    assert_eq!(pool.snapshot().counters.resumes, 2);
    pool.shutdown().await;
}

/// A pipeline whose `loaded()` panics.
struct Panicky(TensorPipeline);

impl Pipeline for Panicky {
    type Options = ();

    fn assemble(loaded: TensorPipeline, _: &Assembly<'_, ()>) -> model_manager::Result<Self> {
        Ok(Panicky(loaded))
    }

    fn loaded(&self) -> Option<&TensorPipeline> {
        panic!("loaded() is the application's code, and it panicked");
    }
}

/// The application's `loaded()` panics when its model is evicted: the
/// model is freed instead of parked, and the pool goes on (the job that
/// evicted it unwound, leaving the model's job and the queue stuck).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_loaded_frees_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let pool = tiered(5 * MIB)
        .admission_timeout(Duration::from_secs(10))
        .pipeline::<Panicky>()
        .build()
        .unwrap();
    add_models(&pool, dir.path(), &["a", "b"]);
    for id in ["a", "b", "a", "b"] {
        let lease = tokio::time::timeout(Duration::from_secs(20), pool.acquire(id))
            .await
            .expect("the pool went on")
            .unwrap();
        common::verify(&lease.pipeline().0, if id == "a" { 1 } else { 2 });
    }
    let counters = pool.snapshot().counters;
    assert_eq!((counters.parks, counters.evictions), (0, 3), "{counters:?}");
    assert_eq!(pool.snapshot().parked, 0);
    pool.shutdown().await;
}
