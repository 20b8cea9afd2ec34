//! Races and edge cases of the pool found in review, each a reproducer that
//! failed before its fix (issue "Several models under one memory budget").
mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::write_model;
use model_manager::{Error, ModelPool};

const MODEL: u64 = 4 * 16_384 * 4;

fn models(n: u32) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let paths = (0..n)
        .map(|i| write_model(dir.path(), &format!("m{i}"), i, 4, 16_384))
        .collect();
    (dir, paths)
}

fn pool(fit: u64) -> model_manager::ModelPoolBuilder {
    ModelPool::builder()
        .memory_budget(fit * MODEL + MODEL / 2)
        .runtime(tokio::runtime::Handle::current())
        .drain_timeout(Duration::from_secs(2))
}

/// remove() refuses every new command for the model at once: an acquire
/// racing it gets UnknownModel (it used to load a version remove() then
/// dropped with its charge, leaking it for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_racing_an_acquire_leaves_nothing_charged() {
    let (_d, p) = models(2);
    let pool = Arc::new(pool(2).build().unwrap());
    pool.add("m0", p[0].as_path()).unwrap();
    pool.add("m1", p[1].as_path()).unwrap();
    let l0 = pool.acquire("m0").await.unwrap();
    let remover = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.remove("m0").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!remover.is_finished(), "remove waits for the lease");
    assert_eq!(
        pool.acquire("m0").await.unwrap_err(),
        Error::UnknownModel("m0".into())
    );
    drop(l0);
    remover.await.unwrap().unwrap();
    assert!(pool.snapshot().model("m0").is_none());
    assert_eq!(pool.charged(), 0);
    // Added again, it loads as a new model, versions counting on.
    pool.add("m0", p[0].as_path()).unwrap();
    assert_eq!(pool.acquire("m0").await.unwrap().version(), 2);
    pool.shutdown().await;
}

/// remove() then add() of the same id restarts its version numbers: the
/// old, cancelled job's cleanup (by key) removes the new job's queue entry
/// and clears the new entry's job.
#[tokio::test(flavor = "current_thread")]
async fn re_added_id_collides_with_the_cancelled_job() {
    let (_d, p) = models(2);
    let pool = Arc::new(
        pool(1)
            .admission_timeout(Duration::from_secs(4))
            .build()
            .unwrap(),
    );
    pool.add("m0", p[0].as_path()).unwrap();
    pool.add("m1", p[1].as_path()).unwrap();
    let l1 = pool.acquire("m1").await.unwrap();
    let old = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire("m0").await.map(|l| l.version()) })
    };
    tokio::time::sleep(Duration::from_millis(300)).await; // m0 v1 waits for memory
    pool.remove("m0").await.unwrap();
    pool.add("m0", p[0].as_path()).unwrap();
    // Takes effect when called: the new job is queued before the old,
    // cancelled one's task has cleaned up.
    let fresh = tokio::spawn(pool.reload("m0", p[0].as_path()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    eprintln!(
        "queue after the old job's cleanup: {:?}",
        pool.snapshot().queued
    );
    drop(l1); // room now: m1 may be evicted
    let r = fresh.await.unwrap();
    eprintln!("fresh: {r:?}; old acquirer: {:?}", old.await.unwrap());
    assert!(r.is_ok(), "{r:?}");
    pool.shutdown().await;
}

/// A reload refused with QueueFull cancels nothing (it used to cancel the
/// model's load in flight before finding the queue full); a reload that
/// replaces a queued load of its own model does not grow the queue, and the
/// replaced load's waiter joins it.
#[tokio::test(flavor = "current_thread")]
async fn a_refused_reload_cancels_nothing() {
    let (_d, p) = models(3);
    let pool = Arc::new(pool(1).max_queue(1).build().unwrap());
    for (i, path) in p.iter().enumerate() {
        pool.add(&format!("m{i}"), path.as_path()).unwrap();
    }
    let l1 = pool.acquire("m1").await.unwrap();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire("m0").await.map(|l| l.version()) })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pool.snapshot().queued, [("m0".to_string(), 1)]);
    let r = pool.reload("m2", p[2].as_path()).await;
    assert!(matches!(r, Err(Error::QueueFull { limit: 1 })), "{r:?}");
    assert_eq!(
        pool.snapshot().queued,
        [("m0".to_string(), 1)],
        "nothing cancelled"
    );
    let reload = tokio::spawn(pool.reload("m0", p[0].as_path()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        pool.snapshot().queued,
        [("m0".to_string(), 2)],
        "replaced, not added"
    );
    drop(l1);
    assert_eq!(reload.await.unwrap().unwrap(), 2);
    assert_eq!(
        waiter.await.unwrap().unwrap(),
        2,
        "the replaced load's waiter joined"
    );
    pool.shutdown().await;
}

