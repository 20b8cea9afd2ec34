//! PyTorch weights (`torch.save` archives: `.pt`, `.pth`, `pytorch_model.bin`,
//! `diffusion_pytorch_model.bin`) load through the same read engine as
//! safetensors: files, folders, diffusers pipelines and bytes; the values
//! are PyTorch's; what cannot be read is an error that says why, never a
//! panic. The checkpoints in tests/data/pytorch were written by PyTorch
//! (`tests/data/pytorch/make.py`).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use model_manager::candle_core::{DType, Device, Tensor};
use model_manager::{Error, ErrorCode, ModelManager, ModelSource, State};

mod common;
use common::Gate;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/pytorch")
        .join(name)
}

async fn load(manager: &ModelManager, source: impl Into<ModelSource>) -> Result<(), Error> {
    manager.load(source)?.await.map(|_| ())
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// What make.py's `state()` holds.
fn check_state(tensors: &HashMap<String, Tensor>) {
    let a = &tensors["a"];
    assert_eq!((a.dtype(), a.dims()), (DType::F32, &[4, 4][..]));
    assert_eq!(f32s(a), (0..16).map(|i| i as f32).collect::<Vec<_>>());
    let b = &tensors["b"];
    assert_eq!((b.dtype(), b.dims()), (DType::F16, &[8][..]));
    assert_eq!(f32s(b), (0..8).map(|i| i as f32 * 0.5).collect::<Vec<_>>());
    let c = &tensors["c"];
    assert_eq!(c.dtype(), DType::BF16);
    assert_eq!(f32s(c), (0..8).map(|i| i as f32).collect::<Vec<_>>());
    let d = &tensors["d"];
    assert_eq!(d.dtype(), DType::I64);
    assert_eq!(d.to_vec1::<i64>().unwrap(), vec![1, -2, 3]);
    // A view into a's storage, from its 5th element.
    assert_eq!(f32s(&tensors["tied"]), vec![4.0, 5.0, 6.0, 7.0]);
    assert_eq!(f32s(&tensors["p"]), vec![3.0; 4]);
    let scalar = &tensors["scalar"];
    assert_eq!(scalar.dims(), &[] as &[usize]);
    assert_eq!(f32s(scalar), vec![7.0]);
    assert_eq!(tensors["empty"].dims(), &[0, 3]);
    assert_eq!(tensors.len(), 8);
}

async fn loaded(source: impl Into<ModelSource>) -> HashMap<String, Tensor> {
    let manager = ModelManager::new().unwrap();
    load(&manager, source).await.unwrap();
    assert_eq!(manager.current_state(), State::Ready);
    let lease = manager.acquire().unwrap();
    let tensors = lease
        .tensors()
        .map(|(_, name, t)| (name.to_string(), t.clone()))
        .collect();
    drop(lease);
    manager.shutdown().await;
    tensors
}

#[tokio::test]
async fn a_pt_file_loads_every_tensor_with_pytorchs_values() {
    check_state(&loaded(data("weights.pt")).await);
}

#[tokio::test]
async fn a_checkpoint_keeps_its_state_dict_under_a_key() {
    check_state(&loaded(data("checkpoint.pth")).await);
}

#[tokio::test]
async fn a_checkpoint_in_memory_loads() {
    let bytes = std::fs::read(data("weights.pt")).unwrap();
    check_state(&loaded(ModelSource::bytes(bytes)).await);
}

#[tokio::test]
async fn folders_with_pytorch_model_bin_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(data("weights.pt"), dir.path().join("pytorch_model.bin")).unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"sample_size": 32}"#).unwrap();
    let manager = ModelManager::new().unwrap();
    load(&manager, dir.path()).await.unwrap();
    assert_eq!(manager.sample_size(), Some(32));
    let tensors: HashMap<String, Tensor> = manager
        .acquire()
        .unwrap()
        .tensors()
        .map(|(_, n, t)| (n.to_string(), t.clone()))
        .collect();
    check_state(&tensors);
    manager.shutdown().await;
}

#[tokio::test]
async fn a_diffusers_pipeline_with_bin_components_loads() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("model_index.json"),
        r#"{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"]}"#,
    )
    .unwrap();
    for (component, file) in [
        ("unet", "diffusion_pytorch_model.bin"),
        ("vae", "diffusion_pytorch_model.bin"),
    ] {
        std::fs::create_dir_all(root.join(component)).unwrap();
        std::fs::copy(data("weights.pt"), root.join(component).join(file)).unwrap();
        std::fs::write(root.join(component).join("config.json"), "{}").unwrap();
    }
    let manager = ModelManager::new().unwrap();
    load(&manager, root).await.unwrap();
    let lease = manager.acquire().unwrap();
    for component in ["unet", "vae"] {
        let tensors: HashMap<String, Tensor> = lease
            .component(component)
            .unwrap()
            .tensors()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        check_state(&tensors);
    }
    drop(lease);
    manager.shutdown().await;
}

#[tokio::test]
async fn safetensors_is_preferred_when_both_are_present() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(data("weights.pt"), dir.path().join("pytorch_model.bin")).unwrap();
    let only = Tensor::new(&[42f32], &Device::Cpu).unwrap();
    model_manager::candle_core::safetensors::save(
        &HashMap::from([("only".to_string(), only)]),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let tensors = loaded(dir.path()).await;
    assert_eq!(tensors.keys().collect::<Vec<_>>(), vec!["only"]);
}

