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

/// A string in a protocol-2 pickle (BINUNICODE).
fn text(s: &str) -> Vec<u8> {
    let mut out = vec![b'X'];
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    out
}

fn int(n: u32) -> Vec<u8> {
    let mut out = vec![b'J'];
    out.extend_from_slice(&n.to_le_bytes());
    out
}

/// `torch._utils._rebuild_tensor_v2` of an f32 storage `key`, as
/// `torch.save` pickles a tensor.
fn tensor(key: &str, offset: u32, shape: &[u32], stride: &[u32]) -> Vec<u8> {
    let mut p = b"ctorch._utils\n_rebuild_tensor_v2\n((".to_vec();
    p.extend(text("storage"));
    p.extend_from_slice(b"ctorch\nFloatStorage\n");
    p.extend(text(key));
    p.extend(text("cpu"));
    p.extend(int(0));
    p.extend_from_slice(b"tQ");
    p.extend(int(offset));
    for dims in [shape, stride] {
        p.push(b'(');
        for &d in dims {
            p.extend(int(d));
        }
        p.push(b't');
    }
    p.extend_from_slice(b"\x89ccollections\nOrderedDict\n)RtR");
    p
}

/// A protocol-2 pickle of the dict `{name: value}` for each entry.
fn state(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut p = b"\x80\x02}(".to_vec();
    for (name, value) in entries {
        p.extend(text(name));
        p.extend_from_slice(value);
    }
    p.extend_from_slice(b"u.");
    p
}

/// A `torch.save` archive: `archive/data.pkl` and the storages
/// `archive/data/<key>`, stored uncompressed, as PyTorch lays one out.
fn write_zip(path: &Path, pickle: &[u8], storages: &[(&str, &[u8])]) {
    use std::io::Write;
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let stored = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    zip.start_file("archive/data.pkl", stored).unwrap();
    zip.write_all(pickle).unwrap();
    zip.start_file("archive/byteorder", stored).unwrap();
    zip.write_all(b"little").unwrap();
    for (key, bytes) in storages {
        zip.start_file(format!("archive/data/{key}"), stored)
            .unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

/// One f32 tensor `w` of `n` elements, `w[i] = i`.
fn write_archive(path: &Path, n: u32) {
    let data: Vec<u8> = (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect();
    write_zip(
        path,
        &state(&[("w", tensor("0", 0, &[n], &[1]))]),
        &[("0", &data)],
    );
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

async fn archive_error(pickle: &[u8], storages: &[(&str, &[u8])]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.pt");
    write_zip(&path, pickle, storages);
    let manager = ModelManager::new().unwrap();
    let err = load(&manager, path.as_path()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidModel, "{err}");
    manager.shutdown().await;
    err.to_string()
}

#[tokio::test]
async fn pickle_bombs_are_refused_without_copying() {
    // A 1 MiB key used 200,000 times through the memo: every copy would
    // take 200 GB; a 1.4 MB file.
    let mut p = b"\x80\x02}".to_vec();
    p.extend(text(&"k".repeat(1 << 20)));
    p.extend_from_slice(b"q\x00Nq\x0100(");
    for _ in 0..200_000 {
        p.extend_from_slice(b"h\x00h\x01");
    }
    p.extend_from_slice(b"u.");
    assert!(archive_error(&p, &[]).await.contains("holds no state dict"));
    // A 1 MiB string made a GLOBAL's module and name 200,000 times.
    let mut p = b"\x80\x02".to_vec();
    p.extend(text(&"m".repeat(1 << 20)));
    p.extend_from_slice(b"q\x000");
    for _ in 0..200_000 {
        p.extend_from_slice(b"h\x00h\x00\x930");
    }
    p.extend_from_slice(b"}.");
    assert!(archive_error(&p, &[]).await.contains("holds no state dict"));
    // Five million shared `None`s: the stack's bound, not all of memory.
    let mut p = b"\x80\x02".to_vec();
    p.extend(std::iter::repeat_n(b'N', 5_000_000));
    p.push(b'.');
    assert!(archive_error(&p, &[]).await.contains("stack grows past"));
}

#[tokio::test]
async fn a_name_twice_or_a_storage_read_a_thousand_times_is_refused() {
    let data = vec![0u8; 1 << 20];
    let w = tensor("0", 0, &[1 << 18], &[1]);
    let twice = state(&[("w", w.clone()), ("w", w.clone())]);
    let err = archive_error(&twice, &[("0", &data)]).await;
    assert!(err.contains("\"w\" is in the state dict twice"), "{err}");
    let names: Vec<String> = (0..1000).map(|i| format!("w{i}")).collect();
    let many: Vec<(&str, Vec<u8>)> = names.iter().map(|n| (n.as_str(), w.clone())).collect();
    let err = archive_error(&state(&many), &[("0", &data)]).await;
    assert!(err.contains("more than 4 times the file"), "{err}");
    // Tied weights (a storage read twice) load.
    let tied = state(&[("a", w.clone()), ("b", w)]);
    let dir = tempfile::tempdir().unwrap();
    write_zip(&dir.path().join("t.pt"), &tied, &[("0", &data)]);
    assert_eq!(loaded(dir.path().join("t.pt")).await.len(), 2);
}

#[tokio::test]
async fn empty_tensors_load_whatever_their_strides() {
    // PyTorch gives torch.zeros(2, 0) the strides (1, 1), and
    // torch.zeros(3, 0, 4) the strides (4, 4, 1).
    let p = state(&[
        ("a", tensor("0", 0, &[2, 0], &[1, 1])),
        ("b", tensor("0", 0, &[3, 0, 4], &[4, 4, 1])),
    ]);
    let dir = tempfile::tempdir().unwrap();
    write_zip(&dir.path().join("e.pt"), &p, &[("0", &[])]);
    let tensors = loaded(dir.path().join("e.pt")).await;
    assert_eq!(tensors["a"].dims(), &[2, 0]);
    assert_eq!(tensors["b"].dims(), &[3, 0, 4]);
}
