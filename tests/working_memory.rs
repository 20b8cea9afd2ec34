//! Working memory reserved with a lease (`ModelPool::acquire_with`) and
//! the pool's headroom: charged against the budget while the lease lives,
//! made room for by evicting unleased models, waited for within the
//! admission timeout, refused at once when it can never fit.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use model_manager::{Error, ModelPool, State};

const MIB: u64 = 1 << 20;

/// Models of 8 MiB (2 tensors of 1 Mi f32) named `a`, `b`, `c`.
fn models(dir: &std::path::Path) -> Vec<PathBuf> {
    ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, name)| common::write_model(dir, name, i as u32 + 1, 2, 1 << 20))
        .collect()
}

/// A pool of `a`, `b`, `c`; waits for memory end after `timeout`.
fn pool_waiting(dir: &std::path::Path, budget: u64, timeout: Duration) -> Arc<ModelPool> {
    let pool = ModelPool::builder()
        .memory_budget(budget)
        .admission_timeout(timeout)
        .build()
        .unwrap();
    for (name, path) in ["a", "b", "c"].iter().zip(models(dir)) {
        pool.add(name, path.as_path()).unwrap();
    }
    Arc::new(pool)
}

fn pool(dir: &std::path::Path, budget: u64) -> Arc<ModelPool> {
    pool_waiting(dir, budget, Duration::from_secs(10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserve_is_charged_while_its_lease_lives() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(dir.path(), 64 * MIB);
    let lease = pool.acquire_with("a", 16 * MIB).await.unwrap();
    assert_eq!(lease.working_bytes(), 16 * MIB);
    let s = pool.snapshot();
    assert_eq!(s.charged, 24 * MIB);
    assert_eq!(s.model("a").unwrap().charged_bytes, 24 * MIB);
    // A plain lease beside it reserves nothing.
    let plain = pool.acquire("a").await.unwrap();
    assert_eq!(plain.working_bytes(), 0);
    drop(lease);
    assert_eq!(pool.snapshot().charged, 8 * MIB);
    drop(plain);
    // Zero bytes: a plain acquire.
    assert_eq!(pool.acquire_with("a", 0).await.unwrap().working_bytes(), 0);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unleased_models_are_evicted_to_make_room() {
    let dir = tempfile::tempdir().unwrap();
    // Room for three models, or one with 16 MiB of working memory.
    let pool = pool(dir.path(), 24 * MIB + MIB);
    drop(pool.acquire("b").await.unwrap());
    drop(pool.acquire("c").await.unwrap());
    let lease = pool.acquire_with("a", 16 * MIB).await.unwrap();
    let s = pool.snapshot();
    assert!(s.charged <= s.budget);
    assert_eq!(s.counters.evictions, 2);
    assert_eq!(s.model("b").unwrap().state, State::Idle);
    assert_eq!(s.model("c").unwrap().state, State::Idle);
    assert_eq!(s.model("a").unwrap().charged_bytes, 24 * MIB);
    common::verify(&lease, 1);
    drop(lease);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_can_never_fit_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(dir.path(), 32 * MIB);
    // Beside the model itself (8 MiB), 24 MiB at most.
    let err = pool.acquire_with("a", 25 * MIB).await.unwrap_err();
    assert_eq!(
        err,
        Error::InsufficientMemory {
            needed: 25 * MIB,
            available: 24 * MIB,
            pinned: 0
        }
    );
    // Pinned models stay too.
    pool.pin("b").unwrap();
    drop(pool.acquire("b").await.unwrap());
    let err = pool.acquire_with("a", 17 * MIB).await.unwrap_err();
    assert!(
        matches!(err, Error::InsufficientMemory { pinned, .. } if pinned == 8 * MIB),
        "{err:?}"
    );
    assert_eq!(
        pool.acquire_with("a", 16 * MIB)
            .await
            .unwrap()
            .working_bytes(),
        16 * MIB
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_leased_memory_is_bounded_and_names_what_blocked_it() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool_waiting(dir.path(), 32 * MIB, Duration::from_millis(300));
    let held = pool.acquire("b").await.unwrap();
    let err = pool.acquire_with("a", 20 * MIB).await.unwrap_err();
    match err {
        Error::MemoryBusy { needed, blocked_by } => {
            assert_eq!(needed, 20 * MIB);
            let b = blocked_by
                .iter()
                .find(|x| x.id == "b")
                .expect("b blocks it");
            assert_eq!(b.leases, 1);
        }
        other => panic!("{other:?}"),
    }
    // Nothing stayed reserved.
    assert_eq!(pool.snapshot().charged, 16 * MIB);
    // Once the lease goes, the same reserve gets its room.
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire_with("a", 20 * MIB).await })
    };
    drop(held);
    let lease = waiting.await.unwrap().unwrap();
    assert_eq!(lease.working_bytes(), 20 * MIB);
    assert_eq!(pool.snapshot().model("b").unwrap().state, State::Idle);
    drop(lease);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_waits_for_a_reserve_to_be_released() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(dir.path(), 32 * MIB);
    let lease = pool.acquire_with("a", 20 * MIB).await.unwrap();
    let loading = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire("b").await.map(|l| l.id().to_string()) })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!loading.is_finished(), "b must wait for a's reserve");
    assert!(pool.snapshot().charged <= 32 * MIB);
    drop(lease);
    assert_eq!(loading.await.unwrap().unwrap(), "b");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserves_and_loads_at_once_never_exceed_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Arc::new(
        ModelPool::builder()
            .memory_budget(40 * MIB)
            .admission_timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    );
    for (name, path) in ["a", "b", "c"].iter().zip(models(dir.path())) {
        pool.add(name, path.as_path()).unwrap();
    }
    let watcher = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut max = 0;
            for _ in 0..400 {
                let s = pool.snapshot();
                assert!(s.charged <= s.budget, "{} > {}", s.charged, s.budget);
                max = max.max(s.charged);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            max
        })
    };
    let tasks: Vec<_> = (0..6)
        .map(|t| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for round in 0..8usize {
                    let id = ["a", "b", "c"][(t + round) % 3];
                    let working = ((t + round) % 4) as u64 * 4 * MIB;
                    match pool.acquire_with(id, working).await {
                        Ok(lease) => {
                            assert_eq!(lease.working_bytes(), working);
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        Err(Error::MemoryBusy { .. }) => {}
                        Err(e) => panic!("{e:?}"),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(watcher.await.unwrap() <= 40 * MIB);
    // Every reserve went with its lease: once evicted models have freed
    // their memory (bounded), only the resident models are charged.
    let settled = |s: &model_manager::PoolSnapshot| {
        let models: u64 = s
            .models
            .iter()
            .filter(|m| m.version.is_some())
            .map(|m| m.resident_bytes)
            .sum();
        s.charged == models
    };
    for _ in 0..200 {
        if settled(&pool.snapshot()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = pool.snapshot();
    assert!(settled(&s), "{s:?}");
    pool.shutdown().await;
}

#[test]
fn headroom_is_taken_off_the_budget() {
    let pool = ModelPool::builder()
        .memory_budget(100 * MIB)
        .headroom(30 * MIB)
        .build()
        .unwrap();
    assert_eq!(pool.budget(), 70 * MIB);
    let err = ModelPool::builder()
        .memory_budget(10 * MIB)
        .headroom(11 * MIB)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    // On the default budget (the free memory) too: more than there is.
    let err = ModelPool::builder().headroom(u64::MAX).build().unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reserves_never_wait_for_each_others_model() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool_waiting(dir.path(), 32 * MIB, Duration::from_secs(20));
    let held = pool.acquire("b").await.unwrap();
    // Each needs the other's model gone: served one after the other (in
    // whichever order they got in line), never each waiting for the other
    // until the timeout.
    let reserve = |id: &'static str| {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire_with(id, 20 * MIB).await })
    };
    let mut a = reserve("a");
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut b = reserve("b");
    tokio::time::sleep(Duration::from_millis(30)).await;
    drop(held);
    let bound = Duration::from_secs(10);
    let (first, other) = tokio::time::timeout(bound, async {
        tokio::select! {
            lease = &mut a => (lease, b),
            lease = &mut b => (lease, a),
        }
    })
    .await
    .expect("one reserve is served once b's lease goes");
    let first = first.unwrap().unwrap();
    assert_eq!(first.working_bytes(), 20 * MIB);
    assert!(
        !other.is_finished(),
        "the other waits for the first's lease"
    );
    let first_id = first.id().to_string();
    drop(first);
    let second = tokio::time::timeout(bound, other)
        .await
        .expect("then the other")
        .unwrap()
        .unwrap();
    assert_ne!(second.id(), first_id);
    drop(second);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_on_its_way_back_is_not_counted_against_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // No wait for leases at all, as a load with this timeout: the reserve
    // still gets the memory its evictions free.
    let pool = pool_waiting(dir.path(), 24 * MIB + MIB, Duration::ZERO);
    drop(pool.acquire("b").await.unwrap());
    drop(pool.acquire("c").await.unwrap());
    let lease = pool.acquire_with("a", 16 * MIB).await.unwrap();
    assert_eq!(lease.working_bytes(), 16 * MIB);
    drop(lease);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserve_waiting_its_turn_does_not_spin() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool_waiting(dir.path(), 32 * MIB, Duration::from_secs(20));
    let c = pool.acquire("c").await.unwrap();
    drop(pool.acquire("b").await.unwrap());
    let head = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire_with("a", 20 * MIB).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let next = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire_with("b", 16 * MIB).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Waiting its turn, the second reserve takes no lease again and again
    // (it used to, waking itself with each release: a busy loop).
    let hits = pool.snapshot().counters.hits;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let more = pool.snapshot().counters.hits - hits;
    assert!(more < 20, "{more} acquires in 200 ms while waiting");
    drop(c);
    let bound = Duration::from_secs(10);
    let head = tokio::time::timeout(bound, head)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(head.id(), "a");
    drop(head);
    let next = tokio::time::timeout(bound, next)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((next.id(), next.working_bytes()), ("b", 16 * MIB));
    drop(next);
    pool.shutdown().await;
}
