//! A candle-transformers BERT built from a lease computes exactly what the
//! same BERT computes when candle loads the same files itself (candle's
//! `VarBuilder::from_mmaped_safetensors`): bit for bit, in F32 and after a
//! conversion to F16 (the manager converting against candle converting).

#[path = "../examples/embed/bert.rs"]
mod bert;

use bert::{Batch, Bert, CLS, PAD, SEP};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use model_manager::{ModelManager, State};

/// Two sentences of different lengths (the second padded).
fn batch() -> Batch {
    let rows = [
        vec![CLS, 4, 6, 8, 9, 10, 12, SEP],
        vec![CLS, 5, 7, 8, 9, 11, SEP],
    ];
    Batch::new(&rows, PAD, &Device::Cpu).unwrap()
}

/// The same model as candle loads it on its own.
fn candle_reference(folder: &std::path::Path, dtype: DType) -> BertModel {
    let config: Config =
        serde_json::from_slice(&std::fs::read(folder.join("config.json")).unwrap()).unwrap();
    // SAFETY: the file is not modified while mapped (the test owns it).
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[folder.join("model.safetensors")],
            dtype,
            &Device::Cpu,
        )
    }
    .unwrap();
    BertModel::load(vb, &config).unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

async fn check(dtype: Option<DType>) {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("bert");
    bert::write_small_bert(&folder).unwrap();
    let mut builder = ModelManager::builder();
    if let Some(dtype) = dtype {
        builder = builder.dtype(dtype);
    }
    let manager = builder.pipeline::<Bert>().build().unwrap();
    manager.load(&folder).unwrap().await.unwrap();
    let stored = std::fs::metadata(folder.join("model.safetensors"))
        .unwrap()
        .len();
    let resident = manager.resident_bytes();
    match dtype {
        // All of a BERT's tensors are F32: converted to F16 they take half.
        Some(DType::F16) => assert!(resident * 2 < stored && resident * 2 > stored - 65_536),
        _ => assert!(resident < stored && resident > stored - 65_536),
    }

    let lease = manager.acquire().unwrap();
    let target = dtype.unwrap_or(DType::F32);
    assert_eq!(lease.dtype, target);
    assert_eq!(
        lease.config.hidden_size, 64,
        "the config came from config.json"
    );
    let input = batch();
    // Inference from the lease on a blocking thread, as an application runs it.
    let (hidden, embedded) = tokio::task::spawn_blocking(move || {
        let hidden = lease.hidden(&input).unwrap();
        let embedded = lease.embed(&input).unwrap();
        (hidden, embedded)
    })
    .await
    .unwrap();
    assert_eq!(hidden.dims(), &[2, 8, 64]);
    assert_eq!(hidden.dtype(), target);

    let reference = candle_reference(&folder, target);
    let input = batch();
    let expected = reference
        .forward(&input.ids, &input.types, Some(&input.mask))
        .unwrap();
    assert_eq!(
        bits(&hidden),
        bits(&expected),
        "hidden states differ from candle's own load ({target:?})"
    );
    let finite = bits(&embedded)
        .into_iter()
        .all(|b| f32::from_bits(b).is_finite());
    assert!(finite, "embeddings are finite");
    let own = bert::cosine(&embedded, 0, 0).unwrap();
    assert!(
        (own - 1.0).abs() < 1e-3,
        "embeddings are L2-normalised: {own}"
    );

    // The model's buffers are the manager's: an unload frees them.
    drop((hidden, embedded));
    manager.unload().await.unwrap();
    assert_eq!(manager.current_state(), State::Idle);
    assert_eq!(manager.resident_bytes(), 0);
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bert_from_a_lease_matches_candle_bit_for_bit() {
    check(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_f16_conversion_it_matches_candle_converting_itself() {
    check(Some(DType::F16)).await;
}

#[tokio::test]
async fn a_folder_that_is_not_a_bert_fails_the_load_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("bert");
    bert::write_small_bert(&folder).unwrap();
    // A config of another family: assemble refuses it, the load fails, and
    // what was read is freed.
    std::fs::write(folder.join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let manager = ModelManager::builder().pipeline::<Bert>().build().unwrap();
    let err = manager.load(&folder).unwrap().await.unwrap_err();
    assert_eq!(err.code(), model_manager::ErrorCode::Assemble, "{err}");
    assert_eq!(manager.current_state(), State::Failed);
    assert_eq!(manager.resident_bytes(), 0);
    manager.shutdown().await;
}
