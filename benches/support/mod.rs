//! What the benchmarks share: a model writer, the touched-memory read
//! limit, medians, a child-process runner, cancel latency, and a page
//! cache filling the RAM (the state of a machine that has run a while).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use model_manager::candle_core::{Device, Tensor};
use model_manager::{Error, ModelManager, State, DEFAULT_CHUNK_SIZE};

/// A `mib` MiB f32 model of 16 MiB tensors (a transformer-like mix of sizes
/// would change little: the cost is per byte).
pub fn write_model(path: &Path, mib: usize) -> PathBuf {
    let elems = 4 << 20; // 16 MiB of f32
    let mut map = HashMap::new();
    for i in 0..mib / 16 {
        let t = Tensor::arange(0f32, elems as f32, &Device::Cpu).unwrap();
        map.insert(format!("layer.{i:04}.weight"), (t + i as f64).unwrap());
    }
    model_manager::candle_core::safetensors::save(&map, path).unwrap();
    path.to_path_buf()
}

pub fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

pub fn percentile(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut xs = xs.to_vec();
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[((xs.len() - 1) as f64 * p).round() as usize]
}

pub fn data_range(path: &Path) -> (u64, u64) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    (8 + n, bytes.len() as u64 - 8 - n)
}

/// (a) pread of the data section into an already-touched buffer.
pub fn limit(path: &Path, threads: usize, rounds: usize) -> Vec<f64> {
    let (start, len) = data_range(path);
    let file = std::fs::File::open(path).unwrap();
    let mut buf = vec![1u8; len as usize]; // touched
    let chunk = DEFAULT_CHUNK_SIZE;
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            let mut pieces: Vec<(u64, &mut [u8])> = buf
                .chunks_mut(chunk)
                .enumerate()
                .map(|(i, c)| (start + (i * chunk) as u64, c))
                .collect();
            let per = pieces.len().div_ceil(threads);
            std::thread::scope(|s| {
                while !pieces.is_empty() {
                    let group: Vec<_> = pieces.drain(..per.min(pieces.len())).collect();
                    let file = &file;
                    s.spawn(move || {
                        for (off, dest) in group {
                            file.read_exact_at(dest, off).unwrap();
                        }
                    });
                }
            });
            t.elapsed().as_secs_f64()
        })
        .collect()
}

/// A field of this process's `/proc/self/status`, in KiB (`VmRSS:`,
/// `VmHWM:`).
pub fn status_kib(field: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// Run this bench binary again as `--child MODE PATH` (a fresh process,
/// whose heap and peak RSS are its own) and read the numbers it prints.
pub fn run_child(mode: &str, path: &Path) -> Vec<f64> {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--child", mode])
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
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect()
}

/// `cancels` cancels at random points of the first 90% of a load of
/// `path` (which takes about `load_secs`): each one's latency in ms and
/// the MiB read when it landed.
pub async fn cancel_latency(path: &Path, load_secs: f64, cancels: usize) -> Vec<(f64, f64)> {
    let manager = ModelManager::new().unwrap();
    let mut rng_state = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::new();
    // Bounded: a load that always finishes before its cancel lands (a
    // small model, a coarse timer) ends the loop with fewer cancels.
    for _ in 0..cancels.saturating_mul(10) {
        if out.len() == cancels {
            break;
        }
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        let at = (rng_state % 1000) as f64 / 1000.0 * load_secs * 0.9;
        let handle = manager.load(path).unwrap();
        tokio::time::sleep(Duration::from_secs_f64(at)).await;
        let t = Instant::now();
        let read_mib = handle.progress().bytes_done as f64 / (1 << 20) as f64;
        if manager.cancel().is_err() {
            // Finished before the cancel: not a cancel to time.
            manager.unload().await.unwrap();
            continue;
        }
        match handle.await {
            Err(Error::Cancelled) => {}
            other => panic!("unexpected {other:?}"),
        }
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if std::env::var_os("MM_BENCH_TRACE").is_some() {
            // To line up with a system-call trace (`strace -ttt`).
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            eprintln!(
                "cancel: {:.6} .. {now:.6}: {ms:.2} ms, {read_mib:.0} MiB read",
                now - ms / 1e3
            );
        }
        assert_eq!(manager.current_state(), State::Idle);
        assert_eq!(manager.resident_bytes(), 0);
        out.push((ms, read_mib));
    }
    manager.shutdown().await;
    out
}

/// A field of `/proc/meminfo`, in bytes.
pub fn meminfo(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .unwrap()
        * 1024
}

pub fn read_all(path: &Path) {
    let mut file = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 8 << 20];
    while file.read(&mut buf).unwrap() > 0 {}
}

/// Fill the page cache: a sparse file as large as the free memory, read
/// once (its pages stay cached while the file exists). Returns its path.
pub fn fill_page_cache(dir: &Path) -> PathBuf {
    let path = dir.join("filler.sparse");
    let size = meminfo("MemFree:").saturating_sub(256 << 20);
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(size).unwrap();
    drop(file);
    read_all(&path);
    path
}
