//! Every model layout loads: sharded checkpoints, diffusers pipelines, the
//! hub cache, and bytes in memory; dtype conversion while loading.
mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use model_manager::candle_core::{DType, Device, Tensor};
use model_manager::{ModelManager, ModelSource, State};

fn tensors(prefix: &str, n: usize, elems: usize, seed: f32) -> HashMap<String, Tensor> {
    (0..n)
        .map(|i| {
            let data: Vec<f32> = (0..elems).map(|j| seed + (i * elems + j) as f32).collect();
            (
                format!("{prefix}{i}.weight"),
                Tensor::from_vec(data, elems, &Device::Cpu).unwrap(),
            )
        })
        .collect()
}

fn save(map: &HashMap<String, Tensor>, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    model_manager::candle_core::safetensors::save(map, path).unwrap();
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Split `map` into two shards plus an index, as transformers writes them.
fn write_sharded(dir: &Path, stem: &str, map: HashMap<String, Tensor>) {
    let mut names: Vec<_> = map.keys().cloned().collect();
    names.sort();
    let (first, second) = names.split_at(names.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [first, second].iter().enumerate() {
        let shard = format!("{stem}-0000{}-of-00002.safetensors", i + 1);
        let sub: HashMap<_, _> = part.iter().map(|n| (n.clone(), map[n].clone())).collect();
        save(&sub, &dir.join(&shard));
        for n in part.iter() {
            weight_map.insert(n.clone(), shard.clone().into());
        }
    }
    write(
        &dir.join(format!("{stem}.safetensors.index.json")),
        &serde_json::json!({"metadata": {}, "weight_map": weight_map}).to_string(),
    );
}

/// A diffusers pipeline: unet (single file), vae (single file), a sharded
/// text encoder, and a scheduler and tokenizer without weights.
fn write_pipeline(root: &Path, denoiser: &str) {
    write(
        &root.join("model_index.json"),
        &format!(
            r#"{{"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
                "{denoiser}": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "scheduler": ["diffusers", "DDIMScheduler"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "safety_checker": [null, null],
                "feature_extractor": null}}"#
        ),
    );
    write(
        &root.join(denoiser).join("config.json"),
        r#"{"sample_size": 96, "in_channels": 4}"#,
    );
    save(
        &tensors("down.", 3, 500, 1.0),
        &root
            .join(denoiser)
            .join("diffusion_pytorch_model.safetensors"),
    );
    write(&root.join("vae/config.json"), r#"{"sample_size": 768}"#);
    save(
        &tensors("decoder.", 2, 300, 2.0),
        &root.join("vae/diffusion_pytorch_model.safetensors"),
    );
    write(
        &root.join("text_encoder/config.json"),
        r#"{"hidden_size": 8}"#,
    );
    write_sharded(
        &root.join("text_encoder"),
        "model",
        tensors("layer.", 4, 200, 3.0),
    );
    write(
        &root.join("scheduler/scheduler_config.json"),
        r#"{"num_train_timesteps": 1000}"#,
    );
    write(&root.join("tokenizer/vocab.json"), "{}");
}

#[tokio::test]
async fn sharded_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sharded");
    write_sharded(&root, "model", tensors("block.", 6, 1000, 0.0));
    write(&root.join("config.json"), r#"{"sample_size": [64, 64]}"#);
    let manager = ModelManager::new().unwrap();
    let snap = manager.load(&root).unwrap().await.unwrap();
    assert_eq!(snap.progress.tensors_total, 6);
    assert_eq!(manager.sample_size(), Some(64));
    let lease = manager.acquire().unwrap();
    assert_eq!(lease.tensor_count(), 6);
    let t = lease
        .tensor("block.5.weight")
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(t[7], (5 * 1000 + 7) as f32);
    drop(lease);
    manager.shutdown().await;
}

#[tokio::test]
async fn diffusers_sharded_denoiser() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("p");
    write(
        &root.join("model_index.json"),
        r#"{"transformer": ["diffusers", "SD3Transformer2DModel"]}"#,
    );
    write(
        &root.join("transformer/config.json"),
        r#"{"sample_size": 128}"#,
    );
    write_sharded(
        &root.join("transformer"),
        "diffusion_pytorch_model",
        tensors("t.", 4, 100, 0.0),
    );
    let manager = ModelManager::new().unwrap();
    manager.load(&root).unwrap().await.unwrap();
    assert_eq!(manager.sample_size(), Some(128));
    assert_eq!(manager.acquire().unwrap().tensor_count(), 4);
    manager.shutdown().await;
}

#[tokio::test]
async fn diffusers_pipeline() {
    for denoiser in ["unet", "transformer"] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pipeline");
        write_pipeline(&root, denoiser);
        let manager = ModelManager::new().unwrap();
        let snap = manager.load(&root).unwrap().await.unwrap();
        assert_eq!(snap.state, State::Ready);
        assert_eq!(
            manager.sample_size(),
            Some(96),
            "from {denoiser}/config.json"
        );
        let lease = manager.acquire().unwrap();
        let names: Vec<_> = lease.components().iter().map(|c| c.name()).collect();
        assert_eq!(
            names,
            [denoiser, "scheduler", "text_encoder", "tokenizer", "vae"]
                .iter()
                .copied()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        );
        let count = |c: &str| lease.component(c).unwrap().tensors().count();
        assert_eq!(count(denoiser), 3);
        assert_eq!(count("vae"), 2);
        assert_eq!(count("text_encoder"), 4);
        assert_eq!(count("scheduler"), 0, "recorded, not loaded");
        assert_eq!(count("tokenizer"), 0);
        assert_eq!(
            lease.component("scheduler").unwrap().config().unwrap()["num_train_timesteps"],
            1000
        );
        assert!(lease.tensor("vae/decoder.1.weight").is_some());
        assert_eq!(
            lease.info().config.as_ref().unwrap()["_class_name"],
            "StableDiffusionPipeline"
        );
        let expected = (3 * 500 + 2 * 300 + 4 * 200) * 4;
        assert_eq!(lease.info().bytes, expected);
        drop(lease);
        assert_eq!(manager.resident_bytes(), expected);
        manager.shutdown().await;
    }
}

