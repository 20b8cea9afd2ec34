//! Cancel latency: from `cancel()` to the load's handle resolving
//! `Cancelled`, with the manager `Idle` and every byte it read freed, for
//! cancels at random points of a load of a file in the page cache. In one
//! run, two machine states:
//!
//! - **free RAM**: the machine as found;
//! - **page cache full**: the bench first reads a sparse filler file as
//!   large as the free memory (no disk space used: its holes are read as
//!   zeros into the page cache), as on a desktop that has run for hours,
//!   where every fresh page of a load is reclaimed from the page cache.
//!
//! Per state: p50, p99 and max, split by the half of the load the cancel
//! landed in (what is left to free grows with what was read).
//!
//! ```sh
//! cargo bench --bench cancel                 # 1 GiB, 100 cancels per state
//! MM_BENCH_MIB=256 MM_BENCH_CANCELS=50 cargo bench --bench cancel
//! MM_BENCH_FILL=0 cargo bench --bench cancel # the free-RAM state only
//! MM_BENCH_TRACE=1 cargo bench --bench cancel # each cancel's start, end
//!                                            # (unix seconds) and latency
//! ```
//!
//! Linux only (the filled state reads `/proc/meminfo`).

use std::path::PathBuf;
use std::time::Instant;

use model_manager::ModelManager;

mod support;

use support::{
    cancel_latency, fill_page_cache, median, meminfo, percentile, read_all, write_model,
};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn report(state: &str, mib: usize, cancels: &[(f64, f64)]) {
    let all: Vec<f64> = cancels.iter().map(|c| c.0).collect();
    let half = |early: bool| -> Vec<f64> {
        cancels
            .iter()
            .filter(|c| (c.1 < mib as f64 / 2.0) == early)
            .map(|c| c.0)
            .collect()
    };
    let (early, late) = (half(true), half(false));
    println!(
        "{state:<16} {} cancels: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms | first half: {} (p50 {:.2}, p99 {:.2}) | second half: {} (p50 {:.2}, p99 {:.2})",
        all.len(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        percentile(&all, 1.0),
        early.len(),
        percentile(&early, 0.5),
        percentile(&early, 0.99),
        late.len(),
        percentile(&late, 0.5),
        percentile(&late, 0.99),
    );
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        // `cargo test --benches`: nothing to check here.
        return;
    }
    let mib = env_usize("MM_BENCH_MIB", 1024);
    let cancels = env_usize("MM_BENCH_CANCELS", 100);
    let dir = PathBuf::from("target/bench-cancel");
    std::fs::create_dir_all(&dir).unwrap();
    let path = write_model(&dir.join(format!("model-{mib}.safetensors")), mib);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut states = vec!["free RAM"];
    if env_usize("MM_BENCH_FILL", 1) != 0 {
        states.push("page cache full");
    }
    println!(
        "cancel -> Idle with every byte freed, {mib} MiB model in the page cache, {} reader threads",
        model_manager::default_read_threads()
    );
    for state in states {
        let filler = (state == "page cache full").then(|| fill_page_cache(&dir));
        read_all(&path);
        let (free, cached) = (meminfo("MemFree:"), meminfo("Cached:"));
        // How long a whole load takes in this state.
        let load_secs = rt.block_on(async {
            let manager = ModelManager::new().unwrap();
            let mut times = Vec::new();
            for _ in 0..3 {
                let t = Instant::now();
                manager.load(path.as_path()).unwrap().await.unwrap();
                times.push(t.elapsed().as_secs_f64());
                manager.unload().await.unwrap();
            }
            manager.shutdown().await;
            median(times)
        });
        let measured = rt.block_on(cancel_latency(&path, load_secs, cancels));
        println!(
            "({state}: {:.1} GiB free, {:.1} GiB cached before; a load takes {:.0} ms)",
            free as f64 / (1u64 << 30) as f64,
            cached as f64 / (1u64 << 30) as f64,
            load_secs * 1e3
        );
        report(state, mib, &measured);
        if let Some(filler) = filler {
            std::fs::remove_file(filler).unwrap();
        }
    }
}
