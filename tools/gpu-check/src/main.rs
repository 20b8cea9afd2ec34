//! The device check: one binary that exercises the load path on a device
//! and prints one table (Markdown). Built with `--features cuda` it is what
//! `scripts/gpu-check.sh` runs on a GPU machine; without the feature (or
//! with `--device cpu`) it runs the same checks on the CPU, which is how the
//! test script runs it where there is no GPU.
//!
//! ```sh
//! cargo run --release -p model-manager-gpu-check -- --device cpu --model-mib 256
//! scripts/gpu-check.sh build        # here: the CUDA binary
//! scripts/gpu-check.sh run          # on the GPU machine
//! ```
//!
//! Checks (each a row; any failure makes the exit status 1):
//! - load: a model of `--model-mib` MiB loads, its bytes are intact;
//! - cancel mid-load: the load stops, `Idle` carries 0 resident bytes, and
//!   device memory is back (CUDA: within 2 MiB of before the load);
//! - 20 load / lease / matmul / unload cycles: the matmul on the device
//!   from a lease agrees with the CPU, and device memory is back within
//!   2 MiB after every unload (after one warm-up cycle, whose first matmul
//!   may allocate the BLAS library's workspace);
//! - the BERT of `examples/embed` on the device agrees with the CPU;
//! - the pool's host tier: two ids of the model under a device budget for
//!   one, five switches, each parking one and resuming the other: the data
//!   intact after every round trip, device memory back within 2 MiB once
//!   the pool is gone (simulated on the CPU, where only the data is
//!   checked).
//!
//! Figures: load throughput through the manager against (a) pinned
//! host-to-device copy bandwidth measured in the same run (CUDA) and (b)
//! candle's own `MmapedSafetensors` path to the same device; cancel
//! latency (from `cancel()` to `Idle`, memory released); park and resume
//! bandwidth against the pinned copy, and a switch through the host tier
//! against one that reloads from the page cache.

// Only part of the example's module is used here.
#[allow(dead_code)]
#[path = "../../../examples/embed/bert.rs"]
mod bert;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use model_manager::candle_core::{DType, Device, Tensor};
use model_manager::{DeviceSpec, ModelManager, ModelPool, PoolEventKind, State, TensorPipeline};

const MIB: u64 = 1 << 20;
/// How far device memory may be from its value before a load, after the
/// release: allocator granularity.
const SLACK: u64 = 2 * MIB;
/// What the first release in a process may leave besides [`SLACK`]: device
/// memory CUDA keeps once a kernel has been used (measured: 2 to 4 MiB).
const FIRST_USE: u64 = 16 * MIB;

struct Args {
    device: DeviceSpec,
    model_mib: u64,
    cycles: usize,
    dir: PathBuf,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        device: if cfg!(feature = "cuda") {
            DeviceSpec::Cuda(0)
        } else {
            DeviceSpec::Cpu
        },
        model_mib: 2048,
        cycles: 20,
        dir: std::env::temp_dir().join("mm-gpu-check"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--device" => a.device = value()?.parse().map_err(|e| format!("{e}"))?,
            "--model-mib" => a.model_mib = value()?.parse().map_err(|e| format!("{e}"))?,
            "--cycles" => a.cycles = value()?.parse().map_err(|e| format!("{e}"))?,
            "--dir" => a.dir = PathBuf::from(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

/// One row of the table.
struct Row {
    what: String,
    ok: bool,
    figure: String,
}

#[derive(Default)]
struct Table(Vec<Row>);

impl Table {
    fn row(&mut self, what: impl Into<String>, ok: bool, figure: impl Into<String>) {
        let row = Row {
            what: what.into(),
            ok,
            figure: figure.into(),
        };
        eprintln!(
            "  {} {}: {}",
            if row.ok { "ok  " } else { "FAIL" },
            row.what,
            row.figure
        );
        self.0.push(row);
    }
}

/// Tensors of 64 MiB (or fewer bytes for a small model), F16, each filled
/// from a 1 MiB pseudo-random block at an offset of its own.
const TENSOR_MIB: u64 = 64;

fn block() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..MIB)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Keep F16 values finite: clear the top exponent bit of each
            // high byte.
            (x >> 24) as u8 & 0xbf
        })
        .collect()
}

