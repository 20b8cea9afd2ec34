//! A download stops when its load is cancelled, and a server that stops
//! sending fails it after the read timeout (or a cancel ends it within
//! that); `HF_ENDPOINT` and `HF_TOKEN` are honoured.

use std::time::{Duration, Instant};

use model_manager::{Download, Error, ErrorCode, ModelManager, ModelSource, State};

use super::hub::{etag, Hub};
use super::{repo_dir, source, tiny_repo};

/// Generous bounds, not speed claims: a cancel or a timeout that hangs
/// fails the test instead of hanging it.
const BOUND: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_the_download_and_keeps_what_came() {
    let hub = Hub::start();
    // 4 MiB sent in 16 KiB pieces, 10 ms apart: seconds of download.
    let repo = tiny_repo(12, 350_000);
    let weights = repo.files["model.safetensors"].clone();
    hub.add("acme/slow", repo);
    hub.faults(|f| f.slow = Some(Duration::from_millis(10)));
    let cache = tempfile::tempdir().unwrap();
    let manager = ModelManager::new().unwrap();
    let load = manager
        .load(source(&hub, "acme/slow", cache.path()))
        .unwrap();
    let mut updates = load.progress_updates();
    tokio::time::timeout(BOUND, updates.wait_for(|p| p.download_done > 64 << 10))
        .await
        .expect("the download began")
        .unwrap();
    assert_eq!(manager.current_state(), State::Loading);
    let at = manager.progress();
    assert!(at.download_done < at.download_total, "{at:?}");
    assert!(
        at.current
            .as_deref()
            .unwrap_or("")
            .contains("model.safetensors"),
        "{at:?}"
    );
    load.cancel();
    let outcome = tokio::time::timeout(BOUND, load)
        .await
        .expect("the cancel ended the load");
    assert!(matches!(outcome, Err(Error::Cancelled)), "{outcome:?}");
    assert_eq!(manager.current_state(), State::Idle);
    assert_eq!(manager.snapshot().resident_bytes, 0);
    let part = repo_dir(cache.path(), "acme/slow")
        .join("blobs")
        .join(format!(
            "{}.incomplete",
            etag("model.safetensors", &weights)
        ));
    let kept = std::fs::metadata(&part).unwrap().len();
    assert!(kept > 0 && kept < weights.len() as u64, "{kept}");
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_fails_the_load_after_the_read_timeout() {
    let hub = Hub::start();
    hub.add("acme/stall", tiny_repo(13, 20_000));
    hub.faults(|f| f.stall = Some(("model.safetensors".into(), 1000)));
    let cache = tempfile::tempdir().unwrap();
    let src = ModelSource::hub("acme/stall").download_with(
        Download::new()
            .endpoint(&hub.url)
            .cache_dir(cache.path())
            .read_timeout(Duration::from_millis(500)),
    );
    let manager = ModelManager::new().unwrap();
    let started = Instant::now();
    let err = tokio::time::timeout(BOUND, manager.load(src.clone()).unwrap())
        .await
        .expect("the read timeout ended the load")
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Io, "{err}");
    assert_eq!(err.io_kind(), Some(std::io::ErrorKind::TimedOut), "{err}");
    assert!(err.to_string().contains("/resolve/"), "{err}");
    assert!(started.elapsed() < BOUND);
    assert_eq!(manager.current_state(), State::Failed);

    // A cancel while the server stalls ends the load within a read timeout.
    let load = manager.load(src).unwrap();
    tokio::time::timeout(
        BOUND,
        load.progress_updates().wait_for(|p| p.download_done > 0),
    )
    .await
    .expect("the download began")
    .unwrap();
    load.cancel();
    let outcome = tokio::time::timeout(BOUND, load)
        .await
        .expect("the cancel ended the load");
    assert!(matches!(outcome, Err(Error::Cancelled)), "{outcome:?}");
    assert_eq!(manager.current_state(), State::Idle);
    manager.shutdown().await;
}

/// The only test that sets environment variables: `HF_ENDPOINT`,
/// `HF_TOKEN`, `HF_HUB_CACHE`; the other tests give theirs through
/// `Download`, which the environment does not override.
#[tokio::test]
async fn the_endpoint_and_token_come_from_the_environment() {
    let hub = Hub::start();
    hub.add("acme/gated", tiny_repo(14, 100));
    hub.faults(|f| f.token = Some("hf_secret".into()));
    let cache = tempfile::tempdir().unwrap();
    std::env::set_var("HF_ENDPOINT", &hub.url);
    std::env::set_var("HF_HUB_CACHE", cache.path());
    std::env::set_var("HF_HOME", cache.path().join("no-token-here"));
    std::env::remove_var("HF_TOKEN");
    let manager = ModelManager::new().unwrap();

    // No token: the hub says 401, the error says what to check.
    let err = manager
        .load(ModelSource::hub("acme/gated").download())
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::MissingFile, "{err}");
    assert!(err.to_string().contains("HTTP 401"), "{err}");
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");
    assert!(hub
        .log()
        .iter()
        .all(|r| !r.headers.contains_key("authorization")));

    // The token file under HF_HOME, then HF_TOKEN over it.
    std::fs::create_dir_all(cache.path().join("home")).unwrap();
    std::fs::write(cache.path().join("home/token"), "hf_secret\n").unwrap();
    std::env::set_var("HF_HOME", cache.path().join("home"));
    manager
        .load(ModelSource::hub("acme/gated").download())
        .unwrap()
        .await
        .unwrap();
    assert!(hub
        .log()
        .iter()
        .any(|r| r.headers.get("authorization").map(String::as_str) == Some("Bearer hf_secret")));
    manager.unload().await.unwrap();
    std::fs::remove_dir_all(repo_dir(cache.path(), "acme/gated")).unwrap();
    std::env::set_var("HF_TOKEN", "hf_other");
    let err = manager
        .load(ModelSource::hub("acme/gated").download())
        .unwrap()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("HTTP 401"), "HF_TOKEN wins: {err}");
    std::env::set_var("HF_TOKEN", "hf_secret");
    manager
        .load(ModelSource::hub("acme/gated").download())
        .unwrap()
        .await
        .unwrap();
    for var in ["HF_ENDPOINT", "HF_HUB_CACHE", "HF_HOME", "HF_TOKEN"] {
        std::env::remove_var(var);
    }
    manager.shutdown().await;
}