#[tokio::test]
async fn pipeline_sample_size_falls_back_to_the_top_level_config() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("p");
    write(
        &root.join("model_index.json"),
        r#"{"vae": ["diffusers", "AutoencoderKL"]}"#,
    );
    save(
        &tensors("d.", 1, 10, 0.0),
        &root.join("vae/diffusion_pytorch_model.safetensors"),
    );
    write(&root.join("config.json"), r#"{"sample_size": 32}"#);
    let manager = ModelManager::new().unwrap();
    manager.load(&root).unwrap().await.unwrap();
    assert_eq!(manager.sample_size(), Some(32));
    manager.shutdown().await;
}

/// The hub cache: a snapshot whose files are symlinks into `blobs/`, found
/// through `refs/main`, by commit, through `HF_HUB_CACHE` and `HF_HOME`.
/// One test, because it sets process-wide environment variables.
#[tokio::test]
async fn hub_cache_entries_resolve_offline() {
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    let repo = hub.join("models--acme--tiny-sd");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = repo.join("snapshots").join(commit);
    write_pipeline(&dir.path().join("src"), "unet");
    // Move every file into blobs/ and link it from the snapshot, as the
    // hub client does.
    let mut stack = vec![dir.path().join("src")];
    let mut n = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(dir.path().join("src")).unwrap();
            let blob = repo.join("blobs").join(format!("blob{n}"));
            n += 1;
            std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
            std::fs::rename(&p, &blob).unwrap();
            let link = snapshot.join(rel);
            std::fs::create_dir_all(link.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(&blob, &link).unwrap();
        }
    }
    write(&repo.join("refs/main"), commit);

    std::env::set_var("HF_HUB_CACHE", &hub);
    let manager = ModelManager::new().unwrap();
    manager
        .load(ModelSource::hub("acme/tiny-sd"))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(manager.sample_size(), Some(96));
    manager.unload().await.unwrap();
    manager
        .load(ModelSource::hub_revision("acme/tiny-sd", commit))
        .unwrap()
        .await
        .unwrap();
    manager.unload().await.unwrap();

    // Unknown repo, unknown revision, bad ids: typed errors, no panic.
    let err = manager
        .load(ModelSource::hub("acme/other"))
        .unwrap()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("models--acme--other"), "{err}");
    let err = manager
        .load(ModelSource::hub_revision("acme/tiny-sd", "v2"))
        .unwrap()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("v2"), "{err}");
    for bad in ["../etc", "acme", "acme/../x", "/abs/path"] {
        let err = manager
            .load(ModelSource::hub(bad))
            .unwrap()
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            model_manager::ErrorCode::InvalidArgument,
            "{bad}: {err}"
        );
    }

    // HF_HOME/hub is used when HF_HUB_CACHE is unset.
    std::env::remove_var("HF_HUB_CACHE");
    std::env::set_var("HF_HOME", dir.path());
    manager.reset().unwrap();
    manager
        .load(ModelSource::hub("acme/tiny-sd"))
        .unwrap()
        .await
        .unwrap();
    manager.shutdown().await;
}

