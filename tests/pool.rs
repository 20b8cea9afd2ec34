//! The pool's semantics, one test per promise (issue "Several models under
//! one memory budget").

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{verify, write_model};
use model_manager::{
    Error, ModelOptions, ModelPool, PoolEvent, PoolEventKind, ReloadPolicy, State, UnloadReason,
};
use tokio::sync::broadcast;

/// 4 tensors of 16,384 f32: 256 KiB.
const MODEL: u64 = 4 * 16_384 * 4;

struct Models {
    _dir: tempfile::TempDir,
    paths: Vec<PathBuf>,
}

/// Models `m0`, `m1`, ... of `MODEL` bytes each, seeds 0, 1, ...
fn models(n: u32) -> Models {
    let dir = tempfile::tempdir().unwrap();
    let paths = (0..n)
        .map(|i| write_model(dir.path(), &format!("m{i}"), i, 4, 16_384))
        .collect();
    Models { _dir: dir, paths }
}

/// A pool whose budget fits `fit` models, on the test's runtime.
fn pool(fit: u64) -> model_manager::ModelPoolBuilder {
    ModelPool::builder()
        .memory_budget(fit * MODEL + MODEL / 2)
        .runtime(tokio::runtime::Handle::current())
        .drain_timeout(Duration::from_secs(2))
}

fn add_all(pool: &ModelPool, m: &Models) {
    for (i, path) in m.paths.iter().enumerate() {
        pool.add(&format!("m{i}"), path.as_path()).unwrap();
    }
}

fn drain(rx: &mut broadcast::Receiver<PoolEvent>) -> Vec<PoolEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

