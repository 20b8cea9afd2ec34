//! The pool, measured on the real path in one run:
//!
//! ```sh
//! cargo bench --bench pool                 # 512 MiB models
//! MM_BENCH_MIB=128 cargo bench --bench pool
//! ```
//!
//! 1. Acquire of a resident model under 8 concurrent acquirers: latency of
//!    each `acquire().await` (p50, p99, max), and of `try_acquire`.
//! 2. An evicting switch between two models under a budget for one (evict
//!    A, load B, lease B), against a cold load of the same model into an
//!    empty pool, and against the limit: positioned reads of the same bytes
//!    into already-touched memory.
//! 3. A 10-request trace over 3 models under a budget for 2, served by the
//!    pool, against a single-model manager that unloads and loads on every
//!    change of model: total time and bytes read.
//!
//! 2 and 3 run in two machine states: free RAM (a machine just booted),
//! and the page cache filling the RAM (a desktop that has run for hours:
//! the bench reads a sparse file as large as the free memory first; Linux;
//! `MM_BENCH_FILL=0` skips it). The bench installs model-manager's
//! allocator, as the CLI and the bindings do, so that an evicting load
//! reuses the evicted model's pages.

mod support;

use std::sync::Arc;
use std::time::Instant;

use model_manager::{ModelManager, ModelPool};
use support::{data_range, fill_page_cache, limit, median, meminfo, percentile, write_model};

#[global_allocator]
static ALLOC: model_manager::alloc::Allocator = model_manager::alloc::Allocator::new();

const ROUNDS: usize = 5;

fn env_mib(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Minor page faults of the process so far.
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(7).unwrap().parse().unwrap()
}

fn ms(s: f64) -> String {
    format!("{:>8.1} ms", s * 1e3)
}

