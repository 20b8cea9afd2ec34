//! [`RawStream`]: the producer's end of a streamed model. The JS wrapper
//! reads a download (a `fetch` body, a `Blob`, a `ReadableStream`) and
//! hands each chunk to [`RawStream::write`], which copies it from JS
//! straight into its tensor's final place in wasm memory: the model is
//! never held whole in JS nor copied twice in wasm.

use std::path::PathBuf;
use std::rc::Rc;

use js_sys::{Promise, Uint8Array};
use model_manager::{Error, ErrorCode, StreamWriter};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::future_to_promise;

use crate::error::{js, js_error};

/// Feeds one streamed model's files to its load; see the core's
/// `StreamWriter`.
#[wasm_bindgen]
pub struct RawStream {
    /// Shared with the futures behind `writable()`.
    writer: Rc<StreamWriter>,
}

impl RawStream {
    pub(crate) fn new(writer: StreamWriter) -> Self {
        RawStream {
            writer: Rc::new(writer),
        }
    }
}

/// A byte count from JS: a non-negative integer.
fn length(value: f64, what: &str) -> Result<u64, JsValue> {
    if value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value <= 2f64.powi(53) {
        Ok(value as u64)
    } else {
        Err(js_error(
            ErrorCode::InvalidArgument,
            &format!("invalid argument: {what} must be a byte count, not {value}"),
        ))
    }
}

#[wasm_bindgen]
impl RawStream {
    /// Start the next file (`unet/config.json`, `model.safetensors`);
    /// `len` from `Content-Length` when known.
    pub fn begin(&self, name: &str, len: Option<f64>) -> Result<(), JsValue> {
        let len = len.map(|n| length(n, "a file length")).transpose()?;
        js(self.writer.begin(name, len))
    }

    /// Copy as much of `data` as the stream takes now into wasm memory (a
    /// tensor's final place, or a header or small file); returns how many
    /// bytes. 0: await `writable()`, then write the rest.
    pub fn write(&self, data: &Uint8Array) -> Result<u32, JsValue> {
        // wasm-bindgen does not check the type of an imported argument:
        // anything else (an ArrayBuffer, a DataView) would make the copy
        // below throw in JS while the stream's lock is held.
        if !data.is_instance_of::<Uint8Array>() {
            return Err(js_error(
                ErrorCode::InvalidArgument,
                "invalid argument: a stream chunk must be a Uint8Array",
            ));
        }
        let n = js(self.writer.write_with(data.length() as usize, |dest| {
            // `dest` is at most `data.length()` long: the lengths match.
            data.subarray(0, dest.len() as u32).copy_to(dest);
        }))?;
        Ok(n as u32)
    }

    /// Resolves once the stream takes bytes again; rejects with the load's
    /// error once the load is over.
    pub fn writable(&self) -> Promise {
        let writer = self.writer.clone();
        future_to_promise(async move {
            js(writer.writable().await)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// The current file is complete (a short weights file fails the load).
    pub fn end(&self) -> Result<(), JsValue> {
        js(self.writer.end())
    }

    /// Every file is in.
    pub fn finish(&self) -> Result<(), JsValue> {
        js(self.writer.finish())
    }

    /// The download failed: the load fails with this error. `code`: 10
    /// (MissingFile: `path` is the URL), 17 (Timeout), 8 (InvalidModel), 1
    /// (InvalidArgument);
    /// anything else is 7 (Io), with `message`.
    pub fn abort(&self, code: u32, path: &str, message: &str) {
        let path = PathBuf::from(path);
        let error = match code {
            10 => Error::MissingFile { path },
            17 => Error::Timeout,
            1 => Error::InvalidArgument(message.to_owned()),
            8 => Error::InvalidModel {
                path,
                problem: message.to_owned(),
            },
            _ => Error::Io {
                path,
                message: message.to_owned(),
                kind: std::io::ErrorKind::Other,
            },
        };
        self.writer.abort(error);
    }

    /// Whether the load is over or the stream failed.
    #[wasm_bindgen(getter, js_name = isClosed)]
    pub fn is_closed(&self) -> bool {
        self.writer.is_closed()
    }
}
