//! [`RawLease`]: the ready model, kept alive and readable until released.

use model_manager::{ErrorCode, Lease, PoolLease, TensorPipeline};
use wasm_bindgen::prelude::*;

use crate::convert;
use crate::error::{js_error, to_js};

/// A manager's lease, or a pool's (which also knows its version).
enum Held {
    Manager(Lease),
    Pool(PoolLease),
}

impl std::ops::Deref for Held {
    type Target = TensorPipeline;

    fn deref(&self) -> &TensorPipeline {
        match self {
            Held::Manager(lease) => lease,
            Held::Pool(lease) => lease,
        }
    }
}

/// A lease on the ready model. While any lease is held, an unload waits in
/// `"unloading"`; `release()` (or `free()`) lets it finish.
#[wasm_bindgen]
pub struct RawLease {
    lease: Option<Held>,
}

impl RawLease {
    pub(crate) fn new(lease: Lease) -> Self {
        RawLease {
            lease: Some(Held::Manager(lease)),
        }
    }

    pub(crate) fn of_pool(lease: PoolLease) -> Self {
        RawLease {
            lease: Some(Held::Pool(lease)),
        }
    }

    fn held(&self) -> Result<&TensorPipeline, JsValue> {
        self.lease.as_deref().ok_or_else(|| {
            js_error(
                ErrorCode::InvalidArgument,
                "invalid argument: this lease has been released",
            )
        })
    }
}

/// The name a tensor is listed under: bare for a single-component model,
/// `component/name` for a pipeline (what `tensor()` accepts either way).
fn listed_name(single: bool, component: &str, name: &str) -> String {
    if single {
        name.to_owned()
    } else {
        format!("{component}/{name}")
    }
}

#[wasm_bindgen]
impl RawLease {
    /// Every tensor name: `name` for a single model, `component/name` for a
    /// diffusers pipeline.
    #[wasm_bindgen(js_name = tensorNames)]
    pub fn tensor_names(&self) -> Result<Vec<String>, JsValue> {
        let lease = self.held()?;
        let single = lease.components().len() == 1;
        Ok(lease
            .tensors()
            .map(|(component, name, _)| listed_name(single, component, name))
            .collect())
    }

    /// `{ dtype, shape, data }` for tensor `name` (`component/name` picks a
    /// component), or `undefined` when there is none.
    pub fn tensor(&self, name: &str) -> Result<JsValue, JsValue> {
        match self.held()?.tensor(name) {
            Some(tensor) => convert::tensor(tensor).map_err(|e| to_js(&e)),
            None => Ok(JsValue::UNDEFINED),
        }
    }

    /// The model's config facts: `{ sampleSize, bytes, tensors, config }`.
    #[wasm_bindgen(getter)]
    pub fn info(&self) -> Result<JsValue, JsValue> {
        Ok(convert::info(self.held()?.info()))
    }

    /// The components: `[{ name, config, tensors }]` (`tensors`: count).
    #[wasm_bindgen(getter)]
    pub fn components(&self) -> Result<js_sys::Array, JsValue> {
        let lease = self.held()?;
        Ok(lease.components().iter().map(convert::component).collect())
    }

    /// Let go of the model; later calls on this lease throw. Idempotent.
    pub fn release(&mut self) {
        self.lease = None;
    }

    /// Whether `release()` has been called.
    #[wasm_bindgen(getter)]
    pub fn released(&self) -> bool {
        self.lease.is_none()
    }

    /// Working memory reserved with a pool lease (0 for others).
    #[wasm_bindgen(getter, js_name = workingBytes)]
    pub fn working_bytes(&self) -> Result<f64, JsValue> {
        self.held()?;
        Ok(match &self.lease {
            Some(Held::Pool(lease)) => lease.working_bytes() as f64,
            _ => 0.0,
        })
    }

    /// A pool lease's model version (`undefined` for a manager's lease).
    #[wasm_bindgen(getter)]
    pub fn version(&self) -> Result<Option<f64>, JsValue> {
        self.held()?;
        Ok(match &self.lease {
            Some(Held::Pool(lease)) => Some(lease.version() as f64),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::listed_name;

    #[test]
    fn names_carry_their_component_only_in_pipelines() {
        assert_eq!(listed_name(true, "model", "w"), "w");
        assert_eq!(
            listed_name(false, "unet", "conv.weight"),
            "unet/conv.weight"
        );
    }
}
