//! [`RawSource`]: JS buffers copied into wasm memory as the core's
//! in-memory [`ModelSource`].
//!
//! The core identifies an in-memory model by its buffer (an `Arc`), so one
//! `RawSource` is one model: loading the same `RawSource` again while it is
//! loading or ready is not a reload. The JS wrapper keeps the `RawSource`
//! of the current model to give JS objects the same identity.

use std::sync::Arc;

use js_sys::Uint8Array;
use model_manager::ModelSource;
use wasm_bindgen::prelude::*;

use crate::error::js_error;
use model_manager::ErrorCode;

/// A model held in wasm memory: one safetensors file, or a folder or
/// diffusers layout as named files.
#[wasm_bindgen]
pub struct RawSource {
    pub(crate) source: ModelSource,
    bytes: usize,
}

/// Copy `data` into a buffer the core can share without copying again.
fn copy_in(data: &Uint8Array) -> Arc<[u8]> {
    let len = data.length() as usize;
    // `RepeatN` knows its length: one allocation, straight into the Arc.
    let mut buffer: Arc<[u8]> = std::iter::repeat_n(0u8, len).collect();
    let dest = Arc::get_mut(&mut buffer).expect("a fresh Arc is unique");
    data.copy_to(dest);
    buffer
}

#[wasm_bindgen]
impl RawSource {
    /// One safetensors file.
    #[wasm_bindgen(js_name = fromBytes)]
    pub fn from_bytes(data: &Uint8Array) -> RawSource {
        RawSource {
            bytes: data.length() as usize,
            source: ModelSource::Bytes(copy_in(data)),
        }
    }

    /// A model folder or diffusers layout: `names[i]` (a relative path such
    /// as `unet/config.json`) holds `data[i]`.
    #[wasm_bindgen(js_name = fromFiles)]
    pub fn from_files(names: Vec<String>, data: Vec<Uint8Array>) -> Result<RawSource, JsValue> {
        if names.len() != data.len() {
            return Err(js_error(
                ErrorCode::InvalidArgument,
                "invalid argument: as many file names as buffers are needed",
            ));
        }
        if names.is_empty() {
            return Err(js_error(
                ErrorCode::InvalidArgument,
                "invalid argument: a model needs at least one file",
            ));
        }
        let bytes = data.iter().map(|d| d.length() as usize).sum();
        let files: Vec<(String, Arc<[u8]>)> =
            names.into_iter().zip(data.iter().map(copy_in)).collect();
        Ok(RawSource {
            source: ModelSource::files(files),
            bytes,
        })
    }

    /// Bytes held in wasm memory.
    #[wasm_bindgen(getter, js_name = byteLength)]
    pub fn byte_length(&self) -> f64 {
        self.bytes as f64
    }
}