#[tokio::test]
async fn bytes_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    // One file.
    let model = common::write_model(dir.path(), "m", 5, 3, 2000);
    let bytes = std::fs::read(model.join("model.safetensors")).unwrap();
    let manager = ModelManager::new().unwrap();
    let source = ModelSource::bytes(bytes);
    manager.load(source.clone()).unwrap().await.unwrap();
    common::verify(&manager.acquire().unwrap(), 5);
    // The same buffer again is the same model: not reloaded.
    let generation = manager.snapshot().generation;
    manager.load(source).unwrap().await.unwrap();
    assert_eq!(manager.snapshot().generation, generation);

    // A whole diffusers pipeline as a map of files.
    let root = dir.path().join("pipeline");
    write_pipeline(&root, "unet");
    let mut files = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(&root).unwrap().to_str().unwrap().to_string();
                files.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    manager
        .load(ModelSource::files(files))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(manager.sample_size(), Some(96));
    let lease = manager.acquire().unwrap();
    assert_eq!(lease.tensor_count(), 9);
    drop(lease);

    // A map with a path escape is refused like a folder would be.
    let evil = ModelSource::files([("model_index.json", br#"{"../x": ["a", "b"]}"#.to_vec())]);
    let err = manager.load(evil).unwrap().await.unwrap_err();
    assert_eq!(err.code(), model_manager::ErrorCode::PathEscape);
    manager.shutdown().await;
}

#[tokio::test]
async fn dtype_conversion_while_loading() {
    let dir = tempfile::tempdir().unwrap();
    // Seed 0 keeps values within f16's range.
    let model = common::write_model(dir.path(), "m", 0, 4, 1000);
    for (dtype, size) in [(DType::F16, 2), (DType::BF16, 2), (DType::F32, 4)] {
        let manager = ModelManager::builder().dtype(dtype).build().unwrap();
        manager.load(&*model).unwrap().await.unwrap();
        let lease = manager.acquire().unwrap();
        for (_, _, t) in lease.tensors() {
            assert_eq!(t.dtype(), dtype);
        }
        let v = lease.tensor("layer002.weight").unwrap();
        let v = v.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
        assert!((v[3] - common::value(0, 2, 3)).abs() / common::value(0, 2, 3) < 1e-2);
        drop(lease);
        assert_eq!(manager.resident_bytes(), 4 * 1000 * size);
        manager.shutdown().await;
    }
    // Integers keep their dtype; non-float targets are refused.
    assert!(ModelManager::builder().dtype(DType::U8).build().is_err());
    let ints = dir.path().join("ints.safetensors");
    let mut map = HashMap::new();
    map.insert(
        "ids".to_string(),
        Tensor::from_vec(vec![1i64, 2, 3], 3, &Device::Cpu).unwrap(),
    );
    save(&map, &ints);
    let manager = ModelManager::builder().dtype(DType::F16).build().unwrap();
    manager.load(&ints).unwrap().await.unwrap();
    assert_eq!(
        manager.acquire().unwrap().tensor("ids").unwrap().dtype(),
        DType::I64
    );
    manager.shutdown().await;
}

#[tokio::test]
async fn every_candle_dtype_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.safetensors");
    let base = Tensor::from_vec(vec![1f32, 2., 3., 4.], 4, &Device::Cpu).unwrap();
    let mut map = HashMap::new();
    for dtype in [
        DType::U8,
        DType::U32,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::BF16,
        DType::F16,
        DType::F32,
        DType::F64,
    ] {
        map.insert(format!("{dtype:?}"), base.to_dtype(dtype).unwrap());
    }
    save(&map, &path);
    let manager = ModelManager::new().unwrap();
    manager.load(&path).unwrap().await.unwrap();
    let lease = manager.acquire().unwrap();
    for (name, t) in &map {
        let got = lease.tensor(name).unwrap();
        assert_eq!(got.dtype(), t.dtype());
        assert_eq!(
            got.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap(),
            vec![1., 2., 3., 4.]
        );
    }
    drop(lease);
    manager.shutdown().await;
}
