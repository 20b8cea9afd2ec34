//! Downloads from a hub served on 127.0.0.1 (`hub.rs`): whole models into
//! the cache, laid out as the hub's own tools lay them (blobs named by
//! their hashes, relative symlinks, refs), loaded; only the files the
//! layout needs; nothing fetched twice. Faults (`faults.rs`) and cancels,
//! stalls and the environment (`cancel.rs`) beside.
//!
//! Each test has its own server and cache folder (given through
//! `Download`), so they run in parallel; the one that sets environment
//! variables is alone in what it reads from them.

#[path = "../common/mod.rs"]
mod common;
mod hub;
mod repo;

mod cancel;
mod faults;
mod races;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use model_manager::candle_core::{safetensors, Device, Tensor};
use model_manager::{Download, ModelManager, ModelSource, State};

use hub::{etag, Hub, Repo};

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A source for `repo` on `hub`, cached in `cache`.
pub fn source(hub: &Hub, repo: &str, cache: &Path) -> ModelSource {
    ModelSource::hub(repo).download_with(Download::new().endpoint(&hub.url).cache_dir(cache))
}

/// A one-file model (`common::write_model`, seed `seed`) as repo files,
/// with a README that no load needs.
pub fn tiny_repo(seed: u32, elems: usize) -> Repo {
    let dir = tempfile::tempdir().unwrap();
    let folder = common::write_model(dir.path(), "m", seed, 3, elems);
    Repo::new(COMMIT)
        .folder(&folder)
        .file("README.md", "# tiny\n")
}

/// A diffusers pipeline: unet and vae with weights, a scheduler.
fn pipeline_repo() -> Repo {
    let tensor = |n: usize, v: f32| Tensor::from_vec(vec![v; n], n, &Device::Cpu).unwrap();
    let bytes = |map: HashMap<String, Tensor>| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        safetensors::save(&map, &path).unwrap();
        std::fs::read(path).unwrap()
    };
    let unet = bytes(HashMap::from([("conv_in.weight".into(), tensor(64, 1.5))]));
    let vae = bytes(HashMap::from([("decoder.bias".into(), tensor(8, -2.0))]));
    Repo::new(COMMIT)
        .file(
            "model_index.json",
            r#"{"_class_name": "X", "unet": ["diffusers", "U"], "vae": ["diffusers", "V"],
                "scheduler": ["diffusers", "S"], "safety_checker": [null, null]}"#,
        )
        .file("unet/config.json", r#"{"sample_size": 96}"#)
        .file("unet/diffusion_pytorch_model.safetensors", unet)
        .file("vae/config.json", "{}")
        .file("vae/diffusion_pytorch_model.safetensors", vae)
        .file("scheduler/scheduler_config.json", "{}")
}

/// The repo's folder in `cache`.
pub fn repo_dir(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("models--{}", repo.replace('/', "--")))
}

/// `snapshots/COMMIT/name` is a relative link to the blob its hash names,
/// which holds `bytes`.
fn linked(cache: &Path, repo: &str, name: &str, bytes: &[u8]) {
    let dir = repo_dir(cache, repo);
    let link = dir.join("snapshots").join(COMMIT).join(name);
    let target = std::fs::read_link(&link).unwrap();
    let ups = "../".repeat(2 + name.matches('/').count());
    let tag = etag(name, bytes);
    assert_eq!(target, PathBuf::from(format!("{ups}blobs/{tag}")), "{name}");
    assert_eq!(std::fs::read(dir.join("blobs").join(&tag)).unwrap(), bytes);
    assert_eq!(std::fs::read(&link).unwrap(), bytes, "{name}");
}

/// The names in a folder, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test]
async fn a_single_file_model_downloads_into_the_cache_and_loads() {
    let hub = Hub::start();
    let repo = tiny_repo(3, 5000);
    hub.add("acme/tiny", repo.clone());
    let cache = tempfile::tempdir().unwrap();

    let manager = ModelManager::new().unwrap();
    let load = manager
        .load(source(&hub, "acme/tiny", cache.path()))
        .unwrap();
    let mut updates = load.progress_updates();
    let watcher = tokio::spawn(async move {
        let mut seen = vec![updates.borrow_and_update().clone()];
        while updates.changed().await.is_ok() {
            seen.push(updates.borrow_and_update().clone());
        }
        seen
    });
    load.await.unwrap();
    assert_eq!(manager.current_state(), State::Ready);
    common::verify(&manager.acquire().unwrap(), 3);

    // Progress counted the download, never going back.
    let seen = watcher.await.unwrap();
    let last = seen.last().unwrap();
    let weights = repo.files["model.safetensors"].len() as u64;
    assert!(last.download_total >= weights, "{last:?}");
    assert_eq!(last.download_done, last.download_total);
    assert_eq!(last.fraction(), 1.0);
    for pair in seen.windows(2) {
        assert!(pair[1].download_done >= pair[0].download_done, "{pair:?}");
        assert!(pair[1].bytes_done >= pair[0].bytes_done, "{pair:?}");
        // Before anything is known the fraction is that of an empty model.
        let known = pair[0].download_total > 0 || pair[0].bytes_total > 0;
        assert!(
            !known || pair[1].fraction() >= pair[0].fraction(),
            "{pair:?}"
        );
    }

    // The layout: blobs by hash, relative links, refs/main; no README, no
    // partial file.
    let dir = repo_dir(cache.path(), "acme/tiny");
    for name in ["model.safetensors", "config.json"] {
        linked(cache.path(), "acme/tiny", name, &repo.files[name]);
    }
    let snapshot = dir.join("snapshots").join(COMMIT);
    assert_eq!(names(&snapshot), ["config.json", "model.safetensors"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("refs/main")).unwrap(),
        COMMIT
    );
    let mut blobs = vec![
        etag("config.json", &repo.files["config.json"]),
        etag("model.safetensors", &repo.files["model.safetensors"]),
    ];
    blobs.sort();
    assert_eq!(names(&dir.join("blobs")), blobs);
    assert!(hub.requests("README").is_empty());

    // With the hub out of reach, the download falls back on the cache.
    manager.unload().await.unwrap();
    let unreachable = ModelSource::hub("acme/tiny").download_with(
        Download::new()
            .endpoint("http://127.0.0.1:9")
            .cache_dir(cache.path()),
    );
    assert_eq!(model_manager::inspect(&unreachable).unwrap().tensors, 3);
    manager.shutdown().await;
}