/// drain_timeout(Duration::MAX): shutdown computes drain + 2 s and panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_a_drain_timeout_of_never() {
    let (_d, p) = models(1);
    let pool = pool(1).drain_timeout(Duration::MAX).build().unwrap();
    pool.add("m0", p[0].as_path()).unwrap();
    drop(pool.acquire("m0").await.unwrap());
    pool.shutdown().await;
}

/// A pipeline whose assemble takes a while (loads long enough to overlap).
struct Slow(#[allow(dead_code)] model_manager::TensorPipeline);

impl model_manager::Pipeline for Slow {
    type Options = ();
    fn assemble(
        loaded: model_manager::TensorPipeline,
        _: &model_manager::Assembly<'_, ()>,
    ) -> model_manager::Result<Self> {
        std::thread::sleep(Duration::from_millis(1500));
        Ok(Slow(loaded))
    }
}

/// concurrent_loads(2): a load that waited behind the head of the queue is
/// not woken when the head is admitted (no bump on admission), so it waits
/// for the head's whole load although a slot and memory are free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_of_two_concurrent_loads_waits_for_the_first() {
    let (_d, p) = models(4);
    let pool = Arc::new(
        pool(2)
            .concurrent_loads(2)
            .pipeline::<Slow>()
            .build()
            .unwrap(),
    );
    for (i, path) in p.iter().enumerate() {
        pool.add(&format!("m{i}"), path.as_path()).unwrap();
    }
    let l2 = pool.acquire("m2").await.unwrap();
    let l3 = pool.acquire("m3").await.unwrap();
    let mut events = pool.subscribe();
    let t0 = std::time::Instant::now();
    let a0 = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire("m0").await.map(|_| t0.elapsed()) })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let a1 = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire("m1").await.map(|_| t0.elapsed()) })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(l2);
    drop(l3);
    let (r0, r1) = (a0.await.unwrap().unwrap(), a1.await.unwrap().unwrap());
    let mut order = Vec::new();
    while let Ok(e) = events.try_recv() {
        order.push(format!("{} {:?}", e.id, e.kind));
    }
    eprintln!("m0 after {r0:?}, m1 after {r1:?}\n{order:#?}");
    let ready_m0 = order
        .iter()
        .position(|e| e.starts_with("m0 Ready"))
        .unwrap();
    let loading_m1 = order
        .iter()
        .position(|e| e.starts_with("m1 Loading"))
        .unwrap();
    assert!(
        loading_m1 < ready_m0,
        "m1 did not start loading until m0 was ready"
    );
    pool.shutdown().await;
}

/// Budget for one, two acquirers of two models: a freshly loaded model with
/// a waiter is Evictable until the waiter leases it, so the other model's
/// queued load evicts it first; the acquirer loads it again (loads wasted,
/// and in the worst case a ping-pong with no bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_is_evicted_before_its_waiter_leases_it() {
    let (_d, p) = models(2);
    let pool = Arc::new(pool(1).build().unwrap());
    pool.add("m0", p[0].as_path()).unwrap();
    pool.add("m1", p[1].as_path()).unwrap();
    let mut tasks = Vec::new();
    for id in ["m0", "m1"] {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                drop(pool.acquire(id).await.unwrap());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let c = pool.snapshot().counters;
    eprintln!("{c:?}");
    assert!(
        c.loads <= c.misses,
        "{} loads for {} acquires that waited",
        c.loads,
        c.misses
    );
    pool.shutdown().await;
}