#[tokio::test]
async fn dtype_conversion_and_the_budget_apply_to_pytorch_weights() {
    let manager = ModelManager::builder().dtype(DType::F16).build().unwrap();
    load(&manager, data("weights.pt")).await.unwrap();
    let lease = manager.acquire().unwrap();
    let a = lease
        .tensors()
        .find(|(_, n, _)| *n == "a")
        .unwrap()
        .2
        .clone();
    assert_eq!(a.dtype(), DType::F16);
    assert_eq!(f32s(&a)[15], 15.0);
    drop(lease);
    manager.shutdown().await;

    // 64 + 16 + 16 + 24 + 16 + 16 + 4 bytes of tensors (`tied` is read
    // again from a's storage): a budget of 100 refuses it before reading.
    let manager = ModelManager::builder().memory_budget(100).build().unwrap();
    let err = load(&manager, data("weights.pt")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InsufficientMemory, "{err}");
    assert_eq!(manager.snapshot().resident_bytes, 0);
    manager.shutdown().await;
}

/// Load `source` and expect an error of `code` whose text has every one of
/// `words`.
async fn refused(source: impl Into<ModelSource>, code: ErrorCode, words: &[&str]) {
    let manager = ModelManager::new().unwrap();
    let err = load(&manager, source).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.code(), code, "{text}");
    for word in words {
        assert!(text.contains(word), "{text:?} lacks {word:?}");
    }
    assert_ne!(manager.current_state(), State::Ready);
    manager.shutdown().await;
}

#[tokio::test]
async fn what_cannot_be_read_is_an_error_that_says_why() {
    refused(
        data("transposed.pt"),
        ErrorCode::InvalidModel,
        &["\"t\"", "not contiguous", ".contiguous()"],
    )
    .await;
    refused(data("bool.pt"), ErrorCode::UnsupportedDtype, &["flag"]).await;
    refused(
        data("legacy.pt"),
        ErrorCode::InvalidModel,
        &["pickle", "PyTorch", "_use_new_zipfile_serialization"],
    )
    .await;
}

#[tokio::test]
async fn damaged_archives_are_errors_never_panics() {
    let whole = std::fs::read(data("weights.pt")).unwrap();
    // Cut at every 97th byte, and with every 89th byte flipped: each
    // either loads (a byte no tensor reads) or fails with an error.
    let mut cases: Vec<Vec<u8>> = (4..whole.len())
        .step_by(97)
        .map(|n| whole[..n].to_vec())
        .collect();
    for i in (0..whole.len()).step_by(89) {
        let mut bad = whole.clone();
        bad[i] ^= 0xff;
        cases.push(bad);
    }
    let manager = ModelManager::new().unwrap();
    for bytes in cases {
        match load(&manager, ModelSource::bytes(bytes)).await {
            Ok(()) => manager.unload().await.unwrap(),
            Err(e) => {
                assert!(
                    matches!(
                        e.code(),
                        ErrorCode::InvalidModel | ErrorCode::UnsupportedDtype
                    ),
                    "{e}"
                );
                if manager.current_state() == State::Failed {
                    manager.reset().unwrap();
                }
            }
        }
    }
    manager.shutdown().await;
}

/// A `torch.save` archive of one f32 tensor `w` of `n` elements (`w[i] =
/// i`), written as PyTorch lays it out: `archive/data.pkl` (protocol 2)
/// and the storage `archive/data/0`, stored uncompressed.
fn write_archive(path: &Path, n: u32) {
    use std::io::Write;
    let mut pkl = b"\x80\x02}(X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuJ".to_vec();
    pkl.extend_from_slice(&n.to_le_bytes());
    pkl.extend_from_slice(b"tQK\x00J");
    pkl.extend_from_slice(&n.to_le_bytes());
    pkl.extend_from_slice(b"\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtRu.");
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let stored = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    zip.start_file("archive/data.pkl", stored).unwrap();
    zip.write_all(&pkl).unwrap();
    zip.start_file("archive/byteorder", stored).unwrap();
    zip.write_all(b"little").unwrap();
    zip.start_file("archive/data/0", stored).unwrap();
    let data: Vec<u8> = (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect();
    zip.write_all(&data).unwrap();
    zip.finish().unwrap();
}

#[tokio::test]
async fn a_pytorch_load_reports_progress_and_cancels_at_any_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.pt");
    write_archive(&path, 1 << 20); // 4 MiB
    let gate = Gate::new();
    let manager = ModelManager::builder()
        .chunk_size(64 * 1024)
        .read_threads(1)
        .on_progress(gate.hook())
        .build()
        .unwrap();
    for pause_at in [1, 9, 63] {
        gate.close_at(pause_at);
        let handle = manager.load(path.as_path()).unwrap();
        gate.paused().await;
        assert_eq!(handle.progress().bytes_done, pause_at * 64 * 1024);
        assert_eq!(handle.progress().bytes_total, 4 << 20);
        assert!(manager.resident_bytes() > 0);
        manager.cancel().unwrap();
        gate.open();
        assert_eq!(handle.await.unwrap_err(), Error::Cancelled);
        common::eventually(|| manager.current_state() == State::Idle).await;
        assert_eq!(manager.resident_bytes(), 0, "cancelled at chunk {pause_at}");
    }
    // And uncancelled, every value is where PyTorch put it.
    manager.load(path.as_path()).unwrap().await.unwrap();
    let lease = manager.acquire().unwrap();
    let w = lease.tensors().next().unwrap().2.to_vec1::<f32>().unwrap();
    assert_eq!(w.len(), 1 << 20);
    assert!(w.iter().enumerate().all(|(i, v)| *v == i as f32));
    drop(lease);
    manager.shutdown().await;
}
