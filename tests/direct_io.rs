//! Direct reads (`PageCache::Bypass`): every byte lands where a buffered
//! read puts it, whatever the file's layout (headers of every length, so
//! data starting anywhere within a block; mixed dtypes, whose buffers do
//! not line up with the file; tensors smaller than a block; empty ones),
//! the chunk size and the thread count; a truncated file fails as it does
//! buffered; and a cold file read directly is not left in the page cache.
//!
//! On a file system that refuses direct I/O, `Bypass` reads as `Drop`
//! does: the data checks hold there too.
#![cfg(target_os = "linux")]

mod common;

use std::path::{Path, PathBuf};

use common::{cached, evict};
use model_manager::candle_core::DType;
use model_manager::{Error, ModelManager, PageCache};
use rand::{Rng, SeedableRng};

/// The dtypes written, with their safetensors names and sizes.
const DTYPES: [(&str, DType, usize); 5] = [
    ("F32", DType::F32, 4),
    ("F16", DType::F16, 2),
    ("BF16", DType::BF16, 2),
    ("U8", DType::U8, 1),
    ("I64", DType::I64, 8),
];

/// Element `i` of tensor `t`: a small integer, exact in every dtype.
fn value(t: usize, i: usize) -> f64 {
    ((t * 31 + i * 7) % 251) as f64
}

fn encode(dtype: DType, v: f64, out: &mut Vec<u8>) {
    match dtype {
        DType::F32 => out.extend((v as f32).to_le_bytes()),
        DType::F16 => out.extend(half::f16::from_f64(v).to_le_bytes()),
        DType::BF16 => out.extend(half::bf16::from_f64(v).to_le_bytes()),
        DType::U8 => out.push(v as u8),
        DType::I64 => out.extend((v as i64).to_le_bytes()),
        _ => unreachable!(),
    }
}