#[tokio::test]
async fn a_diffusers_pipeline_downloads_its_components() {
    let hub = Hub::start();
    let repo = pipeline_repo().file("unet/diffusion_pytorch_model.bin", vec![0u8; 64]);
    hub.add("acme/sd", repo.clone());
    let cache = tempfile::tempdir().unwrap();
    let manager = ModelManager::new().unwrap();
    manager
        .load(source(&hub, "acme/sd", cache.path()))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(manager.sample_size(), Some(96));
    let lease = manager.acquire().unwrap();
    let unet = lease.tensor("unet/conv_in.weight").unwrap();
    assert_eq!(unet.to_vec1::<f32>().unwrap(), vec![1.5f32; 64]);
    let vae = lease.tensor("vae/decoder.bias").unwrap();
    assert_eq!(vae.to_vec1::<f32>().unwrap(), vec![-2.0f32; 8]);
    drop(lease);
    for name in [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
    ] {
        linked(cache.path(), "acme/sd", name, &repo.files[name]);
    }
    // Safetensors over PyTorch: the .bin was never asked for.
    assert!(hub.requests(".bin").is_empty(), "{:?}", hub.log());
    let snapshot = repo_dir(cache.path(), "acme/sd")
        .join("snapshots")
        .join(COMMIT);
    assert_eq!(
        names(&snapshot.join("unet")),
        ["config.json", "diffusion_pytorch_model.safetensors"]
    );
    manager.shutdown().await;
}

#[tokio::test]
async fn only_the_files_the_layout_needs_are_fetched() {
    let hub = Hub::start();
    let repo = tiny_repo(4, 100)
        .file("pytorch_model.bin", vec![7u8; 300])
        .file("onnx/model.onnx", vec![1u8; 10]);
    hub.add("acme/both", repo);
    let cache = tempfile::tempdir().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let snapshot =
        model_manager::pull(&source(&hub, "acme/both", cache.path()), &stop, None).unwrap();
    assert_eq!(names(&snapshot), ["config.json", "model.safetensors"]);
    let asked: Vec<String> = hub.log().into_iter().map(|r| r.path).collect();
    assert!(
        asked
            .iter()
            .all(|p| !p.contains(".bin") && !p.contains("onnx") && !p.contains("README")),
        "{asked:?}"
    );
}

#[tokio::test]
async fn a_second_pull_asks_for_the_file_list_only() {
    let hub = Hub::start();
    hub.add("acme/tiny", tiny_repo(5, 1000));
    let cache = tempfile::tempdir().unwrap();
    let src = source(&hub, "acme/tiny", cache.path());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let first = model_manager::pull(&src, &stop, None).unwrap();
    assert!(!hub.requests("/cdn/").is_empty());
    hub.clear_log();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = calls.clone();
    let hook: model_manager::ProgressHook = std::sync::Arc::new(move |_| {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    let second = model_manager::pull(&src, &stop, Some(&hook)).unwrap();
    assert_eq!(first, second);
    let asked: Vec<String> = hub.log().into_iter().map(|r| r.path).collect();
    assert_eq!(asked, ["/api/models/acme/tiny/revision/main"]);
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "nothing to report"
    );

    // A blob already in the cache (another commit's) is linked, not fetched.
    let mut repo = tiny_repo(5, 1000);
    repo.commit = "feedfacefeedfacefeedfacefeedfacefeedface".into();
    hub.add("acme/tiny", repo);
    hub.clear_log();
    let third = model_manager::pull(&src, &stop, None).unwrap();
    assert!(third.ends_with("feedfacefeedfacefeedfacefeedfacefeedface"));
    assert!(hub.requests("/cdn/").is_empty(), "{:?}", hub.log());
    assert!(hub
        .log()
        .iter()
        .all(|r| r.method != "GET" || r.path.contains("/api/")));
    let dir = repo_dir(cache.path(), "acme/tiny");
    assert_eq!(
        std::fs::read_to_string(dir.join("refs/main")).unwrap(),
        "feedfacefeedfacefeedfacefeedfacefeedface"
    );
}

#[tokio::test]
async fn a_revision_is_asked_for_by_name_and_its_ref_written() {
    let hub = Hub::start();
    hub.add("acme/tiny", tiny_repo(6, 100));
    let cache = tempfile::tempdir().unwrap();
    let src = ModelSource::hub_revision("acme/tiny", "v1.0")
        .download_with(Download::new().endpoint(&hub.url).cache_dir(cache.path()));
    let stop = std::sync::atomic::AtomicBool::new(false);
    model_manager::pull(&src, &stop, None).unwrap();
    assert_eq!(hub.requests("/api/").len(), 1);
    assert!(hub.requests("/api/")[0].path.ends_with("/revision/v1.0"));
    let dir = repo_dir(cache.path(), "acme/tiny");
    assert_eq!(
        std::fs::read_to_string(dir.join("refs/v1.0")).unwrap(),
        COMMIT
    );
    assert!(!dir.join("refs/main").exists());
}
