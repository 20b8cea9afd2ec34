//! The host tier under races: a park copy in flight while the model is
//! reloaded, unloaded or acquired again, and resumes stopped while others
//! start. A `Slow` pipeline makes the park's copy take `PARK_MS` (it
//! sleeps in `loaded()` when the park calls it), which holds a park open
//! on purpose. The tier is simulated on the CPU (see tests/host_tier.rs).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use model_manager::{Assembly, Error, ModelPool, Pipeline, TensorPipeline};

const MIB: u64 = 1 << 20;
const PARK_MS: u64 = 1500;

/// Each pool's switch: while `slow` is set, every second call of
/// `loaded()` sleeps (the first of each pair is the eviction's, under the
/// pool's lock; the second the park's, on its blocking thread).
#[derive(Default)]
struct Slowness {
    slow: AtomicBool,
    calls: AtomicU64,
}

impl Slowness {
    fn start(&self) {
        self.calls.store(0, Ordering::SeqCst);
        self.slow.store(true, Ordering::SeqCst);
    }

    fn stop(&self) {
        self.slow.store(false, Ordering::SeqCst);
    }
}

struct Slow(TensorPipeline, Arc<Slowness>);

impl Pipeline for Slow {
    type Options = Arc<Slowness>;

    fn assemble(
        loaded: TensorPipeline,
        cx: &Assembly<'_, Self::Options>,
    ) -> model_manager::Result<Self> {
        Ok(Slow(loaded, cx.options().clone()))
    }

    fn loaded(&self) -> Option<&TensorPipeline> {
        let s = &self.1;
        if s.slow.load(Ordering::SeqCst) && s.calls.fetch_add(1, Ordering::SeqCst) % 2 == 1 {
            std::thread::sleep(Duration::from_millis(PARK_MS));
        }
        Some(&self.0)
    }
}

fn slow_pool(slowness: &Arc<Slowness>, budget: u64, host: u64) -> Arc<ModelPool<Slow>> {
    Arc::new(
        ModelPool::builder()
            .memory_budget(budget)
            .host_budget(host)
            .simulate_host_tier(true)
            .retry_cooldown(Duration::ZERO)
            .admission_timeout(Duration::from_secs(20))
            .pipeline_with::<Slow>(slowness.clone())
            .build()
            .unwrap(),
    )
}

/// Models `a` and `b` (2 MiB) under a budget for one; `a` loaded, then
/// evicted by an acquire of `b` (the task returned): `a`'s copy is in
/// flight for about `PARK_MS` when this returns, and `b` waits for its
/// memory.
async fn a_parking_slowly() -> (
    tempfile::TempDir,
    Arc<Slowness>,
    Arc<ModelPool<Slow>>,
    tokio::task::JoinHandle<model_manager::Result<()>>,
) {
    let dir = tempfile::tempdir().unwrap();
    let a = common::write_model(dir.path(), "a", 1, 2, 1 << 18);
    let b = common::write_model(dir.path(), "b", 2, 2, 1 << 18);
    let slowness = Arc::new(Slowness::default());
    let pool = slow_pool(&slowness, 3 * MIB, 16 * MIB);
    pool.add("a", a.as_path()).unwrap();
    pool.add("b", b.as_path()).unwrap();
    drop(pool.acquire("a").await.unwrap());
    slowness.start();
    let p = pool.clone();
    let b_task = tokio::spawn(async move { p.acquire("b").await.map(drop) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    (dir, slowness, pool, b_task)
}

/// A reload installed while the evicted old version is still being copied:
/// the old copy is thrown away, and the model's next eviction and acquire
/// serve the reloaded weights (they served the old ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_during_a_park_keeps_its_own_weights() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::write_model(dir.path(), "a", 1, 2, 1 << 18); // 2 MiB
    let b = common::write_model(dir.path(), "b", 2, 2, 1 << 18);
    let c = common::write_model(dir.path(), "c", 4, 2, 360_448); // 2.75 MiB: a must go too
    let a2 = common::write_model(dir.path(), "a2", 3, 2, 1 << 16); // 512 KiB, new weights
    let slowness = Arc::new(Slowness::default());
    let pool = slow_pool(&slowness, 3 * MIB, 16 * MIB);
    pool.add("a", a.as_path()).unwrap();
    pool.add("b", b.as_path()).unwrap();
    pool.add("c", c.as_path()).unwrap();
    drop(pool.acquire("a").await.unwrap());
    slowness.start();
    let p = pool.clone();
    let b_task = tokio::spawn(async move { p.acquire("b").await.map(drop) });
    tokio::time::sleep(Duration::from_millis(300)).await; // a evicted, its copy in flight
    assert!(pool.cancel("b").unwrap());
    assert!(matches!(b_task.await.unwrap(), Err(Error::Cancelled)));
    pool.reload("a", a2.as_path()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(PARK_MS + 500)).await; // the park ends
    slowness.stop();
    assert!(!pool.status("a").unwrap().parked);
    drop(pool.acquire("b").await.unwrap());
    drop(pool.acquire("c").await.unwrap()); // evicts a (the reloaded version) and b
    let lease = pool.acquire("a").await.unwrap();
    common::verify(&lease.pipeline().0, 3);
    drop(lease);
    pool.shutdown().await;
}

/// The same without a cancel: a working-memory reserve evicts a, and a
/// reload of a installs before a's copy is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_during_a_reserves_park_keeps_its_own_weights() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::write_model(dir.path(), "a", 1, 2, 1 << 18); // 2 MiB
    let s = common::write_model(dir.path(), "s", 2, 2, 1 << 13); // 64 KiB
    let c = common::write_model(dir.path(), "c", 4, 2, 360_448); // 2.75 MiB
    let a2 = common::write_model(dir.path(), "a2", 3, 2, 1 << 16); // 512 KiB
    let slowness = Arc::new(Slowness::default());
    let pool = slow_pool(&slowness, 3 * MIB, 16 * MIB);
    for (n, p) in [("a", &a), ("s", &s), ("c", &c)] {
        pool.add(n, p.as_path()).unwrap();
    }
    drop(pool.acquire("a").await.unwrap());
    drop(pool.acquire("s").await.unwrap());
    slowness.start();
    let p = pool.clone();
    let reserve = tokio::spawn(async move { p.acquire_with("s", 2 * MIB).await.map(drop) });
    tokio::time::sleep(Duration::from_millis(300)).await; // a evicted for it, copy in flight
    pool.reload("a", a2.as_path()).await.unwrap();
    reserve.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(PARK_MS + 500)).await;
    slowness.stop();
    drop(pool.acquire("c").await.unwrap()); // evicts a (the reloaded version)
    let lease = pool.acquire("a").await.unwrap();
    common::verify(&lease.pipeline().0, 3);
    drop(lease);
    pool.shutdown().await;
}

