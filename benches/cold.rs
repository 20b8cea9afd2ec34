//! Cold loads: every load reads a file whose pages were evicted from the
//! page cache first, as after a reboot or for a model larger than the free
//! RAM. In one run, per file size:
//!
//! - model-manager, from `load()` to `Ready`, in a fresh process each time
//!   (its peak RSS is the process's): by default (`PageCache::Auto`: a
//!   buffered read that drops what it read), and with direct I/O
//!   (`PageCache::Bypass`);
//! - the disk's limit, measured by `fio` on the same file with the
//!   loader's thread count and chunk size: direct (`O_DIRECT`) and
//!   buffered sequential reads;
//! - the peers: candle's `MmapedSafetensors` loading every tensor onto the
//!   CPU, and Python's `safetensors.numpy.load_file` with every page
//!   touched (when a Python with `safetensors` and `numpy` is found:
//!   `MM_BENCH_PYTHON`, else `target/python/venv/bin/python`, else
//!   `python3`);
//! - how much of the file the page cache holds during each load (the most
//!   seen, sampled every 20 ms) and after it.
//!
//! ```sh
//! scripts/bench-cold.sh                    # installs fio if missing, then:
//! cargo bench --bench cold                 # 1 GiB and 4 GiB, 3 rounds
//! MM_BENCH_COLD_MIB=256 MM_BENCH_ROUNDS=5 cargo bench --bench cold
//! ```
//!
//! Pages are evicted with `posix_fadvise(POSIX_FADV_DONTNEED)`, after
//! `drop_caches` when run as root; the share still cached is printed
//! before each load. Linux only.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use model_manager::{ModelManager, PageCache, DEFAULT_CHUNK_SIZE};

mod support;

use support::{median, run_child, status_kib, write_model};

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Evict `path`'s pages (and, as root, the whole page cache's).
fn evict(path: &Path) {
    if is_root() {
        // SAFETY: sync has no preconditions.
        unsafe { libc::sync() };
        let _ = std::fs::write("/proc/sys/vm/drop_caches", "1");
    }
    let file = std::fs::File::open(path).unwrap();
    // Dirty pages (a file just written) are not dropped: write them first.
    file.sync_data().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    // SAFETY: a valid descriptor; advice only.
    unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// The share of `path`'s pages in the page cache (`mincore` of a mapping).
fn cached(path: &Path) -> f64 {
    let file = std::fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    // SAFETY: a read-only shared mapping of the whole file, unmapped below;
    // mincore only reads the page table.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        );
        assert_ne!(map, libc::MAP_FAILED);
        let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
        let mut vec = vec![0u8; len.div_ceil(page)];
        assert_eq!(libc::mincore(map, len, vec.as_mut_ptr()), 0);
        libc::munmap(map, len);
        vec.iter().filter(|&&b| b & 1 != 0).count() as f64 / vec.len() as f64
    }
}

/// In a child process: one load (model-manager or candle), printing its
/// seconds and the process's peak RSS in KiB.
fn child(mode: &str, path: &Path) {
    let t = Instant::now();
    match mode {
        "model-manager" | "model-manager bypass" => {
            let policy = if mode == "model-manager" {
                PageCache::Auto
            } else {
                PageCache::Bypass
            };
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let manager = ModelManager::builder().page_cache(policy).build().unwrap();
                manager.load(path).unwrap().await.unwrap();
                let secs = t.elapsed().as_secs_f64();
                println!("{secs} {}", status_kib("VmHWM:"));
                manager.shutdown().await;
            });
        }
        _ => {
            // SAFETY: the benchmark's own file, not modified while mapped.
            let st =
                unsafe { model_manager::candle_core::safetensors::MmapedSafetensors::new(path) }
                    .unwrap();
            let tensors: Vec<_> = st
                .tensors()
                .iter()
                .map(|(name, _)| {
                    st.load(name, &model_manager::candle_core::Device::Cpu)
                        .unwrap()
                })
                .collect();
            let secs = t.elapsed().as_secs_f64();
            println!("{secs} {}", status_kib("VmHWM:"));
            drop(tensors);
        }
    }
}

/// A cold run of `mode` in a fresh process: seconds, peak RSS in MiB, the
/// share of the file cached before, the most cached while it ran (sampled
/// every 20 ms), and the share cached after.
fn cold(mode: &str, path: &Path) -> (f64, f64, f64, f64, f64) {
    evict(path);
    let before = cached(path);
    let done = std::sync::atomic::AtomicBool::new(false);
    let (v, during) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut most = 0.0f64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(cached(path));
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            most
        });
        let v = run_child(mode, path);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (v, sampler.join().unwrap())
    });
    let (secs, hwm) = (v[0], v[1]);
    (secs, hwm / 1024.0, before, during, cached(path))
}