async fn wait_for(pool: &ModelPool, what: &str, f: impl Fn(&model_manager::PoolSnapshot) -> bool) {
    for _ in 0..2_000 {
        if f(&pool.snapshot()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}: {:#?}", pool.snapshot());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_recently_used_model_is_evicted_for_a_third() {
    let m = models(3);
    let pool = pool(2).build().unwrap();
    add_all(&pool, &m);
    let mut events = pool.subscribe();
    for id in ["m0", "m1"] {
        let lease = pool.acquire(id).await.unwrap();
        verify(&lease, id[1..].parse().unwrap());
    }
    // m0 was used last: m1 is now the least recently used.
    drop(pool.acquire("m0").await.unwrap());
    let s = pool.snapshot();
    assert_eq!(s.charged, 2 * MODEL, "trued up to the measured bytes");
    let lease = pool.acquire("m2").await.unwrap();
    verify(&lease, 2);
    wait_for(&pool, "m1 freed", |s| {
        s.model("m1").unwrap().state == State::Idle
    })
    .await;
    let s = pool.snapshot();
    assert_eq!(s.model("m0").unwrap().state, State::Ready);
    assert_eq!(s.model("m2").unwrap().state, State::Ready);
    assert!(s.charged <= s.budget);
    assert_eq!(s.counters.evictions, 1);
    assert_eq!(s.counters.loads, 3);
    assert_eq!((s.counters.hits, s.counters.misses), (1, 3));
    let evs = drain(&mut events);
    let m1: Vec<_> = evs
        .iter()
        .filter(|e| e.id == "m1")
        .map(|e| &e.kind)
        .collect();
    assert!(
        m1.contains(&&PoolEventKind::Unloading {
            reason: UnloadReason::Evicted {
                for_id: "m2".into()
            }
        }),
        "{m1:?}"
    );
    assert!(matches!(m1.last(), Some(PoolEventKind::Freed { bytes }) if *bytes == MODEL));
    // Every model's events come in lifecycle order.
    let m2: Vec<_> = evs
        .iter()
        .filter(|e| e.id == "m2")
        .map(|e| &e.kind)
        .collect();
    assert!(matches!(
        m2.as_slice(),
        [
            PoolEventKind::Queued,
            PoolEventKind::Loading { .. },
            PoolEventKind::Ready { .. }
        ]
    ));
    drop(lease);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_waits_for_a_lease_then_evicts_the_released_model() {
    let m = models(3);
    let pool = pool(2).build().unwrap();
    add_all(&pool, &m);
    let a = pool.acquire("m0").await.unwrap();
    let b = pool.acquire("m1").await.unwrap();
    let pool = Arc::new(pool);
    let third = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire("m2").await.map(|l| l.version()) }
    });
    wait_for(&pool, "m2 queued", |s| s.queued.len() == 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let s = pool.snapshot();
    assert_eq!(s.model("m2").unwrap().state, State::Loading);
    assert_eq!(s.model("m2").unwrap().waiters, 1);
    assert_eq!(s.counters.evictions, 0, "a leased model is never evicted");
    drop(b);
    assert_eq!(third.await.unwrap().unwrap(), 1);
    let s = pool.snapshot();
    assert_eq!(s.model("m0").unwrap().state, State::Ready, "still leased");
    assert_eq!(s.counters.evictions, 1);
    verify(&a, 0);
    drop(a);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_times_out_names_what_blocked_it() {
    let m = models(3);
    let pool = pool(2)
        .admission_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    add_all(&pool, &m);
    let a = pool.acquire("m0").await.unwrap();
    let b = pool.acquire("m1").await.unwrap();
    let b2 = pool.acquire("m1").await.unwrap();
    let err = pool.acquire("m2").await.unwrap_err();
    match &err {
        Error::MemoryBusy { needed, blocked_by } => {
            assert_eq!(*needed, MODEL);
            let by: Vec<_> = blocked_by
                .iter()
                .map(|b| (b.id.as_str(), b.leases, b.state))
                .collect();
            assert_eq!(by, [("m0", 1, State::Ready), ("m1", 2, State::Ready)]);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("\"m1\""), "{err}");
    let s = pool.snapshot();
    assert!(s.queued.is_empty());
    assert_eq!(s.charged, 2 * MODEL);
    drop((a, b, b2));
    // Waiting in vain is not the model's fault: no retry cooldown after it.
    let lease = pool.acquire("m2").await.unwrap();
    verify(&lease, 2);
    drop(lease);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_fit_beside_pinned_models_is_refused_at_once() {
    let m = models(2);
    let pool = pool(1).build().unwrap();
    pool.add_with("m0", m.paths[0].as_path(), ModelOptions::new().pinned(true))
        .unwrap();
    pool.add("m1", m.paths[1].as_path()).unwrap();
    drop(pool.acquire("m0").await.unwrap());
    let err = pool.acquire("m1").await.unwrap_err();
    assert_eq!(
        err,
        Error::InsufficientMemory {
            needed: MODEL,
            available: MODEL / 2,
            pinned: MODEL,
        }
    );
    // Unpinned, it is evicted instead.
    pool.unpin("m0").unwrap();
    let lease = pool.acquire("m1").await;
    // Within the cooldown the refusal is answered again without loading.
    assert!(lease.is_err());
    pool.shutdown().await;

    let pool = self::pool(1)
        .retry_cooldown(Duration::ZERO)
        .build()
        .unwrap();
    pool.add_with("m0", m.paths[0].as_path(), ModelOptions::new().pinned(true))
        .unwrap();
    pool.add("m1", m.paths[1].as_path()).unwrap();
    drop(pool.acquire("m0").await.unwrap());
    assert!(pool.acquire("m1").await.is_err());
    pool.unpin("m0").unwrap();
    let lease = pool.acquire("m1").await.unwrap();
    verify(&lease, 1);
    assert_eq!(pool.snapshot().counters.evictions, 1);
    drop(lease);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_model_is_never_loaded_twice_at_once() {
    let m = models(1);
    let pool = Arc::new(pool(1).build().unwrap());
    add_all(&pool, &m);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let lease = pool.acquire("m0").await.unwrap();
                verify(&lease, 0);
                lease.version()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 1);
    }
    let s = pool.snapshot();
    assert_eq!(s.counters.loads, 1);
    assert_eq!(s.counters.hits + s.counters.misses, 8);
    pool.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn keep_alive_runs_only_while_no_lease_is_held() {
    let m = models(1);
    let pool = pool(1)
        .keep_alive(Some(Duration::from_secs(10)))
        .build()
        .unwrap();
    add_all(&pool, &m);
    let lease = pool.acquire("m0").await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        pool.status("m0").unwrap().state,
        State::Ready,
        "never while leased"
    );
    assert_eq!(pool.status("m0").unwrap().expires_in, None);
    drop(lease);
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(pool.status("m0").unwrap().state, State::Ready);
    // An acquire before the deadline stops the clock; the release restarts it.
    drop(pool.acquire("m0").await.unwrap());
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(pool.status("m0").unwrap().state, State::Ready);
    assert_eq!(
        pool.status("m0").unwrap().expires_in,
        Some(Duration::from_secs(1))
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..100 {
        if pool.status("m0").unwrap().state == State::Idle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = pool.snapshot();
    assert_eq!(s.model("m0").unwrap().state, State::Idle);
    assert_eq!((s.counters.expirations, s.charged), (1, 0));
    // Pinned models do not expire.
    pool.pin("m0").unwrap();
    drop(pool.acquire("m0").await.unwrap());
    tokio::time::sleep(Duration::from_secs(100)).await;
    assert_eq!(pool.status("m0").unwrap().state, State::Ready);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_new_leases_while_old_leases_keep_their_version() {
    let m = models(2);
    let pool = pool(2).build().unwrap();
    pool.add("a", m.paths[0].as_path()).unwrap();
    let old = pool.acquire("a").await.unwrap();
    assert_eq!(old.version(), 1);
    let mut events = pool.subscribe();
    assert_eq!(pool.reload("a", m.paths[1].as_path()).await.unwrap(), 2);
    let new = pool.acquire("a").await.unwrap();
    assert_eq!(new.version(), 2);
    verify(&new, 1);
    verify(&old, 0);
    let s = pool.snapshot();
    assert_eq!(
        s.charged,
        2 * MODEL,
        "both versions charged while the old drains"
    );
    assert_eq!(s.model("a").unwrap().leases, 2);
    drop(old);
    wait_for(&pool, "v1 freed", |s| s.charged == MODEL).await;
    let kinds: Vec<_> = drain(&mut events)
        .into_iter()
        .map(|e| (e.version, e.kind))
        .collect();
    assert!(kinds.contains(&(
        1,
        PoolEventKind::Unloading {
            reason: UnloadReason::Replaced
        }
    )));
    assert!(matches!(
        kinds.last(),
        Some((1, PoolEventKind::Freed { .. }))
    ));
    drop(new);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reload_leaves_the_old_version_serving() {
    let m = models(1);
    let pool = pool(2).build().unwrap();
    pool.add("a", m.paths[0].as_path()).unwrap();
    drop(pool.acquire("a").await.unwrap());
    let err = pool
        .reload("a", m.paths[0].join("missing"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err:?}");
    let lease = pool.acquire("a").await.unwrap();
    assert_eq!(lease.version(), 1);
    verify(&lease, 0);
    let status = pool.status("a").unwrap();
    assert_eq!(status.state, State::Ready);
    assert_eq!(status.last_error, Some(err));
    drop(lease);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_cannot_fit_beside_the_old_version_follows_its_policy() {
    let m = models(2);
    let pool = pool(1).build().unwrap();
    pool.add("a", m.paths[0].as_path()).unwrap();
    let lease = pool.acquire("a").await.unwrap();
    let err = pool.reload("a", m.paths[1].as_path()).await.unwrap_err();
    assert!(matches!(err, Error::InsufficientMemory { .. }), "{err:?}");
    assert_eq!(pool.try_acquire("a").unwrap().version(), 1, "still serving");
    // Unload first: downtime, after the old version's leases drain.
    let pool = Arc::new(pool);
    let reload =
        tokio::spawn(pool.reload_with("a", m.paths[1].as_path(), ReloadPolicy::UnloadFirst));
    wait_for(&pool, "old version out of service", |s| {
        s.model("a").unwrap().version.is_none()
    })
    .await;
    assert!(matches!(pool.try_acquire("a"), Err(Error::NotReady(_))));
    drop(lease);
    assert_eq!(reload.await.unwrap().unwrap(), 3);
    let lease = pool.acquire("a").await.unwrap();
    verify(&lease, 1);
    assert!(pool.charged() <= pool.budget());
    drop(lease);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_is_bounded_and_a_waiter_that_leaves_leaves_no_trace() {
    let m = models(4);
    let pool = Arc::new(pool(2).max_queue(1).build().unwrap());
    add_all(&pool, &m);
    let a = pool.acquire("m0").await.unwrap();
    let b = pool.acquire("m1").await.unwrap();
    // m2 waits for memory; dropping its only waiter leaves the load queued.
    let err = pool
        .acquire_timeout("m2", Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(err, Error::Timeout);
    let s = pool.snapshot();
    assert_eq!(s.model("m2").unwrap().waiters, 0);
    assert_eq!(s.queued, [("m2".to_string(), 1)]);
    // The queue holds one: the next load is refused at once.
    assert_eq!(
        pool.acquire("m3").await.unwrap_err(),
        Error::QueueFull { limit: 1 }
    );
    // The queued load goes on once memory is released.
    drop(a);
    wait_for(&pool, "m2 ready", |s| {
        s.model("m2").unwrap().state == State::Ready
    })
    .await;
    // Cancelled by id, a load ends for its waiters.
    drop(b);
    pool.unload("m2").await.unwrap();
    let s = pool.snapshot();
    assert!(s.charged <= MODEL, "{s:#?}");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_model_is_not_reloaded_in_a_tight_loop() {
    let m = models(1);
    let pool = pool(1)
        .retry_cooldown(Duration::from_secs(3600))
        .build()
        .unwrap();
    pool.add("broken", m.paths[0].join("nothing.safetensors"))
        .unwrap();
    let first = pool.acquire("broken").await.unwrap_err();
    for _ in 0..10 {
        assert_eq!(pool.acquire("broken").await.unwrap_err(), first);
    }
    let s = pool.snapshot();
    assert_eq!(
        s.counters.failures, 1,
        "one attempt, then the cooldown answers"
    );
    assert_eq!(s.model("broken").unwrap().state, State::Failed);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_and_commands_after_shutdown_are_refused() {
    let m = models(1);
    let pool = pool(1).build().unwrap();
    add_all(&pool, &m);
    assert_eq!(
        pool.acquire("nope").await.unwrap_err(),
        Error::UnknownModel("nope".into())
    );
    assert!(matches!(
        pool.add("m0", m.paths[0].as_path()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        pool.add("", m.paths[0].as_path()),
        Err(Error::InvalidArgument(_))
    ));
    let lease = pool.acquire("m0").await.unwrap();
    let pool = Arc::new(pool);
    // Removing waits for the model's leases.
    let remove = tokio::spawn({
        let pool = pool.clone();
        async move { pool.remove("m0").await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!remove.is_finished());
    drop(lease);
    remove.await.unwrap().unwrap();
    assert_eq!(
        pool.acquire("m0").await.unwrap_err(),
        Error::UnknownModel("m0".into())
    );
    assert_eq!(pool.charged(), 0);
    pool.shutdown().await;
    assert_eq!(pool.acquire("m0").await.unwrap_err(), Error::ShutDown);
    assert_eq!(pool.charged(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_are_exposed_to_prometheus() {
    let m = models(3);
    let pool = pool(2).build().unwrap();
    add_all(&pool, &m);
    for id in ["m0", "m1", "m2", "m2"] {
        drop(pool.acquire(id).await.unwrap());
    }
    let text = pool.metrics_text();
    for line in [
        "model_manager_pool_loads_total 3",
        "model_manager_pool_hits_total 1",
        "model_manager_pool_misses_total 3",
        "model_manager_pool_evictions_total 1",
        "# TYPE model_manager_pool_evicted_idle_seconds histogram",
        "model_manager_pool_evicted_idle_seconds_count 1",
        &format!("model_manager_pool_budget_bytes {}", pool.budget()),
        "model_manager_pool_resident_models 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from\n{text}"
        );
    }
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_with_a_lease_held() {
    let m = models(2);
    let pool = pool(2)
        .drain_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    add_all(&pool, &m);
    let lease = pool.acquire("m0").await.unwrap();
    let started = std::time::Instant::now();
    pool.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(10));
    verify(&lease, 0);
    assert_eq!(pool.snapshot().unreclaimed_bytes, MODEL);
    drop(lease);
    assert_eq!(pool.snapshot().unreclaimed_bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_waiting_on_a_load_a_reload_replaced_gets_the_reload() {
    let m = models(3);
    let pool = Arc::new(pool(2).build().unwrap());
    add_all(&pool, &m);
    let a = pool.acquire("m0").await.unwrap();
    let b = pool.acquire("m1").await.unwrap();
    // m2's load waits for memory; a reload replaces it meanwhile.
    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire("m2").await.map(|l| (l.version(), seed_of(&l))) }
    });
    wait_for(&pool, "m2 queued", |s| s.model("m2").unwrap().waiters == 1).await;
    let reload = tokio::spawn(pool.reload("m2", m.paths[0].as_path()));
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop((a, b));
    assert_eq!(reload.await.unwrap().unwrap(), 2);
    assert_eq!(
        waiting.await.unwrap().unwrap(),
        (2, 0),
        "joined the newer load"
    );
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unload_ends_while_others_keep_acquiring_the_model() {
    let m = models(1);
    let pool = Arc::new(pool(1).build().unwrap());
    add_all(&pool, &m);
    drop(pool.acquire("m0").await.unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = tokio::spawn({
        let (pool, stop) = (pool.clone(), stop.clone());
        async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                drop(pool.acquire("m0").await);
                tokio::task::yield_now().await;
            }
        }
    });
    for _ in 0..20 {
        tokio::time::timeout(Duration::from_secs(20), pool.unload("m0"))
            .await
            .expect("an unload waits only for the versions there were when it was called")
            .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    busy.await.unwrap();
    pool.shutdown().await;
}

fn seed_of(lease: &model_manager::PoolLease) -> u32 {
    let first = lease
        .tensor("layer000.weight")
        .unwrap()
        .get(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    (0..16).find(|&s| common::value(s, 0, 0) == first).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_that_mean_never_do_not_overflow() {
    let m = models(2);
    let pool = Arc::new(
        pool(1)
            .admission_timeout(Duration::MAX)
            .retry_cooldown(Duration::MAX)
            .keep_alive(Some(Duration::MAX))
            .build()
            .unwrap(),
    );
    add_all(&pool, &m);
    pool.add("broken", m.paths[0].join("missing")).unwrap();
    let a = pool.acquire_timeout("m0", Duration::MAX).await.unwrap();
    // A wait with no deadline, ended by the release.
    let b = tokio::spawn({
        let pool = pool.clone();
        async move { pool.acquire("m1").await.map(|l| l.version()) }
    });
    wait_for(&pool, "m1 queued", |s| s.queued.len() == 1).await;
    drop(a);
    assert_eq!(b.await.unwrap().unwrap(), 1);
    // A cooldown of forever answers the failure forever.
    let first = pool.acquire("broken").await.unwrap_err();
    assert_eq!(pool.acquire("broken").await.unwrap_err(), first);
    pool.set_keep_alive("m1", Some(Duration::MAX)).unwrap();
    assert_eq!(pool.status("m1").unwrap().state, State::Ready);
    pool.shutdown().await;
}

#[test]
fn shutdown_blocking_from_a_plain_thread() {
    let m = models(1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pool = ModelPool::builder()
        .memory_budget(MODEL * 2)
        .build()
        .unwrap();
    add_all(&pool, &m);
    let lease = rt.block_on(pool.acquire("m0")).unwrap();
    verify(&lease, 0);
    drop(lease);
    // Refused inside a runtime, done outside one.
    let refused = rt.block_on(async { pool.shutdown_blocking() });
    assert!(matches!(refused, Err(Error::InvalidArgument(_))));
    pool.shutdown_blocking().unwrap();
    assert_eq!(pool.charged(), 0);
    assert!(matches!(pool.try_acquire("m0"), Err(Error::ShutDown)));
}

/// The admission timeout bounds the whole wait, counted from the request:
/// loads queued behind one that waits for memory give up when it does
/// (each a timeout after its own request), not one timeout later each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_loads_give_up_an_admission_timeout_after_their_request() {
    const TIMEOUT: Duration = Duration::from_secs(2);
    let m = models(6);
    let pool = Arc::new(pool(1).admission_timeout(TIMEOUT).build().unwrap());
    add_all(&pool, &m);
    let held = pool.acquire("m0").await.unwrap();
    let start = tokio::time::Instant::now();
    let mut waiters = Vec::new();
    for i in 1..6 {
        let pool = pool.clone();
        waiters.push(tokio::spawn(async move {
            let asked = tokio::time::Instant::now();
            let outcome = pool.acquire(&format!("m{i}")).await.map(drop);
            (outcome, asked.elapsed())
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for waiter in waiters {
        let (outcome, waited) = waiter.await.unwrap();
        match outcome {
            Err(Error::MemoryBusy { blocked_by, .. }) => {
                let ids: Vec<_> = blocked_by.iter().map(|b| b.id.as_str()).collect();
                assert_eq!(ids, ["m0"], "what holds the memory is named");
            }
            other => panic!("{other:?}"),
        }
        assert!(waited >= TIMEOUT, "gave up early: {waited:?}");
    }
    // One timeout each, from their own requests (about 2.1 s for the
    // last); the old bound, one timeout per load ahead, took 10 s.
    let all = start.elapsed();
    assert!(all < TIMEOUT * 3, "the last waited {all:?}");
    assert!(pool.snapshot().queued.is_empty());
    drop(held);
    pool.shutdown().await;
}

/// Whether this process holds `path` open.
#[cfg(target_os = "linux")]
fn holds_open(path: &std::path::Path) -> bool {
    let want = std::fs::canonicalize(path).unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .any(|target| target == want)
}

/// The pool loads what it estimated: the layout resolved for the estimate
/// (its files open) is the one the model's manager reads, not a second
/// resolution of the source. Replacing the file while the load waits for
/// memory changes nothing: the charged bytes are the estimate and the data
/// are the estimated file's.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_reads_the_plan_it_was_charged_for() {
    let m = models(2);
    let pool = Arc::new(pool(1).build().unwrap());
    add_all(&pool, &m);
    let held = pool.acquire("m0").await.unwrap();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire("m1").await })
    };
    let file = m.paths[1].join("model.safetensors");
    for _ in 0..2_000 {
        if holds_open(&file) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(holds_open(&file), "the estimate resolved the layout");
    // A bigger model (twice the tensors) replaces the file on disk.
    let dir = tempfile::tempdir().unwrap();
    let bigger = write_model(dir.path(), "bigger", 9, 8, 16_384);
    std::fs::rename(bigger.join("model.safetensors"), &file).unwrap();
    drop(held);
    let lease = waiter.await.unwrap().unwrap();
    verify(&lease, 1);
    assert_eq!(lease.tensor_count(), 4);
    assert_eq!(pool.snapshot().charged, MODEL);
    drop(lease);
    pool.shutdown().await;
}
