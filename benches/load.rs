//! Load speed, measured on the real path against the hardware limit and the
//! peer, in one run:
//!
//! ```sh
//! cargo bench --bench load            # ~1 GiB model, 5 rounds each
//! MM_BENCH_MIB=256 cargo bench --bench load
//! ```
//!
//! (a) the limit: positioned reads of the same bytes into already-touched
//!     memory (1 thread, and as many threads as the loader uses);
//! (b) the peer: candle-core's `MmapedSafetensors` loading every tensor on
//!     the CPU;
//! (c) model-manager, from `load()` to `Ready`.
//!
//! Also: the cost of progress and cancel checks, cancel latency, peak RSS
//! during a load and RSS growth over 50 load/unload cycles (the last two in
//! a fresh child process each, so nothing else is on the heap).

use std::path::Path;
use std::time::Instant;

use model_manager::candle_core::{Device, Tensor};
use model_manager::ModelManager;

mod support;

use support::{
    cancel_latency, data_range, limit, median, percentile, run_child, status_kib, write_model,
};

const ROUNDS: usize = 7;

fn model_mib() -> usize {
    std::env::var("MM_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// (b) candle-core's mmap loader, every tensor onto the CPU.
fn peer(path: &Path) -> Vec<f64> {
    (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            // SAFETY: the benchmark's own file, not modified while mapped.
            let st =
                unsafe { model_manager::candle_core::safetensors::MmapedSafetensors::new(path) }
                    .unwrap();
            let tensors: Vec<Tensor> = st
                .tensors()
                .iter()
                .map(|(name, _)| st.load(name, &Device::Cpu).unwrap())
                .collect();
            let secs = t.elapsed().as_secs_f64();
            drop(tensors);
            secs
        })
        .collect()
}

/// Child process: peak RSS of one load, or RSS growth over 50 cycles.
fn child(mode: &str, path: &Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let manager = ModelManager::new().unwrap();
        let before = status_kib("VmRSS:");
        match mode {
            "peak" => {
                manager.load(path).unwrap().await.unwrap();
                println!("{} {}", before, status_kib("VmHWM:"));
            }
            _ => {
                manager.load(path).unwrap().await.unwrap();
                manager.unload().await.unwrap();
                let first = status_kib("VmRSS:");
                for _ in 1..50 {
                    manager.load(path).unwrap().await.unwrap();
                    manager.unload().await.unwrap();
                }
                println!("{} {}", first, status_kib("VmRSS:"));
            }
        }
        manager.shutdown().await;
    });
}