fn main() {
    let mib = env_mib("MM_BENCH_MIB", 512).max(16);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(8)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(&dir.path().join("a.safetensors"), mib);
    let b = write_model(&dir.path().join("b.safetensors"), mib);
    let bytes = data_range(&a).1;
    let threads = model_manager::default_read_threads();
    println!("model-manager pool benchmark: models of {mib} MiB, {threads} read threads");

    // 1. Acquire latency of a resident model, 8 acquirers at once.
    {
        let small = write_model(&dir.path().join("small.safetensors"), 16);
        let pool = Arc::new(
            ModelPool::builder()
                .memory_budget(64 << 20)
                .runtime(rt.handle().clone())
                .build()
                .unwrap(),
        );
        pool.add("m", small.as_path()).unwrap();
        let (lat, try_lat) = rt.block_on(async {
            drop(pool.acquire("m").await.unwrap());
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let pool = pool.clone();
                    tokio::spawn(async move {
                        let mut lat = Vec::with_capacity(20_000);
                        let mut try_lat = Vec::with_capacity(20_000);
                        for _ in 0..20_000 {
                            let t = Instant::now();
                            let lease = pool.acquire("m").await.unwrap();
                            lat.push(t.elapsed().as_secs_f64());
                            drop(lease);
                            let t = Instant::now();
                            let lease = pool.try_acquire("m").unwrap();
                            try_lat.push(t.elapsed().as_secs_f64());
                            drop(lease);
                        }
                        (lat, try_lat)
                    })
                })
                .collect();
            let (mut lat, mut try_lat) = (Vec::new(), Vec::new());
            for t in tasks {
                let (l, tl) = t.await.unwrap();
                lat.extend(l);
                try_lat.extend(tl);
            }
            (lat, try_lat)
        });
        let us = |xs: &[f64], p: f64| percentile(xs, p) * 1e6;
        println!(
            "\n1. acquire of a resident model, 8 concurrent acquirers, {} acquires:",
            lat.len()
        );
        println!(
            "   acquire().await   p50 {:>6.2} us  p99 {:>6.2} us  max {:>8.1} us",
            us(&lat, 0.5),
            us(&lat, 0.99),
            us(&lat, 1.0)
        );
        println!(
            "   try_acquire()     p50 {:>6.2} us  p99 {:>6.2} us  max {:>8.1} us",
            us(&try_lat, 0.5),
            us(&try_lat, 0.99),
            us(&try_lat, 1.0)
        );
        rt.block_on(pool.shutdown());
    }

    let mut states = vec!["free RAM"];
    if env_mib("MM_BENCH_FILL", 1) != 0 {
        states.push("page cache full");
    }
    for state in states {
        let filler = (state == "page cache full").then(|| fill_page_cache(dir.path()));
        println!(
            "\n== {state}: {:.1} GiB free, {:.1} GiB cached ==",
            meminfo("MemFree:") as f64 / (1u64 << 30) as f64,
            meminfo("Cached:") as f64 / (1u64 << 30) as f64
        );
        // 2. The evicting switch, a cold load, the limit.
        {
            let budget = bytes + bytes / 2;
            // Warm the page cache: every variant reads from it.
            let _ = limit(&a, threads, 1);
            let _ = limit(&b, threads, 1);
            let limit_t = median(
                limit(&a, threads, ROUNDS)
                    .into_iter()
                    .chain(limit(&b, threads, ROUNDS))
                    .collect(),
            );
            let cold: Vec<f64> = (0..ROUNDS)
                .map(|_| {
                    let pool = ModelPool::builder()
                        .memory_budget(budget)
                        .runtime(rt.handle().clone())
                        .build()
                        .unwrap();
                    pool.add("a", a.as_path()).unwrap();
                    let t = Instant::now();
                    let lease = rt.block_on(pool.acquire("a")).unwrap();
                    let took = t.elapsed().as_secs_f64();
                    drop(lease);
                    rt.block_on(pool.shutdown());
                    took
                })
                .collect();
            let pool = ModelPool::builder()
                .memory_budget(budget)
                .runtime(rt.handle().clone())
                .build()
                .unwrap();
            pool.add("a", a.as_path()).unwrap();
            pool.add("b", b.as_path()).unwrap();
            drop(rt.block_on(pool.acquire("a")).unwrap());
            let mut faults = Vec::new();
            let switches: Vec<f64> = (0..2 * ROUNDS)
                .map(|k| {
                    let id = if k % 2 == 0 { "b" } else { "a" };
                    let before = minor_faults();
                    let t = Instant::now();
                    let lease = rt.block_on(pool.acquire(id)).unwrap();
                    let took = t.elapsed().as_secs_f64();
                    faults.push(minor_faults() - before);
                    drop(lease);
                    took
                })
                .collect();
            if std::env::var_os("MM_BENCH_TRACE").is_some() {
                let each: Vec<String> = switches
                    .iter()
                    .zip(&faults)
                    .map(|(t, f)| format!("{:.1} ms ({f} faults)", t * 1e3))
                    .collect();
                println!("   switches: {}", each.join(", "));
            }
            let s = pool.snapshot();
            assert_eq!(s.counters.evictions as usize, 2 * ROUNDS);
            rt.block_on(pool.shutdown());
            let (cold_t, switch_t) = (median(cold), median(switches));
            let gb = |t: f64| bytes as f64 / t / 1e9;
            println!(
                "\n2. switching between two {mib} MiB models under a budget for one (medians):"
            );
            println!(
                "   (a) limit: pread into touched memory   {}  {:>5.2} GB/s",
                ms(limit_t),
                gb(limit_t)
            );
            println!(
                "   (b) cold load into an empty pool        {}  {:>5.2} GB/s",
                ms(cold_t),
                gb(cold_t)
            );
            println!(
                "   (c) evicting switch (evict + load)      {}  {:>5.2} GB/s",
                ms(switch_t),
                gb(switch_t)
            );
            println!(
                "   (c) vs (a): {:.2}x the limit's throughput; (c) vs (b): {:.2}x",
                limit_t / switch_t,
                cold_t / switch_t
            );
        }

        // 3. A trace over 3 models under a budget for 2.
        {
            let tmib = env_mib("MM_BENCH_TRACE_MIB", mib / 4).max(16);
            let paths: Vec<_> = (0..3)
                .map(|i| write_model(&dir.path().join(format!("t{i}.safetensors")), tmib))
                .collect();
            for p in &paths {
                let _ = limit(p, threads, 1);
            }
            let size = data_range(&paths[0]).1;
            let trace = [0usize, 1, 0, 2, 0, 1, 2, 2, 0, 1];
            let pool_run = || {
                let pool = ModelPool::builder()
                    .memory_budget(2 * size + size / 2)
                    .runtime(rt.handle().clone())
                    .build()
                    .unwrap();
                for (i, p) in paths.iter().enumerate() {
                    pool.add(&format!("t{i}"), p.as_path()).unwrap();
                }
                let t = Instant::now();
                for &i in &trace {
                    drop(rt.block_on(pool.acquire(&format!("t{i}"))).unwrap());
                }
                let took = t.elapsed().as_secs_f64();
                let loads = pool.snapshot().counters.loads;
                rt.block_on(pool.shutdown());
                (took, loads)
            };
            // `replace`: `load` of the next model while one is ready (the
            // manager unloads it first, and keeps its pages for the load);
            // otherwise an explicit `unload`, then `load`.
            let single_run = |replace: bool| {
                let manager = ModelManager::builder()
                    .runtime(rt.handle().clone())
                    .build()
                    .unwrap();
                let t = Instant::now();
                let mut current = None;
                let mut loads = 0u64;
                for &i in &trace {
                    if current != Some(i) {
                        rt.block_on(async {
                            if current.is_some() && !replace {
                                manager.unload().await.unwrap();
                            }
                            manager.load(paths[i].as_path()).unwrap().await.unwrap();
                        });
                        loads += 1;
                        current = Some(i);
                    }
                    drop(manager.acquire().unwrap());
                }
                let took = t.elapsed().as_secs_f64();
                rt.block_on(manager.shutdown());
                (took, loads)
            };
            // Alternate, so that neither runs on a warmer heap or cache.
            let (mut pool_ts, mut single_ts, mut replace_ts) = (Vec::new(), Vec::new(), Vec::new());
            let (mut pool_loads, mut single_loads) = (0, 0);
            for _ in 0..ROUNDS {
                let (t, n) = pool_run();
                pool_ts.push(t);
                pool_loads = n;
                let (t, n) = single_run(false);
                single_ts.push(t);
                single_loads = n;
                replace_ts.push(single_run(true).0);
            }
            let (pool_t, single_t, replace_t) =
                (median(pool_ts), median(single_ts), median(replace_ts));
            let gib = |loads: u64| (loads * size) as f64 / (1u64 << 30) as f64;
            println!("\n3. a 10-request trace over 3 models of {tmib} MiB, budget for 2 ({trace:?}), medians:");
            println!(
                "   pool                      {}  {pool_loads:>2} loads  {:>5.2} GiB read",
                ms(pool_t),
                gib(pool_loads)
            );
            println!(
                "   unload-then-load          {}  {single_loads:>2} loads  {:>5.2} GiB read",
                ms(single_t),
                gib(single_loads)
            );
            println!(
                "   load replacing the model  {}  {single_loads:>2} loads  {:>5.2} GiB read",
                ms(replace_t),
                gib(single_loads)
            );
            println!(
                "   pool vs unload-then-load: {:.2}x the speed; load replacing vs unload-then-load: {:.2}x",
                single_t / pool_t,
                single_t / replace_t
            );
        }
        if let Some(filler) = filler {
            std::fs::remove_file(filler).unwrap();
        }
    }
}
