//! The allocator that lets a pool's load reuse the memory an eviction freed
//! (`model_manager::alloc`), installed here as the test's global allocator:
//! the evicted model's pages serve the next load, and every kept byte goes
//! back to the kernel once no load waits for it.
#![cfg(target_os = "linux")]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use model_manager::alloc;
use model_manager::candle_core::Storage;
use model_manager::{Assembly, ModelPool, Pipeline, TensorPipeline};

#[global_allocator]
static ALLOC: alloc::Allocator = alloc::Allocator::new();

/// The tests share the allocator's store: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Minor page faults of the process so far: a page touched for the first
/// time is one (huge pages are off in this process, see below).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // After the command's name in parentheses: state is field 3, minflt 10.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(7).unwrap().parse().unwrap()
}

/// One fault per 4 KiB page from here on, so that faults count pages.
fn no_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and changes nothing
    // but how this process's memory is backed.
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) },
        0
    );
}

/// Where the model's tensor data starts (the buffer its tensors view).
fn data_start(pipeline: &TensorPipeline) -> usize {
    pipeline
        .tensors()
        .map(|(_, _, tensor)| {
            let (storage, _) = tensor.storage_and_layout();
            match &*storage {
                Storage::Cpu(cpu) => cpu.as_slice::<f32>().unwrap().as_ptr() as usize,
                _ => unreachable!("a CPU pool"),
            }
        })
        .min()
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Two models of 4 tensors of `elems` f32 under a budget for one.
fn two_models(dir: &Path, elems: usize) -> (ModelPool, u64) {
    let a = common::write_model(dir, "a", 1, 4, elems);
    let b = common::write_model(dir, "b", 2, 4, elems);
    let bytes = (4 * elems * 4) as u64;
    let pool = ModelPool::builder()
        .memory_budget(bytes + bytes / 2)
        .build()
        .unwrap();
    pool.add("a", a.as_path()).unwrap();
    pool.add("b", b.as_path()).unwrap();
    (pool, bytes)
}

#[test]
fn an_evicting_switch_loads_into_the_evicted_models_pages() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert!(alloc::installed());
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    no_huge_pages();
    // Tensors of 8 MiB and 4000 bytes: a buffer that is no multiple of
    // 2 MiB (huge-page advice splits its mapping in two).
    let (pool, bytes) = two_models(dir.path(), (2 << 20) + 1000);
    let pages = bytes / 4096;
    rt.block_on(async {
        for round in 0..4 {
            let (from, to, seed) = match round % 2 {
                0 => ("a", "b", 2),
                _ => ("b", "a", 1),
            };
            let evicted = {
                let lease = pool.acquire(from).await.unwrap();
                data_start(&lease)
            };
            let faults = minor_faults();
            let lease = pool.acquire(to).await.unwrap();
            let faults = minor_faults() - faults;
            // The whole file's buffer went where the evicted one was: its
            // pages, already touched, taken back as they were, not faulted
            // in again (a load into fresh memory faults every page in).
            assert_eq!(
                data_start(&lease),
                evicted,
                "round {round}: {to} reuses {from}'s memory"
            );
            assert!(
                faults < pages / 4,
                "round {round}: {faults} page faults loading {pages} pages"
            );
            // And the data is the new model's, every byte read.
            common::verify(&lease, seed);
            drop(lease);
            // The load is over: nothing stays kept.
            assert_eq!(alloc::retained_bytes(), 0);
            assert_eq!(pool.snapshot().retained_bytes, 0);
        }
        pool.shutdown().await;
    });
}

