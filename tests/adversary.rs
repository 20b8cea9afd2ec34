//! An adversary's reproducers, each of a bug found in review and fixed:
//! torn snapshots, a reader keeping a model alive past `Idle`, a panicking
//! hook, a runtime dropped in async code, duplicate tensors, huge headers,
//! stale late progress streams; plus a hammer of every command from threads.
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::write_model;
use model_manager::{Error, ModelManager, State};

/// Shutdown before any load, then a (refused) load starts the owned runtime
/// anyway; dropping the manager inside an async context then drops a tokio
/// Runtime there, which tokio forbids (panic).
#[tokio::test]
async fn r1_drop_after_shutdown_and_refused_load_inside_async() {
    let manager = ModelManager::new().unwrap();
    manager.shutdown().await;
    assert_eq!(
        manager.load("/nonexistent.safetensors").unwrap_err(),
        Error::ShutDown
    );
    drop(manager); // must not panic
}

/// Same, through shutdown_blocking (outside a runtime), then drop inside one.
#[test]
fn r1b_shutdown_blocking_then_refused_load_then_drop_in_async() {
    let manager = ModelManager::new().unwrap();
    manager.shutdown_blocking().unwrap();
    assert_eq!(
        manager.load("/nonexistent.safetensors").unwrap_err(),
        Error::ShutDown
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async move { drop(manager) });
}

/// `snapshot()` reads the state and the memory counter at two instants: an
/// `Idle` snapshot may carry bytes of the *next* load.
#[test]
fn r2_idle_snapshot_with_resident_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 4, 64 * 1024);
    let manager = Arc::new(
        ModelManager::builder()
            .return_memory_to_os(false)
            .read_threads(1)
            .build()
            .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(AtomicU64::new(0));
    let nr: usize = std::env::var("R2_READERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let readers: Vec<_> = (0..nr)
        .map(|_| {
            let (m, stop, bad, seen) = (manager.clone(), stop.clone(), bad.clone(), seen.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let s = m.snapshot();
                    if matches!(s.state, State::Idle | State::Failed) {
                        seen.fetch_add(1, Ordering::Relaxed);
                        if s.resident_bytes > 0 {
                            bad.fetch_add(1, Ordering::Relaxed);
                            eprintln!(
                                "torn: {:?} gen {} resident {}",
                                s.state, s.generation, s.resident_bytes
                            );
                        }
                    }
                }
            })
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let mut cycles = 0;
    while started.elapsed() < Duration::from_secs(3) && bad.load(Ordering::Relaxed) == 0 {
        rt.block_on(async {
            manager.load(&*a).unwrap().await.unwrap();
            manager.unload().await.unwrap();
        });
        cycles += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    eprintln!(
        "cycles {cycles}, idle snapshots seen {}",
        seen.load(Ordering::Relaxed)
    );
    manager.shutdown_blocking().unwrap();
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "Idle/Failed snapshot with resident bytes"
    );
}

/// A progress hook that panics: the load should end (Failed, or at least a
/// truthful error); see what it resolves to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_panicking_hook() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 4, 64 * 1024);
    let manager = ModelManager::builder()
        .chunk_size(16 * 1024)
        .on_progress(|p| {
            if p.bytes_done > 100_000 {
                panic!("hook bug");
            }
        })
        .build()
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), manager.load(&*a).unwrap())
        .await
        .expect("resolves");
    eprintln!("outcome {outcome:?}, state {}", manager.current_state());
    assert_eq!(manager.resident_bytes(), 0);
    assert_ne!(
        outcome.unwrap_err(),
        Error::ShutDown,
        "a hook panic reported as ShutDown"
    );
}

/// A known limit, pinned so it is not forgotten: a tensor cloned out of a
/// lease keeps its buffer alive after unload, and the manager cannot see it
/// (candle-core offers no way to observe when a storage is freed), so the
/// `Idle` snapshot reports 0 resident and 0 unreclaimed bytes.
#[tokio::test]
async fn r4_cloned_tensor_outlives_unload_unseen() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 1, 1 << 20);
    let manager = ModelManager::new().unwrap();
    manager.load(&*a).unwrap().await.unwrap();
    let lease = manager.acquire().unwrap();
    let kept = lease.tensor("layer000.weight").unwrap().clone();
    drop(lease);
    manager.unload().await.unwrap();
    let s = manager.snapshot();
    assert_eq!(s.state, State::Idle);
    assert_eq!(s.resident_bytes, 0);
    // ...but 4 MiB are still held, and readable:
    assert_eq!(kept.elem_count(), 1 << 20);
    let v: Vec<f32> = kept.to_vec1().unwrap();
    assert_eq!(v[5], common::value(1, 0, 5));
    manager.shutdown().await;
}

