//! A candle-transformers BERT built from a lease computes exactly what the
//! same BERT computes when candle loads the same files itself (candle's
//! `VarBuilder::from_mmaped_safetensors`): bit for bit. After a conversion
//! to F16 or BF16 every weight is bit-identical to candle's own conversion.
//! The forward pass is compared in F32 only: candle-transformers 0.11's
//! BERT fills its attention mask with `f32::MIN`, which rounds to `-inf` in
//! F16 and BF16, and `0 * -inf` makes every output NaN (in candle's own
//! load as in ours), so a half-precision forward proves nothing.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bert_from_a_lease_matches_candle_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("bert");
    bert::write_small_bert(&folder).unwrap();
    let manager = ModelManager::builder().pipeline::<Bert>().build().unwrap();
    manager.load(&folder).unwrap().await.unwrap();
    let stored = std::fs::metadata(folder.join("model.safetensors"))
        .unwrap()
        .len();
    let resident = manager.resident_bytes();
    assert!(
        resident < stored && resident > stored - 65_536,
        "{resident} of {stored}"
    );

    let lease = manager.acquire().unwrap();
    assert_eq!(lease.dtype, DType::F32);
    assert_eq!(
        lease.config.hidden_size, 64,
        "the config came from config.json"
    );
    // Inference from the lease on a blocking thread, as an application runs it.
    let input = batch();
    let (hidden, embedded) = tokio::task::spawn_blocking(move || {
        let hidden = lease.hidden(&input).unwrap();
        let embedded = lease.embed(&input).unwrap();
        (hidden, embedded)
    })
    .await
    .unwrap();
    assert_eq!(hidden.dims(), &[2, 8, 64]);

    let reference = candle_reference(&folder, DType::F32);
    let input = batch();
    let expected = reference
        .forward(&input.ids, &input.types, Some(&input.mask))
        .unwrap();
    assert_eq!(
        bits(&hidden),
        bits(&expected),
        "hidden states differ from candle's own load"
    );
    let finite = bits(&hidden)
        .into_iter()
        .chain(bits(&embedded))
        .all(|b| f32::from_bits(b).is_finite());
    assert!(finite, "hidden states and embeddings are finite");
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

#[tokio::test]
async fn f16_conversion_is_candles_bit_for_bit() {
    converted_like_candle(DType::F16).await;
}

#[tokio::test]
async fn bf16_conversion_is_candles_bit_for_bit() {
    converted_like_candle(DType::BF16).await;
}

async fn converted_like_candle(dtype: DType) {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("bert");
    bert::write_small_bert(&folder).unwrap();
    let manager = ModelManager::builder().dtype(dtype).build().unwrap();
    manager.load(&folder).unwrap().await.unwrap();
    let lease = manager.acquire().unwrap();
    // SAFETY: the file is not modified while mapped (the test owns it).
    let candle = unsafe {
        candle_core::safetensors::MmapedSafetensors::new(folder.join("model.safetensors"))
    }
    .unwrap();
    let mut compared = 0;
    for (_, name, tensor) in lease.tensors() {
        let expected = candle
            .load(name, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        assert_eq!(tensor.dtype(), dtype, "{name}");
        assert_eq!(tensor.dims(), expected.dims(), "{name}");
        assert_eq!(bits(tensor), bits(&expected), "{name}");
        compared += 1;
    }
    assert_eq!(compared, candle.tensors().len());
    drop(lease);
    manager.shutdown().await;
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