/// A safetensors file written by hand: `tensors` of (dtype index, elements)
/// and `pad` spaces in the header, so that the data starts at any offset.
fn write(path: &Path, tensors: &[(usize, usize)], pad: usize) {
    let (mut header, mut data) = (serde_json::Map::new(), Vec::new());
    for (t, &(d, n)) in tensors.iter().enumerate() {
        let (name, dtype, _) = DTYPES[d];
        let start = data.len();
        for i in 0..n {
            encode(dtype, value(t, i), &mut data);
        }
        header.insert(
            format!("t{t:03}"),
            serde_json::json!({"dtype": name, "shape": [n], "data_offsets": [start, data.len()]}),
        );
    }
    let mut json = serde_json::to_vec(&header).unwrap();
    json.extend(std::iter::repeat_n(b' ', pad));
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend(json);
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

async fn load_and_check(path: &Path, tensors: &[(usize, usize)], chunk: usize, threads: usize) {
    let manager = ModelManager::builder()
        .page_cache(PageCache::Bypass)
        .chunk_size(chunk)
        .read_threads(threads)
        .build()
        .unwrap();
    manager.load(path).unwrap().await.unwrap();
    {
        let lease = manager.acquire().unwrap();
        for (t, &(d, n)) in tensors.iter().enumerate() {
            let tensor = lease.tensor(&format!("t{t:03}")).unwrap();
            assert_eq!(tensor.dtype(), DTYPES[d].1);
            let got = tensor
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            assert_eq!(got.len(), n);
            for (i, v) in got.iter().enumerate() {
                assert_eq!(
                    *v,
                    value(t, i),
                    "t{t:03}[{i}] ({:?}, {n} elements), chunk {chunk}, {threads} threads",
                    DTYPES[d].1
                );
            }
        }
    }
    manager.unload().await.unwrap();
    assert_eq!(manager.resident_bytes(), 0);
    manager.shutdown().await;
}

fn dir() -> tempfile::TempDir {
    // On disk where the build is (the temp folder may be tmpfs).
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// Whether files in `dir` can be read with `O_DIRECT` (else `Bypass` reads
/// as `Drop` does, and a test of the direct path says it is skipped).
fn direct_io_works(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join("probe");
    std::fs::write(&probe, vec![1u8; 8192]).unwrap();
    // As the library probes: an O_DIRECT open, then one aligned block read.
    let works = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .and_then(|file| {
            let layout = std::alloc::Layout::from_size_align(4096, 4096).unwrap();
            // SAFETY: a non-zero size; freed below with the same layout.
            let block = unsafe { std::alloc::alloc_zeroed(layout) };
            assert!(!block.is_null());
            // SAFETY: `block` is 4096 initialised bytes, owned here.
            let slice = unsafe { std::slice::from_raw_parts_mut(block, 4096) };
            let read = std::os::unix::fs::FileExt::read_at(&file, slice, 0);
            // SAFETY: allocated above with this layout, freed once.
            unsafe { std::alloc::dealloc(block, layout) };
            read
        })
        .is_ok();
    if !works {
        eprintln!(
            "skipped: {} refuses direct I/O, so Bypass reads as Drop there",
            dir.display()
        );
    }
    works
}

#[tokio::test]
async fn every_layout_reads_the_same_directly() {
    let dir = dir();
    if !direct_io_works(dir.path()) {
        return;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_d1ec);
    for case in 0..40 {
        let count = rng.random_range(1..12);
        let mixed = case % 2 == 0;
        let one = rng.random_range(0..DTYPES.len());
        let tensors: Vec<(usize, usize)> = (0..count)
            .map(|_| {
                let d = if mixed {
                    rng.random_range(0..DTYPES.len())
                } else {
                    one
                };
                // Mostly small (under a block), some across many blocks.
                let n = match rng.random_range(0..4) {
                    0 => 0,
                    1 => rng.random_range(1..300),
                    2 => rng.random_range(300..5000),
                    _ => rng.random_range(5000..200_000),
                };
                (d, n)
            })
            .collect();
        let pad = rng.random_range(0..9000);
        let path: PathBuf = dir.path().join(format!("case{case}.safetensors"));
        write(&path, &tensors, pad);
        evict(&path);
        let chunk = [1000, 4096, 65_536, 4 << 20][rng.random_range(0..4)];
        let threads = rng.random_range(1..4);
        load_and_check(&path, &tensors, chunk, threads).await;
    }
}

#[tokio::test]
async fn a_truncated_file_fails_as_it_does_buffered() {
    let dir = dir();
    let path = dir.path().join("cut.safetensors");
    write(&path, &[(0, 100_000), (0, 100_000)], 3);
    let len = std::fs::metadata(&path).unwrap().len();
    // Cut inside the last tensor, off any block boundary.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 1234)
        .unwrap();
    evict(&path);
    for policy in [PageCache::Bypass, PageCache::Keep] {
        let manager = ModelManager::builder().page_cache(policy).build().unwrap();
        let outcome = manager.load(&path).unwrap().await;
        match outcome {
            Err(Error::InvalidModel { problem, .. }) => {
                assert!(problem.contains("truncated"), "{policy:?}: {problem}")
            }
            other => panic!("{policy:?}: expected a truncated-file error, got {other:?}"),
        }
        assert_eq!(manager.resident_bytes(), 0);
        manager.shutdown().await;
    }
}

#[tokio::test]
async fn a_direct_load_adds_nothing_to_the_page_cache() {
    let dir = dir();
    if !direct_io_works(dir.path()) {
        return;
    }
    let path = dir.path().join("big.safetensors");
    let tensors = [(0, 4 << 20), (0, 4 << 20)]; // 32 MiB
    write(&path, &tensors, 0);
    evict(&path);
    if cached(&path) > 0.05 {
        eprintln!(
            "skipped: this file system keeps the pages of {} whatever one advises",
            path.display()
        );
        return;
    }
    let manager = ModelManager::builder()
        .page_cache(PageCache::Bypass)
        .build()
        .unwrap();
    manager.load(&path).unwrap().await.unwrap();
    // Only the header was read through the cache.
    let share = cached(&path);
    assert!(
        share < 0.01,
        "{share:.3} of the file cached after a direct load"
    );
    manager.shutdown().await;
}

#[tokio::test]
async fn the_budget_counts_the_direct_reads_slack() {
    let dir = dir();
    let path = dir.path().join("m.safetensors");
    write(&path, &[(0, 1 << 20)], 0); // 4 MiB of f32
    let bytes = 4u64 << 20;
    // Exactly the tensors' bytes: direct reads need a block more, which
    // the budget check sees before anything is read.
    let manager = ModelManager::builder()
        .page_cache(PageCache::Bypass)
        .memory_budget(bytes)
        .build()
        .unwrap();
    let err = manager.load(&path).unwrap().await.unwrap_err();
    assert_eq!(
        err.code(),
        model_manager::ErrorCode::InsufficientMemory,
        "{err}"
    );
    assert_eq!(manager.resident_bytes(), 0);
    manager.shutdown().await;
    // A block more fits, and what the load holds stays within it.
    let manager = ModelManager::builder()
        .page_cache(PageCache::Bypass)
        .memory_budget(bytes + 4096)
        .build()
        .unwrap();
    manager.load(&path).unwrap().await.unwrap();
    assert!(manager.resident_bytes() <= bytes + 4096);
    manager.shutdown().await;
}
