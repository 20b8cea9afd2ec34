//! Streamed sources: files fed through a `StreamWriter` while the load runs
//! (what a download does) load the same tensors as the folder on disk; a
//! stream that ends short, lies about its length, fails or is dropped ends
//! the load with the right error, and the manager stays usable.
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use model_manager::candle_core::{DType, Device, Tensor};
use model_manager::{ErrorCode, ModelManager, ModelSource, State, StreamWriter};

fn save(map: &HashMap<String, Tensor>, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    model_manager::candle_core::safetensors::save(map, path).unwrap();
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

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

/// A diffusers pipeline with a sharded text encoder, a scheduler and an
/// empty tensor and an f16 tensor in the unet.
fn write_pipeline(root: &Path) {
    write(
        &root.join("model_index.json"),
        r#"{"_class_name": "P", "unet": ["diffusers", "U"], "text_encoder": ["t", "T"],
            "scheduler": ["diffusers", "S"]}"#,
    );
    write(&root.join("unet/config.json"), r#"{"sample_size": 96}"#);
    let mut unet = tensors("down.", 3, 500, 1.0);
    unet.insert(
        "empty".into(),
        Tensor::zeros(0, DType::F32, &Device::Cpu).unwrap(),
    );
    unet.insert(
        "half".into(),
        Tensor::arange(0f32, 64., &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap(),
    );
    save(
        &unet,
        &root.join("unet/diffusion_pytorch_model.safetensors"),
    );
    let enc = tensors("layer.", 4, 200, 3.0);
    let mut names: Vec<_> = enc.keys().cloned().collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [&names[..2], &names[2..]].into_iter().enumerate() {
        let shard = format!("model-0000{}-of-00002.safetensors", i + 1);
        let sub: HashMap<_, _> = part.iter().map(|n| (n.clone(), enc[n].clone())).collect();
        save(&sub, &root.join("text_encoder").join(&shard));
        for n in part {
            weight_map.insert(n.clone(), shard.clone().into());
        }
    }
    write(
        &root.join("text_encoder/model.safetensors.index.json"),
        &serde_json::json!({ "weight_map": weight_map }).to_string(),
    );
    write(&root.join("scheduler/scheduler_config.json"), "{}");
}

/// Every file under `root`, as (relative name, bytes), in name order.
fn files_of(root: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path: PathBuf = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .replace('\\', "/");
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Feed `files` in pieces of `piece` bytes, as a download would.
async fn feed(
    writer: &StreamWriter,
    files: &[(String, Vec<u8>)],
    piece: usize,
) -> model_manager::Result<()> {
    for (name, bytes) in files {
        writer.writable().await?;
        writer.begin(name, Some(bytes.len() as u64))?;
        for chunk in bytes.chunks(piece) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let n = writer.write(rest)?;
                if n == 0 {
                    writer.writable().await?;
                }
                rest = &rest[n..];
            }
            tokio::task::yield_now().await;
        }
        writer.end()?;
    }
    writer.writable().await?;
    writer.finish()
}

/// Every tensor of the ready model, by `component/name`.
fn contents(manager: &ModelManager) -> Vec<(String, Vec<usize>, DType, Vec<f64>)> {
    let lease = manager.acquire().unwrap();
    let mut all: Vec<_> = lease
        .tensors()
        .map(|(c, n, t)| {
            let values = t
                .to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            (format!("{c}/{n}"), t.dims().to_vec(), t.dtype(), values)
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[tokio::test]
async fn a_streamed_pipeline_loads_what_the_folder_holds() {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path());
    let manager = ModelManager::new().unwrap();
    manager.load(dir.path()).unwrap().await.unwrap();
    let expected = contents(&manager);
    let expected_resident = manager.resident_bytes();
    manager.unload().await.unwrap();

    // Files in reverse order (weights before the JSON naming them), in
    // pieces that split headers and tensors anywhere.
    let mut files = files_of(dir.path());
    files.reverse();
    for piece in [7, 4096] {
        let (source, writer) = ModelSource::stream();
        let load = manager.load(source).unwrap();
        let (fed, loaded) = tokio::join!(feed(&writer, &files, piece), load);
        fed.unwrap();
        let snapshot = loaded.unwrap();
        assert_eq!(snapshot.progress.bytes_done, snapshot.progress.bytes_total);
        assert_eq!(
            snapshot.progress.tensors_done,
            snapshot.progress.tensors_total
        );
        assert_eq!(manager.sample_size(), Some(96));
        assert_eq!(contents(&manager), expected, "piece {piece}");
        // The tensors only: no copy of the files is held.
        assert_eq!(manager.resident_bytes(), expected_resident);
        manager.unload().await.unwrap();
    }
    manager.shutdown().await;
}

#[tokio::test]
async fn an_unused_weights_file_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline(dir.path());
    save(
        &tensors("x.", 2, 1000, 0.0),
        &dir.path().join("extra/stray.safetensors"),
    );
    let manager = ModelManager::builder().dtype(DType::F16).build().unwrap();
    let (source, writer) = ModelSource::stream();
    let load = manager.load(source).unwrap();
    let files = files_of(dir.path());
    let (fed, loaded) = tokio::join!(feed(&writer, &files, 1000), load);
    fed.unwrap();
    loaded.unwrap();
    let lease = manager.acquire().unwrap();
    let held: u64 = lease
        .tensors()
        .map(|(_, _, t)| (t.elem_count() * t.dtype().size_in_bytes()) as u64)
        .sum();
    assert!(lease.tensors().all(|(_, _, t)| t.dtype() == DType::F16));
    drop(lease);
    assert_eq!(manager.resident_bytes(), held);
    manager.shutdown().await;
}

/// A small model: (name, bytes).
fn one_file() -> (String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    save(&tensors("w.", 4, 4096, 0.5), &path);
    ("model.safetensors".into(), std::fs::read(path).unwrap())
}

/// Load a stream fed by `feeder`; returns the load's error.
async fn failing<F, Fut>(manager: &ModelManager, feeder: F) -> model_manager::Error
where
    F: FnOnce(StreamWriter) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (source, writer) = ModelSource::stream();
    let load = manager.load(source).unwrap();
    let ((), outcome) = tokio::join!(feeder(writer), load);
    let error = outcome.unwrap_err();
    assert_eq!(manager.current_state(), State::Failed, "{error}");
    assert_eq!(manager.resident_bytes(), 0);
    error
}

#[tokio::test]
async fn a_stream_that_ends_short_or_lies_fails_and_the_manager_stays_usable() {
    let (name, bytes) = one_file();
    let manager = ModelManager::new().unwrap();

    // Truncated: the connection closed half-way.
    let error = failing(&manager, |w| async move {
        w.begin(&name, None).unwrap();
        let half = &bytes[..bytes.len() / 2];
        let mut rest = half;
        while !rest.is_empty() {
            let n = w.write(rest).unwrap();
            if n == 0 {
                w.writable().await.unwrap();
            }
            rest = &rest[n..];
        }
        assert_eq!(w.end().unwrap_err().code(), ErrorCode::InvalidModel);
    })
    .await;
    assert_eq!(error.code(), ErrorCode::InvalidModel);
    assert!(error.to_string().contains("truncated"), "{error}");

    // A declared length (Content-Length) shorter than the header describes.
    let (name, bytes) = one_file();
    let error = failing(&manager, |w| async move {
        w.begin(&name, Some(bytes.len() as u64 - 100)).unwrap();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            match w.write(rest) {
                Ok(0) => {
                    if w.writable().await.is_err() {
                        return;
                    }
                }
                Ok(n) => rest = &rest[n..],
                Err(_) => return,
            }
        }
    })
    .await;
    assert_eq!(error.code(), ErrorCode::InvalidModel);

    // The producer gave up (a 404, a stall): its error is the load's.
    let error = failing(&manager, |w| async move {
        w.begin("model.safetensors", None).unwrap();
        w.write(&[1, 2, 3]).unwrap();
        w.abort(model_manager::Error::Timeout);
        assert_eq!(w.write(&[4]).unwrap_err(), model_manager::Error::Timeout);
    })
    .await;
    assert_eq!(error.code(), ErrorCode::Timeout);

    // A name that leaves the folder, or one given twice.
    let error = failing(&manager, |w| async move {
        let refused = w.begin("../model.safetensors", None).unwrap_err();
        assert_eq!(refused.code(), ErrorCode::PathEscape);
    })
    .await;
    assert_eq!(error.code(), ErrorCode::PathEscape);
    let error = failing(&manager, |w| async move {
        w.begin("config.json", None).unwrap();
        w.end().unwrap();
        assert!(w.begin("./config.json", None).is_err());
    })
    .await;
    assert_eq!(error.code(), ErrorCode::InvalidArgument);

    // Dropped before finishing.
    let error = failing(&manager, |w| async move {
        w.begin("config.json", None).unwrap();
        drop(w);
    })
    .await;
    assert_eq!(error.code(), ErrorCode::Io);

    // A memory budget smaller than the file: refused at its header.
    let small = ModelManager::builder().memory_budget(1000).build().unwrap();
    let (name, bytes) = one_file();
    let error = failing(&small, |w| async move {
        let files = [(name, bytes)];
        assert!(feed(&w, &files, 4096).await.is_err());
    })
    .await;
    assert_eq!(error.code(), ErrorCode::InsufficientMemory);
    small.shutdown().await;

    // Still usable.
    let (name, bytes) = one_file();
    let (source, writer) = ModelSource::stream();
    let load = manager.load(source).unwrap();
    let files = [(name, bytes)];
    let (fed, loaded) = tokio::join!(feed(&writer, &files, 999), load);
    fed.unwrap();
    loaded.unwrap();
    assert_eq!(manager.current_state(), State::Ready);
    manager.shutdown().await;
}

