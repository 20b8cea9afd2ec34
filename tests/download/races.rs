//! Downloads that meet: two of one blob at once (two processes, a pull
//! beside a load) take turns on the blob's lock, and a pool's load that is
//! cancelled stops its download.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::hub::{etag, Hub};
use super::{repo_dir, source, tiny_repo};

#[test]
fn two_downloads_of_one_blob_take_turns() {
    let hub = Hub::start();
    let repo = tiny_repo(3, 400_000);
    let weights = repo.files["model.safetensors"].clone();
    hub.add("acme/tiny", repo);
    hub.faults(|f| f.slow = Some(Duration::from_millis(5)));
    let cache = tempfile::tempdir().unwrap();
    let src = source(&hub, "acme/tiny", cache.path());
    let pull = |src: model_manager::ModelSource| {
        std::thread::spawn(move || model_manager::pull(&src, &AtomicBool::new(false), None))
    };
    let a = pull(src.clone());
    std::thread::sleep(Duration::from_millis(60));
    let b = pull(src);
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
    let blob = repo_dir(cache.path(), "acme/tiny")
        .join("blobs")
        .join(etag("model.safetensors", &weights));
    assert_eq!(
        std::fs::read(&blob).unwrap(),
        weights,
        "the published blob is the file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_pool_load_stops_its_download() {
    let hub = Hub::start();
    let repo = tiny_repo(3, 400_000);
    let weights = repo.files["model.safetensors"].clone();
    hub.add("acme/tiny", repo);
    hub.faults(|f| f.slow = Some(Duration::from_millis(10)));
    let cache = tempfile::tempdir().unwrap();
    let pool = model_manager::ModelPool::builder()
        .memory_budget(1 << 30)
        .runtime(tokio::runtime::Handle::current())
        .build()
        .unwrap();
    pool.add("m", source(&hub, "acme/tiny", cache.path()))
        .unwrap();
    let pool = Arc::new(pool);
    let loading = pool.clone();
    let load = tokio::spawn(async move { loading.load("m").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(pool.cancel("m").unwrap());
    assert!(load.await.unwrap().is_err());
    let tag = etag("model.safetensors", &weights);
    let blobs = repo_dir(cache.path(), "acme/tiny").join("blobs");
    let part = blobs.join(format!("{tag}.incomplete"));
    let len = || std::fs::metadata(&part).map_or(0, |m| m.len());
    // The download stops at its next chunk (a read of at most 256 KiB).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = len();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(len(), stopped, "the download went on after the cancel");
    assert!(!blobs.join(&tag).exists());
}

#[test]
fn a_cancel_stops_a_trickled_file_list() {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    use std::time::Instant;
    // A hub that answers the revision request one byte every 200 ms.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let serving = done.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let serving = serving.clone();
            std::thread::spawn(move || {
                let _ = c.read(&mut [0u8; 4096]);
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n");
                while !serving.load(Ordering::Acquire) && c.write_all(b" ").is_ok() {
                    std::thread::sleep(Duration::from_millis(200));
                }
            });
        }
    });
    let cache = tempfile::tempdir().unwrap();
    let src = model_manager::ModelSource::hub("acme/tiny").download_with(
        model_manager::Download::new()
            .endpoint(&url)
            .cache_dir(cache.path())
            .read_timeout(Duration::from_secs(1)),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let pull = std::thread::spawn(move || model_manager::pull(&src, &stopping, None));
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Release);
    let asked = Instant::now();
    // Within a few of the server's 200 ms pauses (a bound, not a speed).
    while !pull.is_finished() && asked.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    done.store(true, Ordering::Release);
    assert!(pull.is_finished(), "the pull ignored its cancel");
    let err = pull.join().unwrap().unwrap_err();
    assert_eq!(err, model_manager::Error::Cancelled);
}

#[test]
fn an_oversized_partial_file_is_counted_once() {
    use std::sync::Mutex;
    let hub = Hub::start();
    let repo = tiny_repo(3, 5000);
    let weights = repo.files["model.safetensors"].clone();
    hub.add("acme/tiny", repo);
    let cache = tempfile::tempdir().unwrap();
    let blobs = repo_dir(cache.path(), "acme/tiny").join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let tag = etag("model.safetensors", &weights);
    // Longer than the file: not a part of it, so it is downloaded again.
    std::fs::write(
        blobs.join(format!("{tag}.incomplete")),
        vec![0u8; weights.len() + 10],
    )
    .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let hook: model_manager::ProgressHook =
        Arc::new(move |p: &model_manager::Progress| record.lock().unwrap().push(p.clone()));
    let src = source(&hub, "acme/tiny", cache.path());
    model_manager::pull(&src, &AtomicBool::new(false), Some(&hook)).unwrap();
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().all(|p| p.download_done <= p.download_total),
        "done past total"
    );
    let last = seen.last().unwrap();
    assert_eq!(last.download_done, last.download_total);
    assert_eq!(std::fs::read(blobs.join(&tag)).unwrap(), weights);
}

#[test]
fn a_sharded_download_never_goes_backwards() {
    use std::sync::Mutex;
    let hub = Hub::start();
    let shard = vec![1u8; 200_000];
    let index = r#"{"weight_map": {"a": "m-1.safetensors", "b": "m-2.safetensors"}}"#;
    let repo = super::hub::Repo::new(super::COMMIT)
        .file("model.safetensors.index.json", index)
        .file("m-1.safetensors", shard.clone())
        .file("m-2.safetensors", shard);
    hub.add("acme/sharded", repo);
    let cache = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let hook: model_manager::ProgressHook =
        Arc::new(move |p: &model_manager::Progress| record.lock().unwrap().push(p.clone()));
    let src = source(&hub, "acme/sharded", cache.path());
    // The shards are not safetensors files: the pull fetches them; a load
    // would refuse them.
    model_manager::pull(&src, &AtomicBool::new(false), Some(&hook)).unwrap();
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty());
    for pair in seen.windows(2) {
        assert!(
            pair[1].fraction() >= pair[0].fraction(),
            "{}/{} then {}/{}",
            pair[0].download_done,
            pair[0].download_total,
            pair[1].download_done,
            pair[1].download_total
        );
    }
    // Every figure counts the shards (the index is not counted).
    assert!(seen.iter().all(|p| p.download_total == 400_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_download_holds_no_load_behind_it() {
    let hub = Hub::start();
    let repo = tiny_repo(3, 400_000);
    let local = repo.files["model.safetensors"].clone();
    hub.add("acme/tiny", repo);
    // About a second of download, against an admission timeout of 200 ms.
    hub.faults(|f| f.slow = Some(Duration::from_millis(5)));
    let cache = tempfile::tempdir().unwrap();
    let file = cache.path().join("local.safetensors");
    std::fs::write(&file, &local).unwrap();
    let pool = model_manager::ModelPool::builder()
        .memory_budget(1 << 30)
        .admission_timeout(Duration::from_millis(200))
        .runtime(tokio::runtime::Handle::current())
        .build()
        .unwrap();
    pool.add("hub", source(&hub, "acme/tiny", cache.path()))
        .unwrap();
    pool.add("local", model_manager::ModelSource::path(&file))
        .unwrap();
    let pool = Arc::new(pool);
    let downloading = pool.clone();
    let download = tokio::spawn(async move { downloading.load("hub").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Queued behind a download, it was refused MemoryBusy once the download
    // outlasted its admission timeout; now it loads.
    pool.load("local").await.unwrap();
    download.await.unwrap().unwrap();
}