/// The published snapshot holds an `Arc` of the resident pipeline: a reader
/// inside `info()` (cloning a large config) keeps it alive past the drain, so
/// `Idle` is published (under the lock, in the event) while the model's
/// memory is still held.
#[test]
fn r5_reader_guard_keeps_model_alive_past_idle() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 4, 64 * 1024);
    // A large config: info() clones it while holding the published snapshot.
    let pad: Vec<u32> = (0..200_000).collect();
    std::fs::write(
        a.join("config.json"),
        format!(r#"{{"sample_size": 33, "pad": {pad:?}}}"#),
    )
    .unwrap();
    let manager = Arc::new(
        ModelManager::builder()
            .return_memory_to_os(false)
            .build()
            .unwrap(),
    );
    let mut events = manager.subscribe();
    let stop = Arc::new(AtomicBool::new(false));
    let n: usize = std::env::var("R5_READERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let readers: Vec<_> = (0..n)
        .map(|_| {
            let (m, stop) = (manager.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = m.info();
                }
            })
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let mut bad = Vec::new();
    let mut cycles = 0;
    while started.elapsed()
        < Duration::from_secs(
            std::env::var("R5_SECS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(3),
        )
        && bad.is_empty()
    {
        rt.block_on(async {
            manager.load(&*a).unwrap().await.unwrap();
            manager.unload().await.unwrap();
        });
        cycles += 1;
        while let Ok(e) = events.try_recv() {
            if matches!(e.to, State::Idle | State::Failed) && e.snapshot.resident_bytes > 0 {
                bad.push(e);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    eprintln!("cycles {cycles}");
    manager.shutdown_blocking().unwrap();
    assert!(
        bad.is_empty(),
        "Idle events with memory held: {:?}",
        bad.first()
            .map(|e| (e.command, e.snapshot.generation, e.snapshot.resident_bytes))
    );
}

/// OS threads hammer every command (incl. handle.cancel, shutdown at the end
/// while commands still race); every handle must resolve, the event stream
/// must follow the table with generations +1, Idle/Failed events must say 0
/// bytes, and the manager must end Idle with nothing held.
#[test]
fn r6_hammer_threads() {
    use rand::{Rng, SeedableRng};
    let secs: u64 = std::env::var("R6_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let mut paths: Vec<_> = (0..3)
        .map(|i| {
            write_model(
                dir.path(),
                &format!("m{i}"),
                i,
                4,
                20_000 + 10_000 * i as usize,
            )
        })
        .collect();
    paths.push(common::write_failing_model(dir.path(), "bad"));
    let manager = Arc::new(
        ModelManager::builder()
            .chunk_size(8 * 1024)
            .drain_timeout(Duration::from_millis(100))
            .pipeline::<common::Strict>()
            .build()
            .unwrap(),
    );
    let mut sub0 = manager.subscribe();
    let collecting = Arc::new(AtomicBool::new(true));
    let collector = {
        let collecting = collecting.clone();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            loop {
                match sub0.try_recv() {
                    Ok(e) => out.push(Ok(e)),
                    Err(model_manager::TryRecvError::Lagged(k)) => out.push(Err(k)),
                    Err(_) => {
                        if !collecting.load(Ordering::Relaxed) {
                            break;
                        }
                        std::thread::yield_now();
                    }
                }
            }
            out
        })
    };
    let handles = Arc::new(std::sync::Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap(),
    );
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let (m, paths, handles, rt) =
                (manager.clone(), paths.clone(), handles.clone(), rt.clone());
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(w + 100);
                let mut held = Vec::new();
                while Instant::now() < deadline {
                    match rng.random_range(0..12) {
                        0..=3 => {
                            if let Ok(h) = m.load(&paths[rng.random_range(0..paths.len())]) {
                                if rng.random_bool(0.2) {
                                    h.cancel();
                                }
                                handles.lock().unwrap().push(h);
                            }
                        }
                        4 => {
                            let _ = m.cancel();
                        }
                        5 => {
                            let _ = rt.block_on(m.unload_timeout(Duration::from_millis(5)));
                        }
                        6 => {
                            let _ = m.reset();
                        }
                        7 => {
                            let _ = m.snapshot();
                            let _ = m.info();
                        }
                        8 => {
                            if let Ok(l) = m.acquire() {
                                held.push(l);
                            }
                        }
                        _ => {
                            held.clear();
                        }
                    }
                }
                drop(held);
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), manager.shutdown())
            .await
            .expect("shutdown bounded");
        let hs: Vec<_> = handles.lock().unwrap().drain(..).collect();
        eprintln!("{} handles", hs.len());
        for h in hs {
            tokio::time::timeout(Duration::from_secs(10), h.wait())
                .await
                .expect("every handle resolves")
                .ok();
        }
    });
    assert_eq!(manager.current_state(), State::Idle);
    assert_eq!(manager.resident_bytes(), 0);
    let mut last: Option<(State, u64)> = None;
    let mut n = 0;
    let mut bad_idle = 0;
    collecting.store(false, Ordering::Relaxed);
    for item in collector.join().unwrap() {
        match item {
            Ok(e) => {
                n += 1;
                if let Some((to, g)) = last {
                    assert_eq!(e.from, to, "events chain");
                    assert_eq!(e.snapshot.generation, g + 1);
                }
                if matches!(e.to, State::Idle | State::Failed) && e.snapshot.resident_bytes > 0 {
                    bad_idle += 1;
                }
                last = Some((e.to, e.snapshot.generation));
            }
            Err(k) => {
                eprintln!("lagged {k}");
                last = None;
            }
        }
    }
    eprintln!("{n} events, {bad_idle} Idle/Failed events with bytes");
    assert_eq!(bad_idle, 0);
}