#[tokio::test]
async fn cancel_mid_stream_frees_and_tells_the_producer() {
    let (name, bytes) = one_file();
    let manager = ModelManager::new().unwrap();
    let (source, writer) = ModelSource::stream();
    let load = manager.load(source).unwrap();
    writer.begin(&name, Some(bytes.len() as u64)).unwrap();
    let mut rest = &bytes[..bytes.len() / 2];
    while !rest.is_empty() {
        let n = writer.write(rest).unwrap();
        if n == 0 {
            writer.writable().await.unwrap();
        }
        rest = &rest[n..];
    }
    assert!(manager.resident_bytes() > 0);
    manager.cancel().unwrap();
    let error = load.await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::Cancelled);
    assert_eq!(manager.current_state(), State::Idle);
    assert_eq!(manager.resident_bytes(), 0);
    assert!(writer.is_closed());
    assert_eq!(
        writer.writable().await.unwrap_err().code(),
        ErrorCode::Cancelled
    );
    manager.shutdown().await;
}

#[tokio::test]
async fn a_stream_is_loaded_once_and_cannot_be_inspected() {
    let (source, writer) = ModelSource::stream();
    assert_eq!(source, source.clone());
    assert_eq!(
        model_manager::inspect(&source).unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
    let (name, bytes) = one_file();
    let manager = ModelManager::new().unwrap();
    let load = manager.load(source.clone()).unwrap();
    let files = [(name, bytes)];
    let (fed, loaded) = tokio::join!(feed(&writer, &files, 1 << 20), load);
    fed.unwrap();
    loaded.unwrap();
    manager.unload().await.unwrap();
    let error = manager.load(source).unwrap().await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidArgument);
    manager.shutdown().await;
}

