//! The pool under load (issue "Several models under one memory budget"):
//! many acquirers over more models than fit, and reloads under fire.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{value, verify, write_model};
use model_manager::{ModelPool, PoolLease};

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// The seed a lease's model was written with, read back from its first
/// value (seeds here are small, so the value is exact in f32).
fn seed_of(lease: &PoolLease) -> u32 {
    let first = lease
        .tensor("layer000.weight")
        .unwrap()
        .get(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    (0..16).find(|&s| value(s, 0, 0) == first).unwrap()
}

/// 8 tasks acquire 4 models at random for a few seconds from a pool whose
/// budget fits 2: every lease's data is its model's, nothing deadlocks,
/// the charges never exceed the budget (sampled throughout), and the
/// memory comes back after shutdown.
#[test]
fn eight_tasks_four_models_a_budget_for_two() {
    const ELEMS: usize = 1 << 20; // 4 tensors of 4 MiB: 16 MiB a model
    const MODEL: u64 = 4 * ELEMS as u64 * 4;
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<_> = (0..4)
        .map(|i| write_model(dir.path(), &format!("m{i}"), i, 4, ELEMS))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let baseline = rss_mib();
    let budget = 2 * MODEL + MODEL / 2;
    let pool = Arc::new(
        ModelPool::builder()
            .memory_budget(budget)
            .runtime(rt.handle().clone())
            .build()
            .unwrap(),
    );
    for (i, path) in paths.iter().enumerate() {
        pool.add(&format!("m{i}"), path.as_path()).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let max_charged = Arc::new(AtomicU64::new(0));
    let sampler = std::thread::spawn({
        let (pool, stop, max_charged) = (pool.clone(), stop.clone(), max_charged.clone());
        move || {
            let mut samples = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let s = pool.snapshot();
                assert!(s.charged <= s.budget, "charged {} > budget", s.charged);
                let resident: u64 = s.models.iter().map(|m| m.resident_bytes).sum();
                assert!(resident <= s.budget, "resident {resident} > budget");
                max_charged.fetch_max(s.charged, Ordering::Relaxed);
                samples += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            samples
        }
    });
    let leases = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(3);
        let tasks: Vec<_> = (0..8u64)
            .map(|t| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    while Instant::now() < deadline {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let i = (x % 4) as u32;
                        let lease = pool.acquire(&format!("m{i}")).await.unwrap();
                        assert_eq!(seed_of(&lease), i);
                        verify(&lease, i);
                        tokio::time::sleep(Duration::from_millis(x % 3)).await;
                        drop(lease);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    });
    let s = pool.snapshot();
    rt.block_on(pool.shutdown());
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    drop(pool);
    drop(rt);
    let after = rss_mib();
    eprintln!(
        "{leases} leases, {} loads, {} evictions, {samples} samples, max charged {} MiB of {} MiB; \
         RSS {baseline:.0} MiB before, {after:.0} MiB after",
        s.counters.loads,
        s.counters.evictions,
        max_charged.load(Ordering::Relaxed) >> 20,
        budget >> 20,
    );
    assert!(leases >= 8, "every task got at least one lease");
    assert!(s.counters.evictions > 0, "the budget forced evictions");
    assert!(
        after < baseline + (MODEL >> 20) as f64,
        "RSS {after:.0} MiB after shutdown, {baseline:.0} MiB before"
    );
}

/// 4 tasks acquire A continuously while A is reloaded 20 times, every
/// fifth reload failing: no acquire fails, no lease sees a mixture of
/// versions, each version is the source its reload gave.
#[test]
fn reload_under_fire() {
    let dir = tempfile::tempdir().unwrap();
    let sources = [
        write_model(dir.path(), "a0", 0, 4, 65_536),
        write_model(dir.path(), "a1", 1, 4, 65_536),
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let model = 4 * 65_536 * 4;
    let pool = Arc::new(
        ModelPool::builder()
            .memory_budget(2 * model + model / 2)
            .runtime(rt.handle().clone())
            .build()
            .unwrap(),
    );
    pool.add("a", sources[0].as_path()).unwrap();
    let seen: Arc<Mutex<BTreeMap<u64, u32>>> = Arc::default();
    rt.block_on(async {
        drop(pool.acquire("a").await.unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let acquirers: Vec<_> = (0..4)
            .map(|_| {
                let (pool, stop, seen) = (pool.clone(), stop.clone(), seen.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let lease = pool.acquire("a").await.expect("no acquire fails");
                        let seed = seed_of(&lease);
                        // Every tensor is of that one version.
                        verify(&lease, seed);
                        let previous = seen.lock().unwrap().insert(lease.version(), seed);
                        assert!(previous.is_none_or(|p| p == seed), "a version changed");
                        tokio::task::yield_now().await;
                        drop(lease);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut expected = BTreeMap::from([(1u64, 0u32)]);
        let mut failed = 0;
        for k in 1..=20u32 {
            let fails = k % 5 == 0;
            let seed = k % 2;
            let source = if fails {
                dir.path().join("missing")
            } else {
                sources[seed as usize].clone()
            };
            match pool.reload("a", source).await {
                Ok(version) => {
                    assert!(!fails);
                    expected.insert(version, seed);
                }
                Err(e) => {
                    assert!(fails, "reload {k} failed: {e}");
                    failed += 1;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        let mut acquires = 0;
        for a in acquirers {
            acquires += a.await.unwrap();
        }
        assert_eq!(failed, 4);
        let seen = seen.lock().unwrap().clone();
        for (version, seed) in seen.iter() {
            assert_eq!(expected.get(version), Some(seed), "version {version}");
        }
        eprintln!(
            "{acquires} acquires across {} versions seen of {} loaded",
            seen.len(),
            expected.len()
        );
        assert!(pool.charged() <= pool.budget());
        pool.shutdown().await;
    });
}