/// Unloaded while its copy is made: the park's own lease is no user's
/// (the status showed 1 lease, and the version held as busy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parks_lease_is_no_users_after_an_unload() {
    let (_dir, slowness, pool, b_task) = a_parking_slowly().await;
    assert_eq!(pool.status("a").unwrap().leases, 0);
    let p = pool.clone();
    let unload = tokio::spawn(async move { p.unload("a").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let during = pool.status("a").unwrap();
    slowness.stop();
    unload.await.unwrap().unwrap();
    b_task.await.unwrap().unwrap();
    assert_eq!(during.leases, 0, "no user holds a lease on a: {during:?}");
    let a = pool.status("a").unwrap();
    assert!(
        !a.parked && a.parked_bytes == 0,
        "the unload dropped the copy: {a:?}"
    );
    assert_eq!(pool.snapshot().parked, 0);
    pool.shutdown().await;
}

/// Acquired again while its copy is made: the acquire waits for the copy
/// and loads back from it (it loaded the files, then threw the copy away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_during_its_park_loads_back_from_the_copy() {
    let (_dir, slowness, pool, b_task) = a_parking_slowly().await; // a's copy in flight
    slowness.stop();
    assert!(
        pool.status("b").unwrap().version.is_none(),
        "b waits for a's memory"
    );
    let lease = pool.acquire("a").await.unwrap();
    common::verify(&lease.pipeline().0, 1);
    drop(lease);
    b_task.await.unwrap().unwrap();
    let counters = pool.snapshot().counters;
    assert_eq!((counters.parks, counters.resumes), (2, 1), "{counters:?}");
    pool.shutdown().await;
}

/// A resume stopped (cancel) while a new acquire's resume has started:
/// the stopped one's end leaves the copy protected for the live one (the
/// tier dropped it under the live resume, which failed, and the cooldown
/// then refused acquires).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_resume_leaves_the_next_ones_copy_alone() {
    for _round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let a = common::write_model(dir.path(), "a", 1, 2, 1 << 18);
        let b = common::write_model(dir.path(), "b", 2, 2, 1 << 18);
        let pool = Arc::new(
            ModelPool::builder()
                .memory_budget(3 * MIB)
                .host_budget(3 * MIB) // room for one copy
                .simulate_host_tier(true)
                .admission_timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
        );
        pool.add("a", a.as_path()).unwrap();
        pool.add("b", b.as_path()).unwrap();
        drop(pool.acquire("a").await.unwrap());
        let lease_b = pool.acquire("b").await.unwrap(); // a parked
        assert!(pool.status("a").unwrap().parked);
        let p = pool.clone();
        let first = tokio::spawn(async move { p.acquire("a").await.map(drop) });
        tokio::time::sleep(Duration::from_millis(100)).await; // its resume waits for b's lease
        assert!(pool.cancel("a").unwrap());
        // A new acquire at once: its resume starts before the stopped one ends.
        let mut second = Box::pin({
            let p = pool.clone();
            async move { p.acquire("a").await }
        });
        let _ = tokio::time::timeout(Duration::ZERO, &mut second).await;
        let _ = first.await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(lease_b); // the live resume evicts b, whose park needs the tier's room
        let lease = second.await.unwrap();
        common::verify(lease.pipeline(), 1);
        drop(lease);
        pool.shutdown().await;
    }
}