#[test]
fn a_smaller_model_takes_part_of_the_evicted_pages_and_a_larger_one_none() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    no_huge_pages();
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    // 32 MiB, then 48 MiB, under a budget for the larger alone.
    let a = common::write_model(dir.path(), "a", 1, 4, 2 << 20);
    let c = common::write_model(dir.path(), "c", 3, 6, 2 << 20);
    let pool = ModelPool::builder()
        .memory_budget(64 << 20)
        .build()
        .unwrap();
    pool.add("a", a.as_path()).unwrap();
    pool.add("c", c.as_path()).unwrap();
    rt.block_on(async {
        drop(pool.acquire("a").await.unwrap());
        // `a`'s 32 MiB cannot hold `c`'s 48: they go back to the kernel
        // before `c`'s buffer is mapped, never both held at once.
        let lease = pool.acquire("c").await.unwrap();
        assert_eq!(alloc::retained_bytes(), 0);
        common::verify(&lease, 3);
        drop(lease);
        // And back: the 48 MiB serve the 32 MiB model, the rest goes back.
        let faults = minor_faults();
        let lease = pool.acquire("a").await.unwrap();
        let faults = minor_faults() - faults;
        assert!(
            faults < 2048,
            "{faults} page faults loading 8192 kept pages"
        );
        common::verify(&lease, 1);
        drop(lease);
        assert_eq!(alloc::retained_bytes(), 0);
        pool.shutdown().await;
    });
}

/// A pipeline whose assembly fails while `FAIL` is set: its load fails
/// after every byte was read into its buffers.
struct Failing;

static FAIL: AtomicBool = AtomicBool::new(false);

impl Pipeline for Failing {
    type Options = ();

    fn assemble(loaded: TensorPipeline, _: &Assembly<'_, ()>) -> model_manager::Result<Self> {
        drop(loaded);
        match FAIL.load(Ordering::SeqCst) {
            true => Err(model_manager::Error::InvalidArgument("refused".into())),
            false => Ok(Failing),
        }
    }
}

#[test]
fn a_failed_load_after_an_eviction_gives_the_kept_pages_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let a = common::write_model(dir.path(), "a", 1, 4, 2 << 20);
    let b = common::write_model(dir.path(), "b", 2, 4, 2 << 20);
    let bytes = (4 * (2 << 20) * 4) as u64;
    let pool = ModelPool::builder()
        .memory_budget(bytes + bytes / 2)
        .pipeline::<Failing>()
        .build()
        .unwrap();
    pool.add("a", a.as_path()).unwrap();
    pool.add("b", b.as_path()).unwrap();
    rt.block_on(async {
        FAIL.store(false, Ordering::SeqCst);
        drop(pool.acquire("a").await.unwrap());
        FAIL.store(true, Ordering::SeqCst);
        pool.acquire("b").await.err().unwrap();
        // `a` was evicted for `b` (what it freed was kept for `b`, and
        // `b`'s buffers, freed when its load failed, too), and the load
        // failed after reading: what is still kept went back.
        let counters = pool.snapshot().counters;
        assert_eq!((counters.evictions, counters.failures), (1, 1));
        assert_eq!(alloc::retained_bytes(), 0);
        pool.shutdown().await;
    });
}

#[test]
fn memory_is_back_within_a_mebibyte_after_the_pool_is_done() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (pool, bytes) = two_models(dir.path(), 2 << 20);
    rt.block_on(async {
        // Warm up: runtime threads, the allocator's small heaps.
        drop(pool.acquire("a").await.unwrap());
        drop(pool.acquire("b").await.unwrap());
        pool.remove("a").await.unwrap();
        pool.remove("b").await.unwrap();
    });
    let baseline = common::rss_kib();
    rt.block_on(async {
        pool.add("a", dir.path().join("a").as_path()).unwrap();
        pool.add("b", dir.path().join("b").as_path()).unwrap();
        for id in ["a", "b", "a", "b"] {
            let lease = pool.acquire(id).await.unwrap();
            assert!(
                common::rss_kib() > baseline + bytes / 1024 / 2,
                "{id} is resident"
            );
            drop(lease);
        }
        pool.remove("a").await.unwrap();
        pool.remove("b").await.unwrap();
    });
    let after = common::rss_kib();
    assert_eq!(alloc::retained_bytes(), 0);
    assert!(
        after <= baseline + 1024,
        "resident {after} KiB after, {baseline} KiB before"
    );
    rt.block_on(pool.shutdown());
}