/// What a load of `files` ends with: every tensor, or the error's code.
type Outcome = Result<Vec<(String, Vec<usize>, DType, Vec<f64>)>, ErrorCode>;

async fn outcome(manager: &ModelManager, load: model_manager::LoadHandle) -> Outcome {
    let result = match load.await {
        Ok(_) => Ok(contents(manager)),
        Err(e) => Err(e.code()),
    };
    match manager.current_state() {
        State::Ready => manager.unload().await.unwrap(),
        State::Failed => {
            assert_eq!(manager.resident_bytes(), 0);
            manager.reset().unwrap();
        }
        other => panic!("the load ended in {other}"),
    }
    result
}

mod property {
    use super::*;
    use proptest::prelude::*;

    /// One change to one file: cut it short, or flip one byte.
    #[derive(Debug, Clone)]
    enum Damage {
        None,
        Cut { file: usize, at: usize },
        Flip { file: usize, at: usize, mask: u8 },
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            Just(Damage::None),
            (0..32usize, 0..1usize << 14).prop_map(|(file, at)| Damage::Cut { file, at }),
            (0..32usize, 0..1usize << 14, 1..=255u8).prop_map(|(file, at, mask)| Damage::Flip {
                file,
                at,
                mask
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Streamed in any order and any pieces, a folder (intact or
        /// damaged in one place) loads exactly as the same files in
        /// memory do: the same tensors, or an error of the same code.
        #[test]
        fn a_stream_loads_as_the_files_do(
            damage in damage(),
            order in Just(()).prop_perturb(|_, mut rng| {
                let mut order: Vec<usize> = (0..32).collect();
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.random_range(0..=i));
                }
                order
            }),
            pieces in prop::collection::vec(1usize..6000, 1..8),
        ) {
            let dir = tempfile::tempdir().unwrap();
            write_pipeline(dir.path());
            let mut files = files_of(dir.path());
            match damage {
                Damage::None => {}
                Damage::Cut { file, at } => {
                    let n = files.len();
                    let bytes = &mut files[file % n].1;
                    bytes.truncate(at % (bytes.len() + 1));
                }
                Damage::Flip { file, at, mask } => {
                    let n = files.len();
                    let bytes = &mut files[file % n].1;
                    if !bytes.is_empty() {
                        let i = at % bytes.len();
                        bytes[i] ^= mask;
                    }
                }
            }
            let ordered: Vec<(String, Vec<u8>)> = order
                .iter()
                .filter(|&&i| i < files.len())
                .map(|&i| files[i].clone())
                .collect();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let manager = ModelManager::new().unwrap();
                let in_memory = manager.load(ModelSource::files(files.clone())).unwrap();
                let expected = outcome(&manager, in_memory).await;
                let (source, writer) = ModelSource::stream();
                let load = manager.load(source).unwrap();
                let feeding = async {
                    // Pieces of varying size, as the network delivers them.
                    for (k, (name, bytes)) in ordered.iter().enumerate() {
                        if writer.writable().await.is_err() {
                            return;
                        }
                        if writer.begin(name, Some(bytes.len() as u64)).is_err() {
                            return;
                        }
                        let mut rest = &bytes[..];
                        let mut p = k;
                        while !rest.is_empty() {
                            let piece = pieces[p % pieces.len()].min(rest.len());
                            p += 1;
                            match writer.write(&rest[..piece]) {
                                Ok(0) => {
                                    if writer.writable().await.is_err() {
                                        return;
                                    }
                                }
                                Ok(n) => rest = &rest[n..],
                                Err(_) => return,
                            }
                        }
                        if writer.end().is_err() {
                            return;
                        }
                    }
                    if writer.writable().await.is_ok() {
                        let _ = writer.finish();
                    }
                };
                let ((), streamed) = tokio::join!(feeding, outcome(&manager, load));
                manager.shutdown().await;
                prop_assert_eq!(streamed, expected);
                Ok(())
            })?;
        }
    }
}

