//! A diffusers pipeline in the pool as one model per component
//! (`ModelPool::add_pipeline`): each component loads, is leased, evicted
//! and reloaded on its own.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use model_manager::candle_core::{Device, Tensor};
use model_manager::{Error, ModelPool, State};

const MIB: u64 = 1 << 20;

/// A pipeline of three 1 MiB components (f32 filled with `value` + their
/// index) and a scheduler without weights.
fn write_pipeline(root: &Path, value: f32) {
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(
        root.join("model_index.json"),
        r#"{"_class_name": "StableDiffusionPipeline",
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "scheduler": ["diffusers", "DDIMScheduler"]}"#,
    )
    .unwrap();
    for (i, (name, file)) in [
        ("unet", "diffusion_pytorch_model.safetensors"),
        ("vae", "diffusion_pytorch_model.safetensors"),
        ("text_encoder", "model.safetensors"),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            format!(r#"{{"sample_size": {}}}"#, 64 + i),
        )
        .unwrap();
        let t = Tensor::full(value + i as f32, 1 << 18, &Device::Cpu).unwrap();
        let map: HashMap<String, Tensor> = [("w".to_string(), t)].into();
        model_manager::candle_core::safetensors::save(&map, dir.join(file)).unwrap();
    }
    std::fs::create_dir_all(root.join("scheduler")).unwrap();
    std::fs::write(
        root.join("scheduler/scheduler_config.json"),
        r#"{"num_train_timesteps": 1000}"#,
    )
    .unwrap();
}

fn first_value(lease: &model_manager::TensorPipeline) -> f32 {
    let (_, _, t) = lease.tensors().next().unwrap();
    t.to_vec1::<f32>().unwrap()[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_component_loads_and_is_evicted_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sd");
    write_pipeline(&root, 10.0);
    // Room for two components.
    let pool = ModelPool::builder()
        .memory_budget(2 * MIB + MIB / 2)
        .build()
        .unwrap();
    let ids = pool.add_pipeline("sd", root.as_path()).unwrap();
    assert_eq!(
        ids.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        ["sd/text_encoder", "sd/unet", "sd/vae"].into(),
        "the components with weights, not the scheduler"
    );
    for (id, value) in [
        ("sd/unet", 10.0),
        ("sd/vae", 11.0),
        ("sd/text_encoder", 12.0),
    ] {
        let lease = pool.acquire(id).await.unwrap();
        // Only its component, with the pipeline's index as its config.
        let components: Vec<_> = lease.tensors().map(|(c, _, _)| c.to_string()).collect();
        assert_eq!(components, [id.trim_start_matches("sd/")], "{id}");
        assert_eq!(first_value(&lease), value, "{id}");
        assert_eq!(
            lease.info().config.as_ref().unwrap()["_class_name"],
            "StableDiffusionPipeline"
        );
        assert_eq!(pool.status(id).unwrap().charged_bytes, MIB, "{id}");
    }
    // The third evicted the least recently used: the unet.
    let s = pool.snapshot();
    assert_eq!(s.counters.evictions, 1);
    assert_eq!(s.model("sd/unet").unwrap().state, State::Idle);
    assert_eq!(s.model("sd/vae").unwrap().state, State::Ready);
    assert_eq!(s.model("sd/text_encoder").unwrap().state, State::Ready);
    // The unet comes back alone, evicting the vae.
    assert_eq!(first_value(&pool.acquire("sd/unet").await.unwrap()), 10.0);
    assert_eq!(pool.status("sd/vae").unwrap().state, State::Idle);

    // A reload of one component takes that component of the new source.
    let v2 = dir.path().join("sd-v2");
    write_pipeline(&v2, 20.0);
    pool.reload("sd/vae", v2.as_path()).await.unwrap();
    assert_eq!(first_value(&pool.acquire("sd/vae").await.unwrap()), 21.0);
    pool.shutdown().await;
}

#[tokio::test]
async fn what_is_not_a_pipeline_or_collides_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sd");
    write_pipeline(&root, 1.0);
    let pool = ModelPool::builder()
        .memory_budget(64 * MIB)
        .build()
        .unwrap();
    // One model, not a pipeline.
    let single = root.join("unet/diffusion_pytorch_model.safetensors");
    let err = pool.add_pipeline("one", single.as_path()).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let err = pool
        .add_pipeline("unet", root.join("unet").as_path())
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    // A pipeline with nothing to load: refused as a load would be.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("scheduler")).unwrap();
    std::fs::write(
        empty.join("model_index.json"),
        r#"{"scheduler": ["diffusers", "DDIMScheduler"]}"#,
    )
    .unwrap();
    std::fs::write(empty.join("scheduler/scheduler_config.json"), "{}").unwrap();
    let err = pool.add_pipeline("e", empty.as_path()).unwrap_err();
    assert!(matches!(err, Error::InvalidModel { .. }), "{err:?}");
    // A missing folder: the path's error.
    assert!(pool
        .add_pipeline("gone", dir.path().join("gone").as_path())
        .is_err());
    // An id taken: all or nothing.
    pool.add("sd/vae", single.as_path()).unwrap();
    let err = pool.add_pipeline("sd", root.as_path()).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert_eq!(pool.snapshot().models.len(), 1);
    // Once free, the pipeline goes in whole.
    pool.remove("sd/vae").await.unwrap();
    assert_eq!(pool.add_pipeline("sd", root.as_path()).unwrap().len(), 3);
    // A component whose weights went missing since: said when it loads
    // (not an empty model).
    std::fs::remove_dir_all(root.join("vae")).unwrap();
    let err = pool.acquire("sd/vae").await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    // One taken out of the index too.
    std::fs::write(
        root.join("model_index.json"),
        r#"{"unet": ["diffusers", "UNet2DConditionModel"]}"#,
    )
    .unwrap();
    assert!(pool.acquire("sd/text_encoder").await.is_err());
    assert!(pool.acquire("sd/unet").await.is_ok());
    pool.shutdown().await;
}