#[test]
fn a_block_over_several_mappings_grows_by_copy() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut v = vec![7u8; 40 << 20];
    // Split the block's mapping in three: the kernel resizes one mapping
    // only, so growing it must fall back to a copy (it aborted before).
    let middle = (v.as_mut_ptr() as usize + (8 << 20)) & !4095;
    // SAFETY: a page-aligned range inside `v`'s allocation; MADV_DONTFORK
    // changes what a fork copies, not the memory.
    let advised =
        unsafe { libc::madvise(middle as *mut libc::c_void, 4 << 20, libc::MADV_DONTFORK) };
    assert_eq!(advised, 0);
    v.reserve_exact(80 << 20);
    assert!(v.capacity() >= 120 << 20);
    assert!(v.iter().all(|&b| b == 7));
    v.resize(120 << 20, 9);
    assert_eq!((v[(40 << 20) - 1], v[40 << 20]), (7, 9));
}

#[test]
fn a_manager_loading_another_model_reuses_the_replaced_ones_pages() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    no_huge_pages();
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let elems = (2 << 20) + 1000;
    let a = common::write_model(dir.path(), "a", 1, 4, elems);
    let b = common::write_model(dir.path(), "b", 2, 4, elems);
    let pages = (4 * elems * 4 / 4096) as u64;
    rt.block_on(async {
        let manager = model_manager::ModelManager::new().unwrap();
        manager.load(a.as_path()).unwrap().await.unwrap();
        for (round, (path, seed)) in [(&b, 2), (&a, 1), (&b, 2)].into_iter().enumerate() {
            // `load` while a model is ready: the latest request wins, the
            // ready model is unloaded, the new one loaded into its pages.
            let faults = minor_faults();
            manager.load(path.as_path()).unwrap().await.unwrap();
            let faults = minor_faults() - faults;
            assert!(
                faults < pages / 4,
                "round {round}: {faults} page faults loading {pages} pages"
            );
            common::verify(&manager.acquire().unwrap(), seed);
            assert_eq!(alloc::retained_bytes(), 0);
        }
        manager.shutdown().await;
    });
}

#[test]
fn nothing_is_kept_while_the_replaced_model_is_leased_and_an_unload_keeps_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    no_huge_pages();
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let a = common::write_model(dir.path(), "a", 1, 4, 2 << 20);
    let b = common::write_model(dir.path(), "b", 2, 4, 2 << 20);
    let c = common::write_model(dir.path(), "c", 3, 4, 2 << 20);
    let pages = (4 * (2 << 20) * 4 / 4096) as u64;
    rt.block_on(async {
        let first = model_manager::ModelManager::new().unwrap();
        let second = model_manager::ModelManager::new().unwrap();
        first.load(a.as_path()).unwrap().await.unwrap();
        let lease = first.acquire().unwrap();
        // `b` waits for `a`'s lease: nothing is kept meanwhile, not even
        // what another manager frees.
        let next = first.load(b.as_path()).unwrap();
        second.load(c.as_path()).unwrap().await.unwrap();
        second.unload().await.unwrap();
        assert_eq!(alloc::retained_bytes(), 0);
        // Once the lease goes, `a`'s pages serve `b`.
        let faults = minor_faults();
        drop(lease);
        next.await.unwrap();
        let faults = minor_faults() - faults;
        assert!(
            faults < pages / 4,
            "{faults} page faults loading {pages} pages"
        );
        common::verify(&first.acquire().unwrap(), 2);
        assert_eq!(alloc::retained_bytes(), 0);
        // An explicit unload keeps nothing.
        first.unload().await.unwrap();
        assert_eq!(alloc::retained_bytes(), 0);
        first.shutdown().await;
        second.shutdown().await;
    });
}

#[test]
fn large_blocks_survive_realloc_and_zeroed_allocation() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Grow a vector across the threshold and far beyond: contents kept.
    let mut v: Vec<u32> = Vec::new();
    for i in 0..(24u32 << 20) {
        v.push(i);
    }
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
    v.truncate(1000);
    v.shrink_to_fit();
    assert_eq!(v[999], 999);
    drop(v);
    // Zeroed allocations are zero, whatever was freed before.
    let big = vec![0xABu8; 64 << 20];
    drop(big);
    let zeroed = vec![0u8; 64 << 20];
    assert!(zeroed.iter().all(|&b| b == 0));
}