/// keep_alive(Some(0)) ("unload as soon as idle"): a freshly loaded model
/// starts its clock at Ready, before its waiter leases it; the keep-alive
/// task may expire it first, and the acquire loads it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keep_alive_zero_expires_a_model_before_its_waiter_leases_it() {
    let (_d, p) = models(1);
    let pool = Arc::new(pool(1).keep_alive(Some(Duration::ZERO)).build().unwrap());
    pool.add("m0", p[0].as_path()).unwrap();
    let mut worst = 0;
    for _ in 0..30 {
        let before = pool.snapshot().counters.loads;
        let l = pool
            .acquire_timeout("m0", Duration::from_secs(10))
            .await
            .unwrap();
        drop(l);
        let loads = pool.snapshot().counters.loads - before;
        worst = worst.max(loads);
        // let it expire and free
        for _ in 0..200 {
            if pool.charged() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let c = pool.snapshot().counters;
    eprintln!("{c:?}; worst acquire took {worst} loads");
    assert_eq!(worst, 1, "one acquire took {worst} loads");
    pool.shutdown().await;
}

/// UnloadFirst takes the old version out of service before checking that
/// the new one could fit at all: a new version larger than the budget is
/// refused, and the model is left unloaded for nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unload_first_unloads_for_a_reload_that_can_never_fit() {
    let (d, p) = models(1);
    let big = write_model(d.path(), "big", 7, 4, 3 * 16_384); // 3 MODEL
    let pool = pool(2).build().unwrap(); // 2.5 MODEL
    pool.add("m0", p[0].as_path()).unwrap();
    drop(pool.acquire("m0").await.unwrap());
    let r = pool
        .reload_with(
            "m0",
            big.as_path(),
            model_manager::ReloadPolicy::UnloadFirst,
        )
        .await;
    let s = pool.status("m0").unwrap();
    eprintln!(
        "reload: {r:?}; m0 now {:?} version {:?}",
        s.state, s.version
    );
    assert!(matches!(r, Err(Error::InsufficientMemory { .. })));
    assert_eq!(
        s.version,
        Some(1),
        "a reload that could never fit unloaded the serving version"
    );
    pool.shutdown().await;
}

/// The admission timeout also runs while a load merely waits its turn for a
/// load slot: behind a load longer than the timeout, a load fails with
/// MemoryBusy naming no blocker although the budget is nearly empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_load_slot_fails_with_memory_busy() {
    let (_d, p) = models(2);
    let pool = Arc::new(
        pool(10)
            .admission_timeout(Duration::from_secs(1))
            .pipeline::<Slow>()
            .build()
            .unwrap(),
    );
    pool.add("m0", p[0].as_path()).unwrap();
    pool.add("m1", p[1].as_path()).unwrap();
    let a0 = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire("m0").await.map(|l| l.version()) })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r1 = pool.acquire("m1").await.map(|l| l.version());
    eprintln!("m0: {:?}; m1: {r1:?}", a0.await.unwrap());
    assert!(r1.is_ok(), "{r1:?}");
    pool.shutdown().await;
}

/// Reload with a lease held on the old version: the new version's keep-alive
/// runs from Ready although the model is in use (on v1); with a short
/// keep-alive the new version expires while the model is leased.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_version_expires_while_the_model_is_leased() {
    let (_d, p) = models(1);
    let pool = pool(3)
        .keep_alive(Some(Duration::from_millis(200)))
        .build()
        .unwrap();
    pool.add("m0", p[0].as_path()).unwrap();
    let l1 = pool.acquire("m0").await.unwrap();
    let v2 = pool.reload("m0", p[0].as_path()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let s = pool.status("m0").unwrap();
    eprintln!(
        "v2 = {v2}; with v1 leased: state {:?}, version {:?}, leases {}",
        s.state, s.version, s.leases
    );
    assert_eq!(
        s.version,
        Some(v2),
        "the model expired while a lease on it was held"
    );
    drop(l1);
    pool.shutdown().await;
}

