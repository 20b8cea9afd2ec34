//! What the hub can do wrong: a connection cut mid-file (the next download
//! resumes it with a `Range` request), a server that ignores the range,
//! bytes that do not match their hash, a repo or file that is not there,
//! and answers that are broken. Each ends in a typed error naming the URL,
//! never a panic, and never publishes a blob that was not verified.

use std::sync::atomic::AtomicBool;

use model_manager::{ErrorCode, ModelManager, State};

use super::hub::{etag, Hub};
use super::{names, repo_dir, source, tiny_repo, COMMIT};

fn pull(src: &model_manager::ModelSource) -> Result<std::path::PathBuf, model_manager::Error> {
    model_manager::pull(src, &AtomicBool::new(false), None)
}

#[tokio::test]
async fn a_cut_download_resumes_with_a_range_request() {
    let hub = Hub::start();
    let repo = tiny_repo(7, 20_000);
    let weights = repo.files["model.safetensors"].clone();
    hub.add("acme/tiny", repo);
    hub.faults(|f| f.cut = Some(("model.safetensors".into(), 100_000)));
    let cache = tempfile::tempdir().unwrap();
    let src = source(&hub, "acme/tiny", cache.path());

    let err = pull(&src).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Io, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("/resolve/") && text.contains("kept"),
        "{text}"
    );
    let tag = etag("model.safetensors", &weights);
    let blobs = repo_dir(cache.path(), "acme/tiny").join("blobs");
    let part = blobs.join(format!("{tag}.incomplete"));
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 100_000);
    assert!(!blobs.join(&tag).exists());

    // The next load continues where it stopped, then verifies the whole.
    hub.clear_log();
    let manager = ModelManager::new().unwrap();
    manager.load(src).unwrap().await.unwrap();
    super::common::verify(&manager.acquire().unwrap(), 7);
    let ranges: Vec<_> = hub
        .requests("/cdn/")
        .into_iter()
        .filter_map(|r| r.headers.get("range").cloned())
        .collect();
    assert_eq!(ranges, ["bytes=100000-"]);
    assert_eq!(std::fs::read(blobs.join(&tag)).unwrap(), weights);
    assert!(!part.exists());
    manager.shutdown().await;
}

#[tokio::test]
async fn a_server_that_ignores_the_range_sends_the_whole_file_again() {
    let hub = Hub::start();
    let repo = tiny_repo(8, 20_000);
    let weights = repo.files["model.safetensors"].clone();
    hub.add("acme/tiny", repo);
    hub.faults(|f| {
        f.cut = Some(("model.safetensors".into(), 50_000));
        f.ignore_range = true;
    });
    let cache = tempfile::tempdir().unwrap();
    let src = source(&hub, "acme/tiny", cache.path());
    pull(&src).unwrap_err();
    let snapshot = pull(&src).unwrap();
    assert_eq!(
        std::fs::read(snapshot.join("model.safetensors")).unwrap(),
        weights
    );
}

#[tokio::test]
async fn a_wrong_checksum_fails_and_publishes_nothing() {
    let hub = Hub::start();
    hub.add("acme/tiny", tiny_repo(9, 1000));
    hub.faults(|f| f.corrupt = Some("model.safetensors".into()));
    let cache = tempfile::tempdir().unwrap();
    let manager = ModelManager::new().unwrap();
    let err = manager
        .load(source(&hub, "acme/tiny", cache.path()))
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidModel, "{err}");
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    assert_eq!(manager.current_state(), State::Failed);
    let dir = repo_dir(cache.path(), "acme/tiny");
    let blobs = names(&dir.join("blobs"));
    assert!(
        blobs
            .iter()
            .all(|b| !b.ends_with(".incomplete") && b.len() != 64),
        "only config.json's blob: {blobs:?}"
    );
    assert!(!dir
        .join("snapshots")
        .join(COMMIT)
        .join("model.safetensors")
        .exists());
    assert!(!dir.join("refs/main").exists());
    manager.shutdown().await;
}

#[tokio::test]
async fn a_repo_or_file_not_on_the_hub_is_missing() {
    let hub = Hub::start();
    hub.add("acme/tiny", tiny_repo(10, 100));
    let cache = tempfile::tempdir().unwrap();
    let err = pull(&source(&hub, "acme/absent", cache.path())).unwrap_err();
    assert_eq!(err.code(), ErrorCode::MissingFile, "{err}");
    let text = err.to_string();
    let url = format!("{}/api/models/acme/absent/revision/main", hub.url);
    for word in [
        url.as_str(),
        "HTTP 404",
        "repo id (acme/absent)",
        "HF_TOKEN",
    ] {
        assert!(text.contains(word), "{text} should say {word}");
    }

    hub.faults(|f| f.missing = vec!["model.safetensors".into()]);
    let err = pull(&source(&hub, "acme/tiny", cache.path())).unwrap_err();
    assert_eq!(err.code(), ErrorCode::MissingFile, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("resolve/") && text.contains("no file model.safetensors"),
        "{text}"
    );
}

#[tokio::test]
async fn broken_answers_are_errors() {
    let cache = tempfile::tempdir().unwrap();
    let broken = |set: fn(&mut super::hub::Faults)| {
        let hub = Hub::start();
        hub.add("acme/tiny", tiny_repo(11, 100));
        hub.faults(set);
        let err = pull(&source(&hub, "acme/tiny", cache.path())).unwrap_err();
        (err.code(), err.to_string())
    };
    let (code, text) = broken(|f| f.bad_json = true);
    assert_eq!(code, ErrorCode::InvalidConfig, "{text}");
    assert!(text.contains("not a revision"), "{text}");
    let (code, text) = broken(|f| f.no_etag = true);
    assert_eq!(code, ErrorCode::Io, "{text}");
    assert!(text.contains("no ETag"), "{text}");
    let (code, text) = broken(|f| f.redirect_loop = true);
    assert_eq!(code, ErrorCode::Io, "{text}");
    let (code, text) = broken(|f| f.huge_length = true);
    assert_eq!(code, ErrorCode::Io, "{text}");
    // Nothing was published by any of them.
    let blobs = names(&repo_dir(cache.path(), "acme/tiny").join("blobs"));
    assert!(blobs.iter().all(|b| b.len() != 64), "{blobs:?}");

    // Nothing listening: an I/O error naming the URL.
    let src = model_manager::ModelSource::hub("acme/tiny").download_with(
        model_manager::Download::new()
            .endpoint("http://127.0.0.1:9")
            .cache_dir(cache.path().join("other")),
    );
    let err = pull(&src).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Io, "{err}");
    assert!(
        err.to_string()
            .contains("http://127.0.0.1:9/api/models/acme/tiny"),
        "{err}"
    );
}