fn tensor_bytes(model_mib: u64) -> Vec<u64> {
    let total = model_mib * MIB;
    let full = total / (TENSOR_MIB * MIB);
    let mut sizes = vec![TENSOR_MIB * MIB; full as usize];
    let rest = total - full * TENSOR_MIB * MIB;
    if rest >= 2048 {
        sizes.push(rest / 2048 * 2048);
    }
    sizes
}

/// Write the model (F16 tensors of 1024 columns) unless it is there.
fn write_model(dir: &Path, model_mib: u64) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("model-{model_mib}mib.safetensors"));
    let sizes = tensor_bytes(model_mib);
    let total: u64 = sizes.iter().sum();
    let mut header = String::from("{");
    let mut offset = 0;
    for (i, bytes) in sizes.iter().enumerate() {
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"w{i}\":{{\"dtype\":\"F16\",\"shape\":[{},1024],\"data_offsets\":[{offset},{}]}}",
            bytes / 2048,
            offset + bytes
        ));
        offset += bytes;
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    // A file of exactly this size was written by this function (written
    // under another name, then renamed): reuse it.
    let size = 8 + header.len() as u64 + total;
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == size) {
        return Ok(path);
    }
    let tmp = path.with_extension(format!("partial-{}", std::process::id()));
    let mut out = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(&tmp)?);
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(header.as_bytes())?;
    let block = block();
    for (i, &bytes) in sizes.iter().enumerate() {
        let mut written = 0u64;
        let mut at = (i * 4099) % block.len();
        while written < bytes {
            let n = ((bytes - written) as usize).min(block.len() - at);
            out.write_all(&block[at..at + n])?;
            written += n as u64;
            at = 0;
        }
    }
    out.into_inner()?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The first `n` bytes tensor `i` must hold.
fn expected_prefix(i: usize, n: usize) -> Vec<u8> {
    let block = block();
    let at = (i * 4099) % block.len();
    block.iter().cycle().skip(at).take(n).copied().collect()
}

