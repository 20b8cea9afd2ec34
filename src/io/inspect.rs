//! Inspecting a model from its headers and configs alone: what a load would
//! read, without reading or allocating any tensor.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use serde_json::Value;

use super::plan::resolve;
use super::source::ModelSource;
use crate::error::Result;

/// One tensor as its file's header describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSummary {
    /// The tensor's name.
    pub name: String,
    /// The dtype as written in the file (`F32`, `BF16`, ...).
    pub dtype: String,
    /// The shape.
    pub shape: Vec<usize>,
    /// Bytes of data.
    pub bytes: u64,
    /// The file holding it.
    pub file: String,
}

/// One component of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentSummary {
    /// `"model"` for a single model, else the pipeline's component name.
    pub name: String,
    /// Its parsed config, if any.
    pub config: Option<Value>,
    /// Its tensors, in file order (none for a scheduler or tokenizer).
    pub tensors: Vec<TensorSummary>,
}

/// What a model holds, read from headers and configs only.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSummary {
    /// The components, in load order.
    pub components: Vec<ComponentSummary>,
    /// The top-level config (`config.json` or `model_index.json`).
    pub config: Option<Value>,
    /// `sample_size` as a load would report it.
    pub sample_size: Option<u64>,
    /// Bytes of tensor data in all files.
    pub bytes: u64,
    /// Number of tensors.
    pub tensors: u64,
}

/// Read a model's headers and configs, validating them as a load would,
/// without reading any tensor data. Blocking (file I/O).
///
/// ```no_run
/// let summary = model_manager::inspect(&"models/tiny".into())?;
/// for c in &summary.components {
///     println!("{}: {} tensors", c.name, c.tensors.len());
/// }
/// # Ok::<(), model_manager::Error>(())
/// ```
pub fn inspect(source: &ModelSource) -> Result<ModelSummary> {
    let plan = resolve(source)?;
    let (bytes, tensors) = (plan.bytes(), plan.tensor_count());
    Ok(ModelSummary {
        components: plan
            .components
            .into_iter()
            .map(|c| ComponentSummary {
                tensors: c
                    .files
                    .iter()
                    .flat_map(|f| {
                        f.header.tensors.iter().map(move |t| TensorSummary {
                            name: t.name.clone(),
                            dtype: format!("{:?}", t.dtype),
                            shape: t.shape.clone(),
                            bytes: t.len,
                            file: f.path.display().to_string(),
                        })
                    })
                    .collect(),
                name: c.name,
                config: c.config,
            })
            .collect(),
        config: plan.config,
        sample_size: plan.sample_size,
        bytes,
        tensors,
    })
}