/// A sparse file whose header honestly describes 4 TiB of data: with a
/// budget above it the allocation is attempted, and refused by the allocator:
/// the load fails, it does not panic or abort.
#[test]
fn r7_huge_sparse_file_with_large_budget() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.safetensors");
    let n: u64 = 1 << 42; // 4 TiB
    let header = format!(r#"{{"w":{{"dtype":"U8","shape":[{n}],"data_offsets":[0,{n}]}}}}"#);
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(bytes.len() as u64 + n).unwrap();
    let manager = ModelManager::builder()
        .memory_budget(u64::MAX)
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = rt.block_on(async { manager.load(&*path).unwrap().await });
    assert!(
        matches!(outcome, Err(Error::InsufficientMemory { .. })),
        "{outcome:?}"
    );
    assert_eq!(manager.current_state(), State::Failed);
    assert_eq!(manager.resident_bytes(), 0);
}

/// A Pipeline whose assemble waits (bounded) so the test can look at a
/// stream taken after the last chunk.
struct Slow;
static SLOW_GO: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
impl model_manager::Pipeline for Slow {
    type Options = ();

    fn assemble(
        _: model_manager::TensorPipeline,
        _: &model_manager::Assembly<'_, ()>,
    ) -> model_manager::Result<Self> {
        let t = Instant::now();
        while !*SLOW_GO.lock().unwrap() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Slow)
    }
}

/// A progress stream taken after the last chunk (during assemble) starts
/// from a stale value (the one last sent while someone was subscribed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r8_late_progress_stream_is_stale() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 4, 64 * 1024);
    let manager = ModelManager::builder().pipeline::<Slow>().build().unwrap();
    let handle = manager.load(&*a).unwrap();
    common::eventually(|| {
        let p = handle.progress();
        p.bytes_total > 0 && p.bytes_done == p.bytes_total
    })
    .await;
    let rx = handle.progress_updates();
    let seen = rx.borrow().clone();
    *SLOW_GO.lock().unwrap() = true;
    handle.await.unwrap();
    manager.shutdown().await;
    assert_eq!(
        seen.bytes_done,
        4 * 64 * 1024 * 4,
        "late stream's first value: {seen:?}"
    );
}

/// A tensor name held by two shards: refused before anything is allocated
/// (it used to replace the other copy silently and stay counted twice).
#[tokio::test]
async fn r9_duplicate_tensor_across_shards_is_refused() {
    use model_manager::candle_core::{DType, Device, Tensor};
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    std::fs::create_dir_all(&m).unwrap();
    let y = Tensor::zeros(1024, DType::F32, &Device::Cpu).unwrap();
    let w16 = Tensor::zeros(1 << 20, DType::F16, &Device::Cpu).unwrap();
    let w32 = Tensor::zeros(16, DType::F32, &Device::Cpu).unwrap();
    model_manager::candle_core::safetensors::save(
        &[("y".to_string(), y), ("w".to_string(), w16)]
            .into_iter()
            .collect::<std::collections::HashMap<_, _>>(),
        m.join("a.safetensors"),
    )
    .unwrap();
    model_manager::candle_core::safetensors::save(
        &[("w".to_string(), w32)]
            .into_iter()
            .collect::<std::collections::HashMap<_, _>>(),
        m.join("b.safetensors"),
    )
    .unwrap();
    std::fs::write(
        m.join("model.safetensors.index.json"),
        r#"{"weight_map": {"y": "a.safetensors", "w": "b.safetensors"}}"#,
    )
    .unwrap();
    let manager = ModelManager::new().unwrap();
    let err = manager.load(&*m).unwrap().await.unwrap_err();
    assert_eq!(err.code(), model_manager::ErrorCode::InvalidModel, "{err}");
    assert!(err.to_string().contains("\"w\""), "{err}");
    assert_eq!(manager.current_state(), State::Failed);
    assert_eq!(manager.resident_bytes(), 0);
    manager.shutdown().await;
}
