//! Shared helpers: models written to temp folders, and a gate that pauses the
//! loader at a chosen chunk so cancel tests are deterministic.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use model_manager::candle_core::{Device, Tensor};
use model_manager::Progress;
use tokio::sync::watch;

/// The process's resident memory (`VmRSS`), in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap()
}

/// Write `model.safetensors` (+ `config.json` with `sample_size`) into
/// `dir/name`: `tensors` f32 tensors of `elems` elements each, whose values
/// encode (seed, tensor index, element index) so a reader can verify them.
pub fn write_model(dir: &Path, name: &str, seed: u32, tensors: usize, elems: usize) -> PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    let mut map = HashMap::new();
    for t in 0..tensors {
        let data: Vec<f32> = (0..elems).map(|i| value(seed, t, i)).collect();
        map.insert(
            format!("layer{t:03}.weight"),
            Tensor::from_vec(data, elems, &Device::Cpu).unwrap(),
        );
    }
    model_manager::candle_core::safetensors::save(&map, folder.join("model.safetensors")).unwrap();
    std::fs::write(
        folder.join("config.json"),
        format!(r#"{{"sample_size": {}, "seed": {seed}}}"#, 32 + seed),
    )
    .unwrap();
    folder
}

pub fn value(seed: u32, tensor: usize, i: usize) -> f32 {
    (seed as usize * 1_000_003 + tensor * 7919 + i % 4096) as f32
}

/// Check every tensor of a leased model against what `write_model` wrote.
pub fn verify(pipeline: &model_manager::TensorPipeline, seed: u32) {
    for (_, name, tensor) in pipeline.tensors() {
        let t: usize = name[5..8].parse().unwrap();
        let data = tensor.to_vec1::<f32>().unwrap();
        for (i, v) in data.iter().enumerate().step_by(997) {
            assert_eq!(*v, value(seed, t, i), "{name}[{i}] of seed {seed}");
        }
    }
}

/// Pauses the loader thread after a chosen chunk until opened.
#[derive(Default)]
pub struct Gate {
    state: Mutex<GateState>,
    cv: Condvar,
    paused: watch::Sender<u64>,
    parked: watch::Sender<bool>,
}

#[derive(Default)]
struct GateState {
    pause_at: Option<u64>,
    chunks: u64,
    /// Hold every load at its first chunk (a hook call with at most this many
    /// bytes done) until given a permit.
    hold_first: Option<u64>,
    permits: u64,
}

impl Gate {
    pub fn new() -> Arc<Self> {
        Arc::new(Gate::default())
    }

    /// The hook to pass to `on_progress`.
    pub fn hook(self: &Arc<Self>) -> impl Fn(&Progress) + Send + Sync + 'static {
        let gate = self.clone();
        move |p| {
            let mut st = gate.state.lock().unwrap();
            st.chunks += 1;
            let n = st.chunks;
            if st.hold_first.is_some_and(|first| p.bytes_done <= first) {
                gate.parked.send_replace(true);
                while st.hold_first.is_some() && st.permits == 0 {
                    st = gate.cv.wait(st).unwrap();
                }
                st.permits = st.permits.saturating_sub(1);
                gate.parked.send_replace(false);
                return;
            }
            if st.pause_at.is_some_and(|k| n >= k) {
                gate.paused.send_replace(n);
                while st.pause_at.is_some_and(|k| n >= k) {
                    st = gate.cv.wait(st).unwrap();
                }
            }
        }
    }

    /// Pause at the `k`-th chunk from now.
    pub fn close_at(&self, k: u64) {
        let mut st = self.state.lock().unwrap();
        st.pause_at = Some(st.chunks + k);
        self.paused.send_replace(0);
    }

    /// Pause at every chunk until opened.
    pub fn hold(&self) {
        self.state.lock().unwrap().pause_at = Some(0);
    }

    pub fn open(&self) {
        let mut st = self.state.lock().unwrap();
        st.pause_at = None;
        st.hold_first = None;
        self.cv.notify_all();
    }

    /// Hold every load at its first chunk (`first` bytes) until let through.
    pub fn hold_loads(&self, first: u64) {
        self.state.lock().unwrap().hold_first = Some(first);
    }

    /// Let the load held at its first chunk (or the next one) through.
    pub fn let_one_through(&self) {
        self.state.lock().unwrap().permits += 1;
        self.cv.notify_all();
    }

    /// Wait until a load is held at its first chunk.
    pub async fn parked(&self) {
        let mut rx = self.parked.subscribe();
        tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|&p| p))
            .await
            .expect("the load reached the gate")
            .unwrap();
    }

    /// Wait until the loader is parked in the gate; returns the chunk count.
    pub async fn paused(&self) -> u64 {
        let mut rx = self.paused.subscribe();
        let n = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|&n| n > 0))
            .await
            .expect("the loader reached the gate")
            .unwrap();
        *n
    }
}

/// Wait (bounded) until `f` holds.
pub async fn eventually(mut f: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition never held");
}

/// A model that reads fine but that [`Strict`] refuses to assemble: it
/// fails after the whole read, at the end of `Loading`.
pub fn write_failing_model(dir: &Path, name: &str) -> PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    let mut map = HashMap::new();
    map.insert(
        "poison".to_string(),
        Tensor::zeros(4096, model_manager::candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    model_manager::candle_core::safetensors::save(&map, folder.join("model.safetensors")).unwrap();
    std::fs::write(
        folder.join("config.json"),
        r#"{"sample_size": 8, "seed": 99}"#,
    )
    .unwrap();
    folder
}

/// A pipeline that refuses models holding a tensor named `poison`.
pub struct Strict(pub model_manager::TensorPipeline);

impl model_manager::Pipeline for Strict {
    type Options = ();

    fn assemble(
        loaded: model_manager::TensorPipeline,
        _: &model_manager::Assembly<'_, ()>,
    ) -> model_manager::Result<Self> {
        if loaded.tensor("poison").is_some() {
            return Err(model_manager::Error::Assemble("poisoned model".into()));
        }
        Ok(Strict(loaded))
    }
}

/// The share of `path`'s pages in the page cache (`mincore` of every
/// page).
#[cfg(target_os = "linux")]
pub fn cached(path: &Path) -> f64 {
    let file = std::fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    // SAFETY: a read-only mapping of the whole file, unmapped below; mincore
    // only reads the page table; `pages` has a byte per page.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
        );
        assert_ne!(map, libc::MAP_FAILED);
        let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
        let mut pages = vec![0u8; len.div_ceil(page)];
        assert_eq!(libc::mincore(map, len, pages.as_mut_ptr()), 0);
        libc::munmap(map, len);
        pages.iter().filter(|&&b| b & 1 != 0).count() as f64 / pages.len() as f64
    }
}

/// Evict `path` from the page cache (synced first: the advice cannot drop
/// dirty pages).
#[cfg(target_os = "linux")]
pub fn evict(path: &Path) {
    let file = std::fs::File::open(path).unwrap();
    file.sync_data().unwrap();
    // SAFETY: a valid descriptor; advice only.
    unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
            0,
            libc::POSIX_FADV_DONTNEED,
        )
    };
}
