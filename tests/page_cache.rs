//! What a load leaves in the page cache (`PageCache`): a file read cold is
//! dropped from it as it is read (`Auto`, the default; `Drop`), a warm
//! file's pages stay (`Auto`, `Keep`). Linux only: it asks the kernel with
//! `mincore` what is cached. Skipped, saying why, where the file system
//! keeps file pages whatever one advises (tmpfs).
#![cfg(target_os = "linux")]

mod common;

use common::{cached, evict};

use std::path::Path;

use model_manager::{ModelManager, PageCache};

fn warm(path: &Path) {
    std::fs::read(path).unwrap();
}

async fn load(path: &Path, policy: Option<PageCache>) {
    let mut builder = ModelManager::builder().chunk_size(256 * 1024);
    if let Some(policy) = policy {
        builder = builder.page_cache(policy);
    }
    let manager = builder.build().unwrap();
    manager.load(path).unwrap().await.unwrap();
    manager.shutdown().await;
}

#[tokio::test]
async fn a_cold_file_leaves_the_cache_and_a_warm_one_stays() {
    // On disk where the build is (the temp folder may be tmpfs).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = common::write_model(dir.path(), "m", 1, 8, 1 << 20).join("model.safetensors"); // 32 MiB
    evict(&path);
    if cached(&path) > 0.05 {
        eprintln!(
            "skipped: this file system keeps the pages of {} whatever one advises",
            path.display()
        );
        return;
    }
    // Cold, by default (Auto): dropped as read.
    load(&path, None).await;
    assert!(
        cached(&path) < 0.05,
        "{:.2} cached after a cold Auto load",
        cached(&path)
    );
    // Cold, kept when asked.
    load(&path, Some(PageCache::Keep)).await;
    assert!(
        cached(&path) > 0.9,
        "{:.2} cached after a cold Keep load",
        cached(&path)
    );
    // Warm, by default: it stays.
    warm(&path);
    load(&path, None).await;
    assert!(
        cached(&path) > 0.9,
        "{:.2} cached after a warm Auto load",
        cached(&path)
    );
    // Warm, dropped when asked.
    load(&path, Some(PageCache::Drop)).await;
    assert!(
        cached(&path) < 0.05,
        "{:.2} cached after a warm Drop load",
        cached(&path)
    );
}

#[tokio::test]
async fn a_cold_load_drops_what_it_read_as_it_goes() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = common::write_model(dir.path(), "big", 2, 32, 1 << 20).join("model.safetensors"); // 128 MiB
    evict(&path);
    if cached(&path) > 0.05 {
        eprintln!(
            "skipped: this file system keeps the pages of {} whatever one advises",
            path.display()
        );
        return;
    }
    // After every read: how much of the file the cache holds.
    let most = std::sync::Arc::new(std::sync::Mutex::new(0.0f64));
    let (seen, file) = (most.clone(), path.clone());
    let manager = ModelManager::builder()
        .read_threads(2)
        .on_progress(move |_| {
            let share = cached(&file);
            let mut most = seen.lock().unwrap();
            *most = most.max(share);
        })
        .build()
        .unwrap();
    manager.load(&path).unwrap().await.unwrap();
    manager.shutdown().await;
    let most = *most.lock().unwrap();
    // What the threads' readahead brings ahead of them stays until read;
    // all the rest goes as it is read (half the file stayed while the
    // reads' first and last folios were kept).
    assert!(
        most < 0.3,
        "{:.0}% of the file cached at once during a cold load",
        most * 100.0
    );
}