/// cancel() returns before the cancelled load has stopped (it cannot stop
/// inside assemble); an acquire right after starts a second load of the
/// same model, running beside the first (concurrent_loads 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_then_acquire_loads_the_same_model_twice_at_once() {
    let (_d, p) = models(1);
    let pool = Arc::new(
        pool(3)
            .concurrent_loads(2)
            .pipeline::<Slow>()
            .build()
            .unwrap(),
    );
    pool.add("m0", p[0].as_path()).unwrap();
    let mut events = pool.subscribe();
    let a = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire("m0").await.map(|l| l.version()) })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(pool.cancel("m0").unwrap());
    let b = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire("m0").await.map(|l| l.version()) })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let charged = pool.status("m0").unwrap().charged_bytes;
    eprintln!(
        "a {:?} b {:?} charged for m0 mid-way: {charged}",
        a.await.unwrap(),
        b.await.unwrap()
    );
    let mut order = Vec::new();
    while let Ok(e) = events.try_recv() {
        order.push(format!("{} v{} {:?}", e.id, e.version, e.kind));
    }
    eprintln!("{order:#?}");
    assert!(
        charged <= MODEL,
        "two loads of m0 at once ({charged} bytes charged)"
    );
    pool.shutdown().await;
}

/// The admission clock stops while a load waits for a load slot: a load
/// that waited behind a slow load longer than the admission timeout still
/// has its time for memory once it gets its turn (it gave up at once with
/// MemoryBusy, after having evicted the model it waited behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_wait_does_not_use_up_the_wait_for_memory() {
    let dir = tempfile::tempdir().unwrap();
    let c = write_model(dir.path(), "c", 0, 4, 16_384); // 256 KiB
    let b = write_model(dir.path(), "b", 1, 4, 16_384); // 256 KiB
    let a = write_model(dir.path(), "a", 2, 4, 262_144); // 4 MiB, slow in 16-byte reads
    const SMALL: u64 = 4 * 16_384 * 4;
    const SLOW: u64 = 4 * 262_144 * 4;
    let pool = Arc::new(
        ModelPool::builder()
            .memory_budget(SLOW + SMALL + SMALL / 2)
            .chunk_size(16)
            .read_threads(1)
            .admission_timeout(Duration::from_millis(100))
            .runtime(tokio::runtime::Handle::current())
            .build()
            .unwrap(),
    );
    pool.add("a", a.as_path()).unwrap();
    pool.add("b", b.as_path()).unwrap();
    pool.add("c", c.as_path()).unwrap();
    drop(pool.acquire("c").await.unwrap()); // c ready and evictable
    let slow = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.load("a").await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let queued = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.load("b").await })
    };
    slow.await.unwrap().unwrap();
    let outcome = queued.await.unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    pool.shutdown().await;
}

/// A pipeline whose memory takes a while to be freed (its drop sleeps).
struct SlowToFree(#[allow(dead_code)] model_manager::TensorPipeline);

impl Drop for SlowToFree {
    fn drop(&mut self) {
        std::thread::sleep(Duration::from_millis(600));
    }
}

impl model_manager::Pipeline for SlowToFree {
    type Options = ();
    fn assemble(
        loaded: model_manager::TensorPipeline,
        _: &model_manager::Assembly<'_, ()>,
    ) -> model_manager::Result<Self> {
        Ok(SlowToFree(loaded))
    }
}

/// A load waiting only for memory on its way back (a model evicted for it,
/// slow to free) does not give up at the admission timeout, even while an
/// unrelated model is leased: it gave up with MemoryBusy naming the leased
/// model, which held none of the memory it waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_waiting_for_memory_being_freed_does_not_time_out() {
    let (_d, p) = models(3);
    let pool = Arc::new(
        pool(2)
            .admission_timeout(Duration::from_millis(100))
            .pipeline::<SlowToFree>()
            .build()
            .unwrap(),
    );
    for (i, path) in p.iter().enumerate() {
        pool.add(&format!("m{i}"), path.as_path()).unwrap();
    }
    let held = pool.acquire("m0").await.unwrap();
    drop(pool.acquire("m1").await.unwrap()); // ready, evictable
    let lease = pool.acquire("m2").await; // evicts m1, waits for its free
    assert!(lease.is_ok(), "{:?}", lease.err());
    drop((held, lease));
    pool.shutdown().await;
}