// ---- found in review (each failed before its fix) -------------------------

/// A stream load that never started (queued behind an unload waiting for a
/// lease, then cancelled) closes its stream: the producer stops waiting,
/// and what it wrote is freed.
#[tokio::test]
async fn a_queued_stream_load_that_is_dropped_closes_its_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.safetensors");
    save(&tensors("w.", 2, 1024, 1.0), &path);
    let manager = ModelManager::new().unwrap();
    manager.load(path.as_path()).unwrap().await.unwrap();
    let lease = manager.acquire().unwrap();
    let (source, writer) = ModelSource::stream();
    let load = manager.load(source).unwrap(); // waits for the unload, which waits for the lease
    writer.begin("config.json", Some(2)).unwrap();
    assert_eq!(writer.write(b"{}").unwrap(), 2);
    manager.cancel().unwrap();
    drop(load);
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), writer.writable()).await;
    assert!(
        matches!(closed, Ok(Err(_))),
        "the producer is told the stream is over: {closed:?}"
    );
    assert!(writer.is_closed());
    drop(lease);
    manager.shutdown().await;
}

/// A pool loads models again on demand: a stream cannot be one of them.
#[tokio::test]
async fn a_pool_refuses_a_stream() {
    let pool = model_manager::ModelPool::builder()
        .memory_budget(1 << 20)
        .runtime(tokio::runtime::Handle::current())
        .build()
        .unwrap();
    let (source, writer) = ModelSource::stream();
    let error = pool.add("s", source).unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidArgument);
    assert!(
        writer.is_closed(),
        "the refused stream is closed for its producer"
    );
    pool.shutdown().await;
}