fn python() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("MM_BENCH_PYTHON").map(PathBuf::from),
        Some(PathBuf::from("target/python/venv/bin/python")),
        Some(PathBuf::from("python3")),
    ];
    candidates.into_iter().flatten().find(|p| {
        Command::new(p)
            .args(["-c", "import safetensors.numpy, numpy"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Python's `safetensors.numpy.load_file`, every page touched, cold.
fn python_cold(py: &Path, path: &Path) -> f64 {
    evict(path);
    let script = "import sys, time\nimport safetensors.numpy as s\nt = time.perf_counter()\n\
                  d = s.load_file(sys.argv[1])\nfor a in d.values(): a.sum()\n\
                  print(time.perf_counter() - t)";
    let out = Command::new(py)
        .args(["-c", script])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// fio's sequential read of `path` (`direct` or buffered) by `threads`
/// jobs over disjoint parts, in bytes per second.
fn fio(path: &Path, threads: usize, direct: bool) -> Option<f64> {
    let len = std::fs::metadata(path).unwrap().len();
    let part = (len / threads as u64) / (1 << 20) * (1 << 20);
    evict(path);
    let out = Command::new("fio")
        .args([
            "--name=cold",
            "--readonly",
            "--rw=read",
            "--ioengine=psync",
            "--group_reporting",
            "--output-format=json",
        ])
        .arg(format!("--filename={}", path.display()))
        .arg(format!("--bs={DEFAULT_CHUNK_SIZE}"))
        .arg(format!("--direct={}", u8::from(direct)))
        .arg(format!("--numjobs={threads}"))
        .arg(format!("--size={part}"))
        .arg(format!("--offset_increment={part}"))
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    json["jobs"][0]["read"]["bw_bytes"].as_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1], Path::new(&args[i + 2]));
        return;
    }
    let sizes = env_list("MM_BENCH_COLD_MIB", &[1024, 4096]);
    let rounds = env_list("MM_BENCH_ROUNDS", &[3])[0].max(1);
    // fio reads with the loader's own thread count.
    let threads = model_manager::default_read_threads();
    let dir = PathBuf::from("target/bench-cold");
    std::fs::create_dir_all(&dir).unwrap();
    let py = python();
    println!(
        "cold loads: {rounds} rounds per size, {threads} threads, {} MiB chunks",
        DEFAULT_CHUNK_SIZE >> 20
    );
    if !is_root() {
        println!("(not root: eviction by posix_fadvise only)");
    }
    for mib in sizes {
        let path = dir.join(format!("model-{mib}.safetensors"));
        if std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) < (mib as u64) << 20 {
            write_model(&path, mib);
        }
        let gb = std::fs::metadata(&path).unwrap().len() as f64 / 1e9;
        let mut rows: Vec<(String, Vec<f64>, String)> = Vec::new();
        let direct: Vec<f64> = (0..rounds)
            .filter_map(|_| fio(&path, threads, true))
            .collect();
        let buffered: Vec<f64> = (0..rounds)
            .filter_map(|_| fio(&path, threads, false))
            .collect();
        let limit = median(direct.clone()).max(median(buffered.clone()));
        for mode in ["model-manager", "model-manager bypass", "candle"] {
            let runs: Vec<_> = (0..rounds).map(|_| cold(mode, &path)).collect();
            let secs: Vec<f64> = runs.iter().map(|r| r.0).collect();
            let peak = median(runs.iter().map(|r| r.1).collect());
            let before = runs.iter().map(|r| r.2).fold(0.0, f64::max);
            let during = median(runs.iter().map(|r| r.3).collect());
            let after = median(runs.iter().map(|r| r.4).collect());
            rows.push((
                mode.into(),
                secs,
                format!(
                    "peak RSS {peak:.0} MiB; of the file cached: before <= {:.1}%, \
                     at most {:.1}% during, {:.1}% after",
                    before * 100.0,
                    during * 100.0,
                    after * 100.0
                ),
            ));
        }
        if let Some(py) = &py {
            let secs = (0..rounds).map(|_| python_cold(py, &path)).collect();
            rows.push(("safetensors.numpy (touched)".into(), secs, String::new()));
        }
        println!("\n{mib} MiB ({gb:.2} GB):");
        for (name, bw) in [("fio direct", &direct), ("fio buffered", &buffered)] {
            if bw.is_empty() {
                println!(
                    "  {name:<28} (fio not found or failed: scripts/bench-cold.sh installs it)"
                );
            } else {
                println!(
                    "  {name:<28} {:.2} GB/s (median of {})",
                    median(bw.clone()) / 1e9,
                    bw.len()
                );
            }
        }
        for (name, secs, note) in rows {
            let m = median(secs.clone());
            let vs = if limit.is_finite() && limit > 0.0 {
                format!(", {:.2}x the better fio", gb * 1e9 / m / limit)
            } else {
                String::new()
            };
            println!("  {name:<28} {m:.3} s, {:.2} GB/s{vs} {note}", gb / m);
        }
    }
}
