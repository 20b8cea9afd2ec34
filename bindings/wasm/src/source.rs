//! [`RawSource`]: JS buffers copied into wasm memory as the core's
//! in-memory [`ModelSource`].
//!
//! The core identifies an in-memory model by its buffer (an `Arc`), so one
//! `RawSource` is one model. `RawManager` keeps the source of the current
//! model with the JS value it came from, so that loading the same JS object
//! (or URL) again is no reload (`RawManager::join`).

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
    bytes: u64,
    writer: Option<model_manager::StreamWriter>,
}

/// Check that `bytes` more can be allocated in wasm memory now, by
/// allocating and freeing them: an allocation that fails in Rust aborts the
/// whole wasm instance, so every large one is tried fallibly first. (The
/// allocator keeps the memory the probe grew, for the allocation that
/// follows.)
pub(crate) fn ensure_room(bytes: u64, what: &str) -> Result<(), JsValue> {
    let mut probe: Vec<u8> = Vec::new();
    let fits = usize::try_from(bytes).is_ok_and(|n| probe.try_reserve_exact(n).is_ok());
    if !fits {
        return Err(js_error(
            ErrorCode::InsufficientMemory,
            &format!(
                "{what} needs {bytes} more bytes than wasm memory can give \
                 (at most 4 GiB in all, 2 GiB in one buffer)"
            ),
        ));
    }
    Ok(())
}

/// Copy `data` into a buffer the core can share without copying again.
///
/// The buffer is allocated uninitialised and filled by one copy from JS:
/// zero-filling it first doubled the cost of this (synchronous) copy.
fn copy_in(data: &Uint8Array, what: &str) -> Result<Arc<[u8]>, JsValue> {
    ensure_room(u64::from(data.length()), what)?;
    let mut buffer = Arc::<[u8]>::new_uninit_slice(data.length() as usize);
    let dest = Arc::get_mut(&mut buffer).expect("a fresh Arc is unique");
    // Writes every byte of `dest` (it panics unless the lengths match).
    data.copy_to_uninit(dest);
    // SAFETY: `copy_to_uninit` initialised all `data.length()` bytes of the
    // slice, which has exactly that length, and nothing else holds the Arc.
    #[allow(unsafe_code)]
    let buffer = unsafe { buffer.assume_init() };
    Ok(buffer)
}

#[wasm_bindgen]
impl RawSource {
    /// One safetensors file.
    #[wasm_bindgen(js_name = fromBytes)]
    pub fn from_bytes(data: &Uint8Array) -> Result<RawSource, JsValue> {
        Ok(RawSource {
            bytes: u64::from(data.length()),
            writer: None,
            source: ModelSource::Bytes(copy_in(data, "the copy of the model")?),
        })
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
        let bytes = data.iter().map(|d| u64::from(d.length())).sum();
        let mut files = Vec::with_capacity(names.len());
        for (name, data) in names.into_iter().zip(&data) {
            let copy = copy_in(data, &format!("the copy of {name}"))?;
            files.push((name, copy));
        }
        Ok(RawSource {
            source: ModelSource::files(files),
            bytes,
            writer: None,
        })
    }

    /// A model whose files arrive while it loads; its writer is
    /// [`take_writer`](Self::take_writer)'s.
    pub fn stream() -> RawSource {
        let (source, writer) = ModelSource::stream();
        RawSource {
            source,
            bytes: 0,
            writer: Some(writer),
        }
    }

    /// The stream's writer (once; `undefined` for other sources).
    #[wasm_bindgen(js_name = takeWriter)]
    pub fn take_writer(&mut self) -> Option<crate::stream::RawStream> {
        self.writer.take().map(crate::stream::RawStream::new)
    }

    /// Bytes held in wasm memory.
    #[wasm_bindgen(getter, js_name = byteLength)]
    pub fn byte_length(&self) -> f64 {
        self.bytes as f64
    }
}

impl RawSource {
    /// Bytes held in wasm memory.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether the source is a stream (read once).
    pub(crate) fn is_stream(&self) -> bool {
        matches!(self.source, ModelSource::Stream(_))
    }
}