/// Bytes after the tensor data (within the declared length) are taken and
/// dropped, not counted as progress.
#[tokio::test]
async fn trailing_bytes_are_not_progress() {
    let (name, mut bytes) = one_file();
    let data = bytes.len() as u64 - 8 - u64::from_le_bytes(bytes[..8].try_into().unwrap());
    bytes.extend_from_slice(&[0u8; 1000]);
    let manager = ModelManager::new().unwrap();
    let (source, writer) = ModelSource::stream();
    let load = manager.load(source).unwrap();
    let files = [(name, bytes)];
    let (fed, outcome) = tokio::join!(feed(&writer, &files, 4096), load);
    fed.unwrap();
    let snapshot = outcome.unwrap();
    assert_eq!(snapshot.progress.bytes_done, data);
    assert_eq!(snapshot.progress.bytes_total, data);
    manager.shutdown().await;
}

/// A small file's declared length is checked against what arrives.
#[tokio::test]
async fn a_small_file_shorter_or_longer_than_declared_fails() {
    let manager = ModelManager::new().unwrap();
    let (name, bytes) = one_file();
    let error = failing(&manager, |w| async move {
        w.begin("config.json", Some(1000)).unwrap();
        w.write(b"{}").unwrap();
        assert!(w.end().is_err());
        let _ = (name, bytes);
    })
    .await;
    assert_eq!(error.code(), ErrorCode::InvalidConfig);
    assert!(error.to_string().contains("truncated"), "{error}");
    let error = failing(&manager, |w| async move {
        w.begin("config.json", Some(1)).unwrap();
        assert!(w.write(b"{}").is_err());
    })
    .await;
    assert_eq!(error.code(), ErrorCode::InvalidConfig);
    manager.shutdown().await;
}

/// A header whose shape is absurdly long is refused while it is parsed
/// (it used to be parsed into a JSON tree 40 times its size).
#[tokio::test]
async fn a_header_with_a_huge_shape_is_refused() {
    let mut json = String::from("{\"w\":{\"dtype\":\"F32\",\"shape\":[");
    json.push_str(&vec!["1"; 100_000].join(","));
    json.push_str("],\"data_offsets\":[0,4]}}");
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(json.as_bytes());
    bytes.extend_from_slice(&[0u8; 4]);
    let manager = ModelManager::new().unwrap();
    let (source, writer) = ModelSource::stream();
    let load = manager.load(source).unwrap();
    let files = [("model.safetensors".to_string(), bytes)];
    let (_, outcome) = tokio::join!(feed(&writer, &files, 1 << 16), load);
    let error = outcome.unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidModel);
    assert!(error.to_string().contains("dimensions"), "{error}");
    manager.shutdown().await;
}

