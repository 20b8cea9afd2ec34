//! One source of truth, and honest memory figures: what a snapshot says is
//! true at the instant it is published.
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::write_model;
use model_manager::candle_core::{DType, Device, Tensor};
use model_manager::{Error, ModelManager, State};

/// Every `Ready` event, seen by a subscriber on another worker thread while
/// the loader is still returning from its publish, means `acquire()` works
/// and `sample_size()` is the model's. Fails when `Ready` is published
/// before the pipeline is installed (the stale-state bug).
#[test]
fn every_ready_event_can_be_leased() {
    const CYCLES: u64 = 10_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let a = write_model(dir.path(), "a", 1, 1, 16);
        let manager = Arc::new(
            ModelManager::builder()
                .return_memory_to_os(false)
                .build()
                .unwrap(),
        );
        let mut events = manager.subscribe();
        let checked = Arc::new(tokio::sync::Semaphore::new(0));
        let readies = Arc::new(AtomicU64::new(0));
        let checker = {
            let (manager, checked, readies) = (manager.clone(), checked.clone(), readies.clone());
            tokio::spawn(async move {
                while let Ok(event) = events.recv().await {
                    if event.to != State::Ready {
                        continue;
                    }
                    let lease = manager.acquire();
                    assert!(lease.is_ok(), "Ready published, acquire refused: {lease:?}");
                    assert_eq!(manager.sample_size(), Some(33));
                    assert!(manager.info().is_some());
                    assert_eq!(event.snapshot.resident_bytes, 16 * 4);
                    drop(lease);
                    readies.fetch_add(1, Ordering::Relaxed);
                    checked.add_permits(1);
                }
            })
        };
        for _ in 0..CYCLES {
            manager.load(&*a).unwrap().await.unwrap();
            // Unload only once the subscriber has checked this Ready.
            checked.acquire().await.unwrap().forget();
            manager.unload().await.unwrap();
        }
        assert_eq!(readies.load(Ordering::Relaxed), CYCLES);
        manager.shutdown().await;
        drop(manager);
        let _ = tokio::time::timeout(Duration::from_secs(5), checker).await;
    });
}

/// `Idle` and `Failed` are published only once the memory is back: after a
/// cancel or an unload mid-load, `settled()` and every such event say 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_means_nothing_is_held() {
    let dir = tempfile::tempdir().unwrap();
    // 8 MiB in 64 KiB chunks.
    let a = write_model(dir.path(), "a", 1, 8, 256 * 1024);
    let manager = ModelManager::builder()
        .chunk_size(64 * 1024)
        .build()
        .unwrap();
    let mut events = manager.subscribe();
    for i in 0..60u32 {
        let handle = manager.load(&*a).unwrap();
        let mut progress = handle.progress_updates();
        // Stop at a different point each time: before, during, after reading.
        let wait_bytes = u64::from(i % 12) * 768 * 1024;
        while progress.borrow_and_update().bytes_done < wait_bytes {
            if progress.changed().await.is_err() {
                break;
            }
        }
        if i % 2 == 0 {
            let _ = manager.cancel();
        } else {
            let _ = manager.unload().await;
        }
        let state = manager.settled().await;
        let snapshot = manager.snapshot();
        assert_eq!(snapshot.state, state);
        if state != State::Ready {
            assert_eq!(snapshot.resident_bytes, 0, "{state} with memory held");
        }
        if state == State::Ready {
            manager.unload().await.unwrap();
        }
        assert_eq!(manager.resident_bytes(), 0);
        let _ = handle.await;
    }
    while let Ok(event) = events.try_recv() {
        if matches!(event.to, State::Idle | State::Failed) {
            assert_eq!(event.snapshot.resident_bytes, 0, "{event:?}");
        }
    }
    manager.shutdown().await;
}

/// Write `tensors` f32 tensors of `elems` elements into one file.
fn write_f32(dir: &std::path::Path, tensors: usize, elems: usize) -> std::path::PathBuf {
    let path = dir.join("f32.safetensors");
    let map: std::collections::HashMap<String, Tensor> = (0..tensors)
        .map(|t| {
            let data: Vec<f32> = (0..elems).map(|i| ((t * 7 + i) % 1024) as f32).collect();
            (
                format!("t{t}"),
                Tensor::from_vec(data, elems, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    model_manager::candle_core::safetensors::save(&map, &path).unwrap();
    path
}

/// The budget covers the true peak of a converting load: the file's F32
/// buffer plus the F16 tensors made from it (1.5x the F32 bytes, 3x the
/// final F16 figure), and `resident_bytes` never exceeds it.
#[tokio::test]
async fn a_converting_load_stays_within_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (tensors, elems) = (8usize, 64 * 1024usize);
    let path = write_f32(dir.path(), tensors, elems);
    let stored = (tensors * elems * 4) as u64;
    let converted = stored / 2;
    let peak = stored + converted;

    // A budget for the final figure alone is refused before allocating.
    for budget in [converted, peak - 1] {
        let manager = ModelManager::builder()
            .dtype(DType::F16)
            .memory_budget(budget)
            .build()
            .unwrap();
        let err = manager.load(&*path).unwrap().await.unwrap_err();
        assert_eq!(
            err,
            Error::InsufficientMemory {
                needed: peak,
                available: budget,
                pinned: 0,
            }
        );
        assert_eq!(manager.resident_bytes(), 0);
        manager.shutdown().await;
    }

    // With the peak as the budget it loads, and never holds more.
    let max_seen = Arc::new(AtomicU64::new(0));
    // Sampled at every chunk on the loader thread (deterministic) and by a
    // spinning thread (which also catches the conversion after the reads).
    let this: Arc<std::sync::OnceLock<std::sync::Weak<ModelManager>>> = Arc::default();
    let manager = Arc::new(
        ModelManager::builder()
            .dtype(DType::F16)
            .memory_budget(peak)
            .chunk_size(64 * 1024)
            .on_progress({
                let (this, max_seen) = (this.clone(), max_seen.clone());
                move |_| {
                    if let Some(manager) = this.get().and_then(std::sync::Weak::upgrade) {
                        max_seen.fetch_max(manager.resident_bytes(), Ordering::Relaxed);
                    }
                }
            })
            .build()
            .unwrap(),
    );
    this.set(Arc::downgrade(&manager)).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (manager, max_seen, stop) = (manager.clone(), max_seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                max_seen.fetch_max(manager.resident_bytes(), Ordering::Relaxed);
                std::hint::spin_loop();
            }
        })
    };
    manager.load(&*path).unwrap().await.unwrap();
    assert_eq!(manager.resident_bytes(), converted, "F32 buffer freed");
    let lease = manager.acquire().unwrap();
    let t = lease.tensor("t3").unwrap();
    assert_eq!(t.dtype(), DType::F16);
    assert_eq!(
        t.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap()[5],
        26.0
    );
    drop(lease);
    manager.shutdown().await;
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let max = max_seen.load(Ordering::Relaxed);
    assert!(max <= peak, "resident {max} over the budget {peak}");
    assert!(max > converted, "the sampler saw the peak build up ({max})");
}
