//! A BERT sentence-embedding model built from what a [`ModelManager`]
//! loaded, and a small BERT with random weights to run it on without a
//! download. Shared by `examples/embed` and `tests/inference.rs`.
//!
//! [`ModelManager`]: model_manager::ModelManager

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candle_transformers::models::bert::{BertModel, Config};
use model_manager::{Assembly, Error, Pipeline, TensorPipeline};
use serde_json::json;

/// A BERT encoder, built through `candle-nn`'s `VarBuilder` over the loaded
/// tensors: the model holds the buffers the manager loaded (no copy), so
/// the manager's figures count them and an unload frees them.
pub struct Bert {
    pub model: BertModel,
    pub config: Config,
    /// The dtype the weights were loaded in (the manager's, after any
    /// conversion).
    pub dtype: DType,
}

impl Pipeline for Bert {
    type Options = ();

    fn assemble(loaded: TensorPipeline, cx: &Assembly<'_, ()>) -> model_manager::Result<Self> {
        let component = loaded
            .component("model")
            .ok_or_else(|| Error::Assemble("not a single-model folder".into()))?;
        let config = component
            .config()
            .cloned()
            .ok_or_else(|| Error::Assemble("the folder has no config.json".into()))?;
        let config: Config = serde_json::from_value(config)
            .map_err(|e| Error::Assemble(format!("config.json is not a BERT config: {e}")))?;
        let dtype = component.float_dtype().unwrap_or(DType::F32);
        let vb = VarBuilder::from_tensors(component.tensor_map(), dtype, cx.device());
        let model = BertModel::load(vb, &config).map_err(|e| Error::Assemble(e.to_string()))?;
        Ok(Bert {
            model,
            config,
            dtype,
        })
    }
}

/// Token ids, token types and attention mask of a padded batch.
pub struct Batch {
    pub ids: Tensor,
    pub types: Tensor,
    pub mask: Tensor,
}

impl Batch {
    /// A batch from rows of token ids, padded with `pad` to the longest.
    pub fn new(rows: &[Vec<u32>], pad: u32, device: &Device) -> candle_core::Result<Self> {
        let len = rows.iter().map(Vec::len).max().unwrap_or(0);
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for row in rows {
            for i in 0..len {
                ids.push(row.get(i).copied().unwrap_or(pad));
                mask.push(u32::from(i < row.len()));
            }
        }
        let shape = (rows.len(), len);
        let ids = Tensor::from_vec(ids, shape, device)?;
        Ok(Batch {
            types: ids.zeros_like()?,
            ids,
            mask: Tensor::from_vec(mask, shape, device)?,
        })
    }
}

impl Bert {
    /// The last hidden states, `[batch, tokens, hidden]`.
    pub fn hidden(&self, batch: &Batch) -> candle_core::Result<Tensor> {
        self.model
            .forward(&batch.ids, &batch.types, Some(&batch.mask))
    }

    /// One L2-normalised F32 embedding per row: the mean of its tokens'
    /// hidden states (padding excluded), as sentence-transformers pools.
    pub fn embed(&self, batch: &Batch) -> candle_core::Result<Tensor> {
        let hidden = self.hidden(batch)?.to_dtype(DType::F32)?;
        let mask = batch.mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
        mean.broadcast_div(&norm)
    }
}

/// Cosine similarity of two L2-normalised embeddings (rows of `embeddings`).
pub fn cosine(embeddings: &Tensor, a: usize, b: usize) -> candle_core::Result<f32> {
    let a = embeddings.get(a)?;
    let b = embeddings.get(b)?;
    (a * b)?.sum_all()?.to_scalar::<f32>()
}

/// The words of the small model's vocabulary (after the special tokens).
const WORDS: &[&str] = &[
    "the", "a", "cat", "dog", "sat", "on", "mat", "rug", "model", "manager", "loads", "weights",
    "from", "disk", "is", "was", "and", "runs", "fast", "slow", ".", ",",
];

/// The special tokens, with their ids (`[UNK]` is 1).
pub const PAD: u32 = 0;
pub const CLS: u32 = 2;
pub const SEP: u32 = 3;

/// Write a small BERT to `dir`: `config.json` with the real keys of a BERT
/// config, `model.safetensors` with random weights under the real tensor
/// names (those `BertModel::load` asks for), and a WordPiece
/// `tokenizer.json`. Its embeddings are meaningless; its shapes, names and
/// code paths are a real BERT's.
pub fn write_small_bert(dir: &Path) -> candle_core::Result<()> {
    write_bert(dir, 128, 64, 2)
}

/// Write a BERT as [`write_small_bert`] does, of this size (BERT-base is
/// `write_bert(dir, 30522, 768, 12)`: 110 million parameters, 438 MB).
pub fn write_bert(
    dir: &Path,
    vocab: usize,
    hidden: usize,
    layers: usize,
) -> candle_core::Result<()> {
    std::fs::create_dir_all(dir)?;
    let config = json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": (hidden / 64).max(4),
        "intermediate_size": hidden * 4,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": PAD,
        "position_embedding_type": "absolute",
        "use_cache": true,
        "classifier_dropout": null
    });
    std::fs::write(dir.join("config.json"), config.to_string())?;
    let config: Config = serde_json::from_value(config).map_err(candle_core::Error::wrap)?;
    let weights = VarMap::new();
    BertModel::load(
        VarBuilder::from_varmap(&weights, DType::F32, &Device::Cpu),
        &config,
    )?;
    weights.save(dir.join("model.safetensors"))?;

    let mut vocab = serde_json::Map::new();
    let special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"];
    let letters = ('a'..='z').map(|c| c.to_string());
    let pieces = ('a'..='z').map(|c| format!("##{c}"));
    let tokens = special
        .iter()
        .map(|s| s.to_string())
        .chain(WORDS.iter().map(|s| s.to_string()))
        .chain(letters)
        .chain(pieces);
    for (id, token) in tokens.enumerate() {
        vocab.insert(token, json!(id));
    }
    let added: Vec<_> = special
        .iter()
        .enumerate()
        .map(|(id, s)| {
            json!({"id": id, "content": s, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true,
                       "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", SEP], "cls": ["[CLS]", CLS]},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string())?;
    Ok(())
}