/// The ordinary producer pattern (`load`, feed, await the load) must not
/// hang when the load is cancelled or superseded while it waits its turn:
/// the producer's next wait fails at once, while the handle still lives.
#[tokio::test]
async fn a_queued_stream_load_that_is_stopped_releases_its_producer() {
    let (name, bytes) = one_file();
    for superseded in [false, true] {
        let manager = ModelManager::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other.safetensors");
        save(&tensors("o.", 2, 64, 1.0), &other);
        manager.load(other.as_path()).unwrap().await.unwrap();
        let lease = manager.acquire().unwrap();

        let (source, writer) = ModelSource::stream();
        let load = manager.load(source).unwrap(); // queued behind the unload
        writer.begin(&name, Some(bytes.len() as u64)).unwrap();
        let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mut rest = &bytes[..header];
        while !rest.is_empty() {
            let n = writer.write(rest).unwrap();
            assert!(n > 0, "a header is taken whole");
            rest = &rest[n..];
        }

        if superseded {
            let _next = manager.load(other.as_path()).unwrap();
        } else {
            manager.cancel().unwrap();
        }
        let error = load.wait().await.unwrap_err(); // `load` is still held
        let want = if superseded {
            ErrorCode::Superseded
        } else {
            ErrorCode::Cancelled
        };
        assert_eq!(error.code(), want);
        assert!(
            writer.is_closed(),
            "the producer is told, superseded={superseded}"
        );
        let waited =
            tokio::time::timeout(std::time::Duration::from_secs(10), writer.writable()).await;
        assert_eq!(waited.expect("writable() hung").unwrap_err().code(), want);
        drop(lease);
        drop(load);
        manager.shutdown().await;
    }
}

/// A weights file with no tensor data (one tensor of shape `[0]`) loads
/// from a stream as it does from memory.
#[tokio::test]
async fn a_weights_file_without_tensor_data_streams() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let mut empty = HashMap::new();
    empty.insert(
        "empty".to_string(),
        Tensor::zeros(0, DType::F32, &Device::Cpu).unwrap(),
    );
    save(&empty, &path);
    let bytes = std::fs::read(&path).unwrap();

    let manager = ModelManager::new().unwrap();
    manager
        .load(ModelSource::bytes(bytes.clone()))
        .unwrap()
        .await
        .unwrap();
    manager.unload().await.unwrap();

    let (source, writer) = ModelSource::stream();
    let load = manager.load(source).unwrap();
    let files = [("model.safetensors".to_string(), bytes)];
    let (fed, loaded) = tokio::join!(feed(&writer, &files, 3), load);
    fed.unwrap();
    loaded.unwrap();
    assert_eq!(manager.acquire().unwrap().tensor_count(), 1);
    manager.shutdown().await;
}

/// The documented producer pattern (`end()` then `finish()` at once) on a
/// file that ends with its header: `finish` is not refused while the load
/// is still allocating that file's (empty) buffers.
#[tokio::test]
async fn end_then_finish_at_once_on_a_file_without_tensor_data() {
    let header = br#"{"empty":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    for _ in 0..20 {
        let manager = ModelManager::new().unwrap();
        let (source, writer) = ModelSource::stream();
        let load = manager.load(source).unwrap();
        writer
            .begin("model.safetensors", Some(bytes.len() as u64))
            .unwrap();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = writer.write(rest).unwrap();
            assert!(n > 0);
            rest = &rest[n..];
        }
        writer.end().unwrap();
        writer.finish().unwrap();
        load.await.unwrap();
        assert_eq!(manager.acquire().unwrap().tensor_count(), 1);
        manager.shutdown().await;
    }
}