fn run_child_kib(mode: &str, path: &Path) -> (f64, f64) {
    let v = run_child(mode, path);
    (v[0] * 1024.0, v[1] * 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        return child(&args[i + 1], Path::new(&args[i + 2]));
    }
    let mib = model_mib();
    let dir = tempfile::tempdir().unwrap();
    eprintln!("writing a {mib} MiB model ...");
    let path = write_model(&dir.path().join("bench.safetensors"), mib);
    let bytes = data_range(&path).1 as f64;
    std::fs::read(&path).unwrap(); // into the page cache
    let gb = |secs: f64| bytes / secs / 1e9;
    let threads = model_manager::default_read_threads();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let limit1 = median(limit(&path, 1, ROUNDS));
    let limit_n = median(limit(&path, threads, ROUNDS));
    let peer_t = median(peer(&path));
    let (ours_t, checks_t, one_thread_t) = rt.block_on(async {
        // Interleaved, round by round, so drift in the machine's load hits
        // every variant alike: the default; the same with one check per
        // 256 MiB instead of per 4 MiB; one reader thread.
        let variants = [
            ModelManager::new().unwrap(),
            ModelManager::builder()
                .chunk_size(256 << 20)
                .build()
                .unwrap(),
            ModelManager::builder().read_threads(1).build().unwrap(),
        ];
        let mut times = vec![Vec::new(); variants.len()];
        for _ in 0..ROUNDS {
            for (m, t) in variants.iter().zip(times.iter_mut()) {
                let start = Instant::now();
                m.load(path.as_path()).unwrap().await.unwrap();
                t.push(start.elapsed().as_secs_f64());
                m.unload().await.unwrap();
            }
        }
        for m in &variants {
            m.shutdown().await;
        }
        let mut medians = times.into_iter().map(median);
        (
            medians.next().unwrap(),
            medians.next().unwrap(),
            medians.next().unwrap(),
        )
    });
    let cancels = rt.block_on(cancel_latency(&path, ours_t, 100));
    let (before, peak) = run_child_kib("peak", &path);
    let (first, fiftieth) = run_child_kib("cycles", &path);
    let best_limit = limit1.min(limit_n);

    println!(
        "model: {:.0} MiB of f32 tensors in the page cache; {threads} reader threads",
        bytes / (1 << 20) as f64
    );
    println!("medians of {ROUNDS} rounds:");
    println!(
        "  (a) limit, pread into touched memory, 1 thread   {:>6.1} ms  {:>5.2} GB/s",
        limit1 * 1e3,
        gb(limit1)
    );
    println!(
        "  (a) limit, pread into touched memory, {threads} threads  {:>6.1} ms  {:>5.2} GB/s",
        limit_n * 1e3,
        gb(limit_n)
    );
    println!(
        "  (b) peer, candle MmapedSafetensors               {:>6.1} ms  {:>5.2} GB/s",
        peer_t * 1e3,
        gb(peer_t)
    );
    println!(
        "  (c) model-manager load() -> Ready                {:>6.1} ms  {:>5.2} GB/s",
        ours_t * 1e3,
        gb(ours_t)
    );
    println!(
        "      same, 1 reader thread                        {:>6.1} ms  {:>5.2} GB/s",
        one_thread_t * 1e3,
        gb(one_thread_t)
    );
    println!("ratios:");
    println!(
        "  (c)/(a) throughput vs the best limit  {:.2}x",
        best_limit / ours_t
    );
    println!(
        "  (c)/(a) vs the 1-thread limit         {:.2}x",
        limit1 / ours_t
    );
    println!(
        "  (c)/(b) throughput vs the peer        {:.2}x",
        peer_t / ours_t
    );
    println!(
        "progress + cancel checks every 4 MiB vs every 256 MiB: {:+.1}% time",
        (ours_t / checks_t - 1.0) * 100.0
    );
    let latencies: Vec<f64> = cancels.iter().map(|&(ms, _)| ms).collect();
    println!(
        "cancel -> Idle with memory released, {} cancels: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        cancels.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
    // Where the time goes: cancels that land early (little read, little to
    // free) against late ones, and the time per MiB freed.
    let split = |early: bool| -> Vec<f64> {
        cancels
            .iter()
            .filter(|&&(_, mib)| (mib < model_mib() as f64 / 2.0) == early)
            .map(|&(ms, _)| ms)
            .collect()
    };
    let (early, late) = (split(true), split(false));
    let per_mib: Vec<f64> = cancels
        .iter()
        .filter(|&&(_, mib)| mib >= 64.0)
        .map(|&(ms, mib)| ms / mib * 1e3)
        .collect();
    println!(
        "  cancels in the first half of the load: {} (p50 {:.2} ms, p99 {:.2} ms); in the second: {} (p50 {:.2} ms, p99 {:.2} ms); median {:.1} us per MiB read",
        early.len(),
        percentile(&early, 0.5),
        percentile(&early, 0.99),
        late.len(),
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        median(per_mib)
    );
    println!(
        "peak RSS during a load: {:.3}x the model's bytes + {:.1} MiB",
        (peak - before) / bytes,
        0.0f64.max((peak - before - bytes) / (1 << 20) as f64)
    );
    println!(
        "RSS after 50 load/unload cycles vs after the first: {:+.2}% ({:.1} MiB -> {:.1} MiB)",
        (fiftieth / first - 1.0) * 100.0,
        first / (1 << 20) as f64,
        fiftieth / (1 << 20) as f64
    );
}