/// Read the whole file once, so the page cache holds it (the figures are
/// for a model in the page cache).
fn warm_page_cache(path: &Path) -> std::io::Result<()> {
    let mut f = std::fs::File::open(path)?;
    std::io::copy(&mut f, &mut std::io::sink())?;
    Ok(())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn gbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

type Manager = ModelManager<TensorPipeline>;

fn manager(device: DeviceSpec) -> model_manager::Result<Manager> {
    ModelManager::builder().device(device).build()
}

/// Device memory not back after the last release (CUDA), or resident
/// bytes (elsewhere).
fn left_after_release(m: &Manager) -> (u64, String) {
    let snap = m.snapshot();
    match snap.device_memory {
        Some(d) => {
            let short = d.shortfall().unwrap_or(u64::MAX);
            (
                short.max(snap.resident_bytes),
                format!(
                    "{} MiB free before the load, {} MiB after the release",
                    d.free_before_load / MIB,
                    d.free_after_release.unwrap_or(0) / MIB
                ),
            )
        }
        None => (snap.resident_bytes, "resident bytes".into()),
    }
}

async fn check_load(table: &mut Table, m: &Manager, path: &Path, model_mib: u64) -> bool {
    let started = Instant::now();
    let outcome = match m.load(path) {
        Ok(handle) => handle.await,
        Err(e) => Err(e),
    };
    let secs = started.elapsed().as_secs_f64();
    let Ok(_) = outcome else {
        table.row("load", false, format!("{outcome:?}"));
        return false;
    };
    let lease = match m.acquire() {
        Ok(l) => l,
        Err(e) => {
            table.row("load", false, format!("acquire: {e}"));
            return false;
        }
    };
    let intact = intact(&lease, &lease_device(m), model_mib);
    drop(lease);
    table.row(
        "load: every byte intact, on the device",
        intact,
        format!("{model_mib} MiB in {:.1} ms", secs * 1e3),
    );
    let unloaded = m.unload().await.is_ok();
    let (left, how) = left_after_release(m);
    // The first release in the process also pays for what CUDA sets up on
    // first use (the kernels the check above ran are loaded into device
    // memory, and stay): a leak of the model would leave it all. The strict
    // bound applies from the next load on (the cycles below).
    table.row(
        "first unload: the model's memory back (first use of kernels aside)",
        unloaded && left <= FIRST_USE,
        format!("{} KiB not back ({how})", left / 1024),
    );
    intact && unloaded
}

/// Every byte of every tensor, copied back to the host, against the file's
/// bytes (the staging, chunking and copy offsets all show here), on
/// `device`.
fn intact(pipeline: &TensorPipeline, device: &Device, model_mib: u64) -> bool {
    let mut intact = true;
    let block = block();
    for (i, &bytes) in tensor_bytes(model_mib).iter().enumerate() {
        let Some(t) = pipeline.tensor(&format!("w{i}")) else {
            intact = false;
            continue;
        };
        intact &= t.device().same_device(device);
        let data = t
            .to_device(&Device::Cpu)
            .and_then(|r| r.flatten_all())
            .and_then(|r| r.to_vec1::<half::f16>());
        let Ok(data) = data else {
            intact = false;
            continue;
        };
        let at = (i * 4099) % block.len();
        intact &= data.len() as u64 * 2 == bytes
            && data
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .zip(block.iter().cycle().skip(at))
                .all(|(got, want)| got == *want);
    }
    intact
}

/// The pool's host tier (a CUDA pool's; simulated on the CPU, where its
/// figures mean nothing): two ids of the model under a device budget for
/// one; a switch parks one and resumes the other. Rows: data intact after
/// a park and resume, device memory back within 2 MiB once the pool is
/// gone; figures: park and resume bandwidth against the pinned copy, a
/// switch through the tier against one that reloads from the page cache.
async fn check_host_tier(
    table: &mut Table,
    figures: &mut Vec<String>,
    device: DeviceSpec,
    path: &Path,
    model_mib: u64,
    pinned: Option<f64>,
) {
    let bytes: u64 = tensor_bytes(model_mib).iter().sum();
    let on_cpu = matches!(device, DeviceSpec::Cpu);
    let label = if on_cpu {
        " (simulated on the CPU)"
    } else {
        ""
    };
    let free_before = device_free(device);
    let switches = |host: u64| async move {
        let pool = ModelPool::builder()
            .device(device)
            .memory_budget(bytes + bytes / 2)
            .host_budget(host)
            .simulate_host_tier(on_cpu && host > 0)
            .build()?;
        pool.add("a", path)?;
        pool.add("b", path)?;
        // Each event stamped as it arrives.
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorder = {
            let (log, mut events) = (log.clone(), pool.subscribe());
            tokio::spawn(async move {
                while let Ok(e) = events.recv().await {
                    if let Ok(mut log) = log.lock() {
                        log.push((Instant::now(), e));
                    }
                }
            })
        };
        drop(pool.acquire("a").await?);
        let (mut times, mut intact_all) = (Vec::new(), true);
        for id in ["b", "a", "b", "a", "b"] {
            let started = Instant::now();
            let lease = pool.acquire(id).await?;
            times.push(started.elapsed().as_secs_f64());
            let on = lease.pipeline().tensor("w0").map(|t| t.device().clone());
            intact_all &= on.as_ref().is_some_and(|d| d.is_cpu() == on_cpu)
                && intact(
                    lease.pipeline(),
                    on.as_ref().unwrap_or(&Device::Cpu),
                    model_mib,
                );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        recorder.abort();
        let stamped = log
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        // Park: Unloading (evicted) to Parked; resume: a resuming
        // version's Loading to Ready.
        let mut spans = (Vec::new(), Vec::new());
        let mut started: std::collections::HashMap<(String, &str), Instant> = Default::default();
        let mut parked = std::collections::HashSet::new();
        // Models holding a copy in host memory (parked, or back on the
        // device with their copy kept): their next park copies nothing.
        let mut kept = std::collections::HashSet::new();
        for (at, e) in stamped {
            let key = e.id.clone();
            match &e.kind {
                PoolEventKind::Unparked { .. } => {
                    // Its copy is gone: its next park copies again.
                    parked.remove(&key);
                    kept.remove(&key);
                }
                PoolEventKind::Loading { .. } if !parked.contains(&key) => {}
                PoolEventKind::Unloading { .. } => {
                    started.insert((key, "park"), at);
                }
                PoolEventKind::Parked { .. } => {
                    // Only a park with no kept copy copies.
                    let copies = kept.insert(key.clone());
                    parked.insert(key.clone());
                    if let Some(t) = started.remove(&(key, "park")) {
                        if copies {
                            spans.0.push(at.duration_since(t).as_secs_f64());
                        }
                    }
                }
                PoolEventKind::Loading { .. } => {
                    started.insert((key, "load"), at);
                }
                PoolEventKind::Ready { .. } => {
                    if let Some(t) = started.remove(&(key, "load")) {
                        spans.1.push(at.duration_since(t).as_secs_f64());
                    }
                }
                _ => {}
            }
        }
        let counters = pool.snapshot().counters;
        pool.shutdown().await;
        Ok::<_, model_manager::Error>((times, spans, intact_all, counters))
    };
    let tiered = switches(2 * bytes + bytes / 2).await;
    let reloading = switches(0).await;
    let (tiered, reloading) = match (tiered, reloading) {
        (Ok(t), Ok(r)) => (t, r),
        (t, r) => {
            table.row(
                format!("host tier{label}"),
                false,
                format!("{:?} / {:?}", t.err(), r.err()),
            );
            return;
        }
    };
    let (times, (parks, resumes), intact_all, counters) = tiered;
    table.row(
        format!("host tier{label}: data intact after park and resume"),
        intact_all && counters.parks >= 4 && counters.resumes >= 3,
        format!(
            "{} parks, {} resumes, 5 switches of {model_mib} MiB",
            counters.parks, counters.resumes
        ),
    );
    let free_after = device_free(device);
    if let (Some(before), Some(after)) = (free_before, free_after) {
        let lost = before.saturating_sub(after);
        table.row(
            format!("host tier{label}: device memory back after the pool"),
            lost <= SLACK,
            format!("{} KiB not back", lost / 1024),
        );
    }
    let switch = median(times);
    let reload = median(reloading.0);
    figures.push(format!(
        "| switch through the host tier{label} (median of 5) | {:.1} ms | {:.2} GB/s |",
        switch * 1e3,
        gbps(bytes, switch)
    ));
    figures.push(format!(
        "| switch reloading from the page cache, no tier (median of 5) | {:.1} ms | {:.2} GB/s |",
        reload * 1e3,
        gbps(bytes, reload)
    ));
    figures.push(format!(
        "| host tier vs reload{label} | {:.2}x | |",
        reload / switch
    ));
    for (what, spans) in [
        ("park (device to host, the copy made)", parks),
        ("resume (host to device)", resumes),
    ] {
        if spans.is_empty() {
            continue;
        }
        let s = median(spans);
        let vs = pinned.map_or(String::new(), |bw| {
            format!(", {:.2}x the pinned copy", gbps(bytes, s) * 1e9 / bw)
        });
        figures.push(format!(
            "| {what}{label} (median) | {:.1} ms | {:.2} GB/s{vs} |",
            s * 1e3,
            gbps(bytes, s)
        ));
    }
}

/// Free device memory (CUDA), for the host tier's release check.
#[cfg(feature = "cuda")]
fn device_free(device: DeviceSpec) -> Option<u64> {
    use model_manager::candle_core::cuda_backend::cudarc::driver::result;
    match device {
        DeviceSpec::Cuda(_) => result::mem_get_info().ok().map(|(free, _)| free as u64),
        _ => None,
    }
}

#[cfg(not(feature = "cuda"))]
fn device_free(_: DeviceSpec) -> Option<u64> {
    None
}

fn lease_device(m: &Manager) -> Device {
    m.candle_device().clone()
}

/// Cancel once the load has read something; report the latency of each
/// cancel (from `cancel()` until `Idle`, memory released).
async fn check_cancel(table: &mut Table, m: &Manager, path: &Path, tries: usize) -> Vec<f64> {
    let mut latencies = Vec::new();
    let mut all_ok = true;
    let mut worst = 0u64;
    let mut finished = 0;
    for _ in 0..tries {
        let handle = match m.load(path) {
            Ok(h) => h,
            Err(e) => {
                table.row("cancel mid-load", false, format!("load: {e}"));
                return latencies;
            }
        };
        // Wait for the first bytes.
        let deadline = Instant::now() + Duration::from_secs(30);
        while m.snapshot().progress.bytes_done == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let t = Instant::now();
        let _ = m.cancel();
        let state = m.settled().await;
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        let result = handle.await;
        // A load may finish before the cancel lands (a small model on a
        // fast machine): then it is unloaded, and counted apart.
        let cancelled = match (&result, state) {
            (Err(model_manager::Error::Cancelled), State::Idle) => true,
            (Ok(_), State::Ready) => {
                finished += 1;
                m.unload().await.is_ok()
            }
            _ => false,
        };
        let (left, _) = left_after_release(m);
        worst = worst.max(left);
        all_ok &= cancelled && m.resident_bytes() == 0 && left <= SLACK;
    }
    // At least one cancel must have landed mid-load for the row to say
    // anything.
    table.row(
        "cancel mid-load: Idle, memory back",
        all_ok && finished < tries,
        format!(
            "{} cancels mid-load ({finished} loads finished first); worst {} KiB not back; latency p50 {:.2} ms, max {:.2} ms",
            tries - finished,
            worst / 1024,
            median(latencies.clone()),
            latencies.iter().copied().fold(0.0, f64::max)
        ),
    );
    latencies
}

/// `x[..1024] @ x[..1024]^T` in F32, summed: on the lease's device.
fn matmul_sum(t: &Tensor) -> model_manager::candle_core::Result<f32> {
    let x = t.narrow(0, 0, 1024)?.to_dtype(DType::F32)?;
    x.matmul(&x.t()?)?.sum_all()?.to_scalar::<f32>()
}

async fn check_cycles(table: &mut Table, m: &Manager, path: &Path, cycles: usize) -> bool {
    let mut ok = true;
    let mut worst = 0u64;
    let mut worst_diff = 0f32;
    for cycle in 0..=cycles {
        if m.load(path).is_err() {
            ok = false;
            break;
        }
        let _ = m.settled().await;
        let Ok(lease) = m.acquire() else {
            ok = false;
            break;
        };
        let product = lease.tensor("w0").map(|t| {
            let on_device = matmul_sum(t);
            let on_cpu = t.to_device(&Device::Cpu).and_then(|c| matmul_sum(&c));
            (on_device, on_cpu)
        });
        drop(lease);
        match product {
            Some((Ok(d), Ok(c))) => {
                let diff = (d - c).abs() / c.abs().max(1.0);
                worst_diff = worst_diff.max(diff);
                ok &= diff < 1e-3;
            }
            _ => ok = false,
        }
        ok &= m.unload().await.is_ok();
        let (left, _) = left_after_release(m);
        // Cycle 0 warms up (the BLAS library's workspace, kernels).
        if cycle > 0 {
            worst = worst.max(left);
        }
    }
    table.row(
        format!("{cycles} cycles: lease matmul agrees with the CPU, memory back after each unload"),
        ok && worst <= SLACK,
        format!(
            "worst {} KiB not back; matmul relative difference {:.1e}",
            worst / 1024,
            worst_diff
        ),
    );
    ok && worst <= SLACK
}

async fn check_embedding(table: &mut Table, device: DeviceSpec, dir: &Path) -> bool {
    let folder = dir.join(format!("small-bert-{}", std::process::id()));
    if bert::write_small_bert(&folder).is_err() {
        table.row(
            "embedding on the device",
            false,
            "could not write the model",
        );
        return false;
    }
    let rows = [
        vec![bert::CLS, 4, 6, 8, 9, 10, 12, bert::SEP],
        vec![bert::CLS, 5, 7, 8, 9, 11, bert::SEP],
    ];
    let mut out = Vec::new();
    for spec in [DeviceSpec::Cpu, device] {
        let m = match ModelManager::builder()
            .device(spec)
            .pipeline::<bert::Bert>()
            .build()
        {
            Ok(m) => m,
            Err(e) => {
                table.row("embedding on the device", false, format!("{e}"));
                return false;
            }
        };
        let embedded = async {
            m.load(&folder)?.await?;
            let lease = m.acquire()?;
            let batch = bert::Batch::new(&rows, bert::PAD, &lease.model.device)?;
            let e = lease.embed(&batch)?.to_device(&Device::Cpu)?;
            Ok::<_, model_manager::Error>(e.flatten_all()?.to_vec1::<f32>()?)
        }
        .await;
        let _ = m.unload().await;
        m.shutdown().await;
        match embedded {
            Ok(v) => out.push(v),
            Err(e) => {
                table.row("embedding on the device", false, format!("{spec}: {e}"));
                return false;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&folder);
    let diff = out[0]
        .iter()
        .zip(&out[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let ok = diff < 1e-3 && out[0].len() == out[1].len();
    table.row(
        format!("BERT embedding on {device} agrees with the CPU"),
        ok,
        format!("max abs difference {diff:.1e} over {} values", out[0].len()),
    );
    ok
}

/// Through the C API, as a C host would: a manager on the device, a lease,
/// `mm_lease_tensor_on_device` for tensor `w0`; the bytes at the address it
/// gives (copied from the device on CUDA) must be the file's.
fn check_c_api(table: &mut Table, device: DeviceSpec, path: &Path) -> bool {
    use model_manager_c::*;
    use std::ffi::CString;

    let outcome = (|| -> Result<String, String> {
        let spec = CString::new(device.to_string()).map_err(|e| e.to_string())?;
        let file = CString::new(path.to_string_lossy().into_owned()).map_err(|e| e.to_string())?;
        let rc = |what: &str, r: mm_result| {
            if r == mm_result::Ok {
                Ok(())
            } else {
                Err(format!("{what}: {r:?}"))
            }
        };
        // SAFETY: every pointer passed is live for the call; the manager and
        // lease are released below whatever happens in between.
        unsafe {
            let mut options = std::mem::zeroed::<mm_manager_options>();
            rc("options", mm_manager_options_init(&mut options))?;
            options.device = spec.as_ptr();
            let mut manager = std::ptr::null_mut();
            rc("new", mm_manager_new(&options, &mut manager))?;
            let read = (|| {
                rc(
                    "load",
                    mm_manager_load(manager, file.as_ptr(), None, std::ptr::null_mut()),
                )?;
                let mut state = mm_state::Idle;
                rc(
                    "wait",
                    mm_manager_wait(manager, MM_TIMEOUT_INFINITE, &mut state),
                )?;
                let mut lease = std::ptr::null_mut();
                rc("acquire", mm_manager_acquire(manager, &mut lease))?;
                let seen = (|| {
                    let mut index = 0;
                    rc(
                        "find",
                        mm_lease_tensor_find(lease, c"w0".as_ptr(), &mut index),
                    )?;
                    let mut t = std::mem::zeroed::<mm_device_tensor>();
                    rc("on_device", mm_lease_tensor_on_device(lease, index, &mut t))?;
                    let mut bytes = vec![0u8; 2048.min(t.data_len)];
                    match t.kind {
                        mm_device_kind::Cpu => {
                            let n = bytes.len();
                            bytes.copy_from_slice(std::slice::from_raw_parts(
                                t.address as *const u8,
                                n,
                            ));
                        }
                        mm_device_kind::Cuda => copy_from_device(&mut bytes, t.ordinal, t.address)?,
                    }
                    if bytes != expected_prefix(0, bytes.len()) {
                        return Err("the bytes at the address are not the file's".to_string());
                    }
                    Ok(format!("{:?} address, {} bytes", t.kind, t.data_len))
                })();
                mm_lease_release(lease);
                seen
            })();
            let destroyed = mm_manager_destroy(manager);
            let seen = read?;
            rc("destroy", destroyed)?;
            Ok(seen)
        }
    })();
    let ok = outcome.is_ok();
    table.row(
        "C API: mm_lease_tensor_on_device gives the tensor's bytes",
        ok,
        outcome.unwrap_or_else(|e| e),
    );
    ok
}

/// Copy device memory at `address` on device `ordinal` into `bytes`
/// (CUDA), as a host using the driver API would.
#[cfg(feature = "cuda")]
fn copy_from_device(bytes: &mut [u8], ordinal: u32, address: u64) -> Result<(), String> {
    use model_manager::candle_core::cuda_backend::cudarc::driver::{result, CudaContext};
    // The device's primary context, which the manager's loads use too.
    let context = CudaContext::new(ordinal as usize).map_err(|e| e.to_string())?;
    context.bind_to_thread().map_err(|e| e.to_string())?;
    // SAFETY: `address` is a live device allocation of at least
    // `bytes.len()` bytes (the lease holds it); the copy is synchronous.
    unsafe { result::memcpy_dtoh_sync(bytes, address) }.map_err(|e| e.to_string())
}

#[cfg(not(feature = "cuda"))]
fn copy_from_device(_: &mut [u8], _: u32, _: u64) -> Result<(), String> {
    Err("a CUDA address in a build without CUDA".into())
}

/// Load time through a manager with these reader threads and chunk size
/// (median of `n`).
async fn sweep_secs(
    device: DeviceSpec,
    threads: usize,
    chunk: usize,
    path: &Path,
    n: usize,
) -> Option<f64> {
    let m = ModelManager::builder()
        .device(device)
        .read_threads(threads)
        .chunk_size(chunk)
        .build()
        .ok()?;
    let secs = manager_load_secs(&m, path, n).await;
    m.shutdown().await;
    secs
}

/// Load time through the manager (median of `n`, model in the page cache).
async fn manager_load_secs(m: &Manager, path: &Path, n: usize) -> Option<f64> {
    let mut times = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        m.load(path).ok()?.await.ok()?;
        times.push(t.elapsed().as_secs_f64());
        m.unload().await.ok()?;
    }
    Some(median(times))
}

/// candle's own path: `MmapedSafetensors`, every tensor loaded to the
/// device, then a synchronization.
fn candle_load_secs(device: &Device, path: &Path, n: usize) -> Option<f64> {
    let mut times = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        // SAFETY: the file is not modified while mapped.
        let st = unsafe { model_manager::candle_core::safetensors::MmapedSafetensors::new(path) }
            .ok()?;
        let tensors: Vec<Tensor> = st
            .tensors()
            .iter()
            .map(|(name, _)| st.load(name, device))
            .collect::<Result<_, _>>()
            .ok()?;
        device.synchronize().ok()?;
        times.push(t.elapsed().as_secs_f64());
        drop(tensors);
    }
    Some(median(times))
}

/// Pinned host-to-device copy bandwidth in bytes per second (median of 5
/// copies of 256 MiB).
#[cfg(feature = "cuda")]
fn pinned_h2d(device: &Device) -> Option<f64> {
    let Device::Cuda(dev) = device else {
        return None;
    };
    let stream = dev.cuda_stream();
    let bytes = (256 * MIB) as usize;
    // SAFETY: uninitialised memory is only copied, never interpreted.
    let mut host = unsafe { stream.context().alloc_pinned::<u8>(bytes) }.ok()?;
    host.as_mut_slice().ok()?.fill(1);
    // SAFETY: uninitialised device memory, only written by the copies.
    let mut dst = unsafe { dev.alloc::<u8>(bytes) }.ok()?;
    let mut times = Vec::new();
    for _ in 0..6 {
        let t = Instant::now();
        stream.memcpy_htod(&host, &mut dst).ok()?;
        stream.synchronize().ok()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.remove(0);
    Some(bytes as f64 / median(times))
}

#[cfg(not(feature = "cuda"))]
fn pinned_h2d(_: &Device) -> Option<f64> {
    None
}

#[tokio::main]
async fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gpu_check: {e}");
            std::process::exit(2);
        }
    };
    eprintln!(
        "gpu_check: {} MiB model on {} (cuda feature: {})",
        args.model_mib,
        args.device,
        cfg!(feature = "cuda")
    );
    let mut table = Table::default();
    let path = match write_model(&args.dir, args.model_mib) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("gpu_check: writing the model: {e}");
            std::process::exit(2);
        }
    };
    let _ = warm_page_cache(&path);
    let m = match manager(args.device) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("gpu_check: {}: {e}", args.device);
            std::process::exit(2);
        }
    };
    let bytes: u64 = tensor_bytes(args.model_mib).iter().sum();

    check_load(&mut table, &m, &path, args.model_mib).await;
    let cancels = check_cancel(&mut table, &m, &path, 10).await;
    check_cycles(&mut table, &m, &path, args.cycles).await;
    check_embedding(&mut table, args.device, &args.dir).await;
    // On a thread of its own, as a C host's: the C API's blocking calls
    // refuse to run on the async runtime's threads.
    let (c_path, c_device) = (path.clone(), args.device);
    let c_rows = std::thread::spawn(move || {
        let mut rows = Table::default();
        check_c_api(&mut rows, c_device, &c_path);
        rows
    })
    .join();
    match c_rows {
        Ok(rows) => table.0.extend(rows.0),
        Err(_) => table.row("C API", false, "the check panicked"),
    }

    let ours = manager_load_secs(&m, &path, 5).await;
    let candle = candle_load_secs(m.candle_device(), &path, 3);
    let pinned = pinned_h2d(m.candle_device());
    let mut figures = Vec::new();
    if let Some(s) = ours {
        figures.push(format!(
            "| load through the manager (defaults: {} reader threads, {} MiB chunks) | {:.1} ms | {:.2} GB/s |",
            model_manager::default_read_threads_for(args.device),
            model_manager::DEFAULT_CHUNK_SIZE >> 20,
            s * 1e3,
            gbps(bytes, s)
        ));
    }
    if let Some(s) = candle {
        figures.push(format!(
            "| candle `MmapedSafetensors` to the device | {:.1} ms | {:.2} GB/s |",
            s * 1e3,
            gbps(bytes, s)
        ));
    }
    if let Some(bw) = pinned {
        figures.push(format!(
            "| pinned host-to-device copy (256 MiB) | | {:.2} GB/s |",
            bw / 1e9
        ));
    }
    for (threads, chunk_mib) in [(2, 4), (4, 16), (8, 4), (8, 16), (16, 16)] {
        if let Some(s) = sweep_secs(args.device, threads, chunk_mib << 20, &path, 3).await {
            figures.push(format!(
                "| load, {threads} reader threads, {chunk_mib} MiB chunks | {:.1} ms | {:.2} GB/s |",
                s * 1e3,
                gbps(bytes, s)
            ));
        }
    }
    if let (Some(o), Some(c)) = (ours, candle) {
        figures.push(format!("| manager vs candle | {:.2}x | |", c / o));
    }
    check_host_tier(
        &mut table,
        &mut figures,
        args.device,
        &path,
        args.model_mib,
        pinned,
    )
    .await;
    if let (Some(o), Some(bw)) = (ours, pinned) {
        figures.push(format!(
            "| manager vs pinned copy bandwidth | {:.2}x | |",
            gbps(bytes, o) * 1e9 / bw
        ));
    }
    if !cancels.is_empty() {
        figures.push(format!(
            "| cancel latency p50 (cancel() to Idle, memory back) | {:.2} ms | |",
            median(cancels)
        ));
    }
    m.shutdown().await;

    let failed = table.0.iter().filter(|r| !r.ok).count();
    println!(
        "\n### Device check: {} MiB model on {}\n",
        args.model_mib, args.device
    );
    println!("| check | result | figure |\n|---|---|---|");
    for r in &table.0 {
        println!(
            "| {} | {} | {} |",
            r.what,
            if r.ok { "ok" } else { "**FAIL**" },
            r.figure
        );
    }
    println!("\n| figure | time (median) | throughput |\n|---|---|---|");
    for f in figures {
        println!("{f}");
    }
    println!();
    std::process::exit(i32::from(failed > 0));
}
