//! What a read produces: named candle-core tensors per component, with the
//! parsed configs ([`TensorPipeline`]). The built-in pipeline type, and
//! what every [`Pipeline::assemble`](crate::Pipeline::assemble) is given.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Tensor};
use serde_json::Value;

/// One component of a pipeline (the whole model, for a single-model source).
#[derive(Debug, Clone)]
pub struct Component {
    pub(crate) name: String,
    pub(crate) config: Option<Value>,
    pub(crate) tensors: BTreeMap<String, Tensor>,
}

impl Component {
    /// The component's name (`"model"` for a single-model source, else the
    /// subfolder name such as `"unet"`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The component's parsed `config.json`, if it has one.
    pub fn config(&self) -> Option<&Value> {
        self.config.as_ref()
    }

    /// A tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Every tensor, by name.
    pub fn tensors(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Every tensor by name, as `candle-nn`'s `VarBuilder::from_tensors`
    /// takes them. The tensors share the loaded buffers (a tensor clone is
    /// a reference), so nothing is copied.
    pub fn tensor_map(&self) -> HashMap<String, Tensor> {
        self.tensors
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The dtype of the component's floating-point tensors (of the first,
    /// by name, if they differ); `None` if it has none.
    pub fn float_dtype(&self) -> Option<DType> {
        self.tensors
            .values()
            .map(Tensor::dtype)
            .find(|d| d.is_float())
    }
}

/// Named candle-core tensors per component, plus the parsed configs.
#[derive(Debug, Clone)]
pub struct TensorPipeline {
    pub(crate) components: Vec<Component>,
    pub(crate) info: PipelineInfo,
}

impl TensorPipeline {
    /// The components, in load order.
    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// A component by name.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    /// A tensor by name: `"name"` searches every component in order,
    /// `"component/name"` one component.
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        if let Some((component, rest)) = name.split_once('/') {
            if let Some(t) = self.component(component).and_then(|c| c.tensor(rest)) {
                return Some(t);
            }
        }
        self.components.iter().find_map(|c| c.tensor(name))
    }

    /// Every tensor as `(component, name, tensor)`.
    pub fn tensors(&self) -> impl Iterator<Item = (&str, &str, &Tensor)> {
        self.components
            .iter()
            .flat_map(|c| c.tensors().map(move |(n, t)| (c.name(), n, t)))
    }

    /// Number of tensors in all components.
    pub fn tensor_count(&self) -> usize {
        self.components.iter().map(|c| c.tensors.len()).sum()
    }

    /// The pipeline's config facts.
    pub fn info(&self) -> &PipelineInfo {
        &self.info
    }
}

/// Config facts of a loaded pipeline, kept beside it whatever its type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PipelineInfo {
    /// The denoiser's `sample_size` (or the model's), when its config has one.
    pub sample_size: Option<u64>,
    /// The top-level config (`config.json` or `model_index.json`).
    pub config: Option<Value>,
    /// Bytes of tensor data.
    pub bytes: u64,
    /// Number of tensors.
    pub tensors: u64,
}
