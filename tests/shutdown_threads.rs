//! Alone in its own process: counts the process's threads.
mod common;

use common::{write_model, Gate};
use model_manager::{Error, ModelManager, State};

fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The thread count once threads already joined have left the kernel's
/// count: `join` returns when a thread has ended, a moment before the
/// kernel removes it from `/proc` (seen on a loaded machine: one more,
/// once in a full run). Bounded: 100 ms at most, far longer than that
/// moment and far shorter than a thread left running would need to end.
fn threads_settled(baseline: usize) -> usize {
    for _ in 0..20 {
        if threads() <= baseline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    threads()
}

#[test]
fn shutdown_joins_every_task_and_thread() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_model(dir.path(), "a", 1, 8, 64 * 1024);
    let baseline = threads();

    // Blocking shutdown from a plain thread, in the middle of a load.
    for round in 0..3 {
        let gate = Gate::new();
        let manager = ModelManager::builder()
            .chunk_size(64 * 1024)
            .on_progress(gate.hook())
            .build()
            .unwrap();
        gate.close_at(3);
        let handle = manager.load(&*a).unwrap();
        let probe = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        probe.block_on(gate.paused());
        assert!(threads() > baseline, "the manager runs threads of its own");
        let opener = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                gate.open();
            })
        };
        manager.shutdown_blocking().unwrap();
        opener.join().unwrap();
        assert_eq!(probe.block_on(handle.wait()).unwrap_err(), Error::Cancelled);
        assert_eq!(manager.current_state(), State::Idle);
        assert_eq!(manager.resident_bytes(), 0);
        manager.shutdown_blocking().unwrap(); // idempotent
        drop(probe);
        drop(manager);
        assert_eq!(threads_settled(baseline), baseline, "round {round}");
    }

    // Async shutdown, awaited on a single-threaded runtime, with a model ready.
    let manager = ModelManager::new().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        manager.load(&*a).unwrap().await.unwrap();
        manager.shutdown().await;
        manager.shutdown().await; // idempotent
    });
    assert_eq!(manager.current_state(), State::Idle);
    assert_eq!(manager.resident_bytes(), 0);
    drop(manager);
    drop(rt);
    assert_eq!(threads_settled(baseline), baseline);

    // Dropping without shutdown, outside any runtime, also joins.
    let manager = ModelManager::new().unwrap();
    let _ = manager.load(&*a).unwrap();
    drop(manager);
    assert_eq!(threads_settled(baseline), baseline);
}
