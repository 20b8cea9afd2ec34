//! The safetensors header: parsed and validated against the file before a
//! single tensor byte is allocated.
//!
//! Validation (contiguous, non-overlapping offsets that match shape × dtype)
//! is the reference `safetensors` crate's; on top of it this module checks
//! the header against the real file length, so a truncated file is an error
//! before reading, not a short read half-way.

use std::path::Path;

use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::Dtype;
use serde_json::Value;

use crate::{Error, Result};

/// The reference parser's cap on the header size.
const MAX_HEADER: u64 = 100_000_000;

/// One tensor as the header describes it.
#[derive(Debug, Clone)]
pub(crate) struct TensorEntry {
    pub(crate) name: String,
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    /// Absolute offset of the first byte in the file.
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

/// A parsed, validated header.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub(crate) tensors: Vec<TensorEntry>,
}

impl Header {
    pub(crate) fn data_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.len).sum()
    }
}

/// Parse the header from its first bytes; `read` reads `len` bytes at an
/// offset. `file_len` is the length of the whole file.
pub(crate) fn parse_header(
    path: &Path,
    file_len: u64,
    mut read: impl FnMut(u64, usize) -> std::io::Result<Vec<u8>>,
) -> Result<Header> {
    let bad = |problem: String| Error::invalid_model(path, problem);
    if file_len < 8 {
        return Err(bad(format!(
            "not a safetensors file: {file_len} bytes, too short for a header"
        )));
    }
    let prefix = read(0, 8).map_err(|e| Error::io(path, &e))?;
    let n = u64::from_le_bytes(prefix[..8].try_into().expect("8 bytes were read"));
    if n > MAX_HEADER {
        return Err(bad(format!(
            "header length {n} exceeds the {MAX_HEADER}-byte limit"
        )));
    }
    if n > file_len - 8 {
        return Err(bad(format!(
            "header length {n} is larger than the file ({file_len} bytes)"
        )));
    }
    let bytes = read(8, n as usize).map_err(|e| Error::io(path, &e))?;
    let text =
        std::str::from_utf8(&bytes).map_err(|e| bad(format!("header is not valid UTF-8: {e}")))?;
    let json: serde_json::Map<String, Value> =
        serde_json::from_str(text).map_err(|e| bad(format!("header is not a JSON object: {e}")))?;

    let mut infos = Vec::with_capacity(json.len());
    for (name, value) in json {
        if name == "__metadata__" {
            continue;
        }
        if let Some(dtype) = value.get("dtype").and_then(Value::as_str) {
            if serde_json::from_value::<Dtype>(Value::String(dtype.into())).is_err() {
                return Err(Error::UnsupportedDtype {
                    path: path.into(),
                    tensor: name,
                    dtype: dtype.into(),
                });
            }
        }
        let info: TensorInfo = serde_json::from_value(value)
            .map_err(|e| bad(format!("tensor {name:?}: invalid entry: {e}")))?;
        infos.push((name, info));
    }
    infos.sort_by_key(|(_, info)| info.data_offsets);
    let data_start = 8 + n;
    // Validate offsets, overlaps and sizes with the reference implementation.
    let metadata = Metadata::new(None, infos.clone()).map_err(|e| {
        bad(match e {
            safetensors::SafeTensorError::InvalidOffset(t) => {
                format!("tensor {t:?}: data offsets overlap, leave a gap or are out of order")
            }
            safetensors::SafeTensorError::TensorInvalidInfo => {
                "a tensor's data offsets do not match its shape and dtype".into()
            }
            safetensors::SafeTensorError::ValidationOverflow => "a tensor's shape overflows".into(),
            other => format!("invalid header: {other}"),
        })
    })?;
    let data_len = metadata.data_len() as u64;
    let available = file_len - data_start;
    if data_len > available {
        return Err(bad(format!(
            "file is truncated: the header describes {data_len} bytes of data, the file holds {available}"
        )));
    }
    let tensors = infos
        .into_iter()
        .map(|(name, info)| {
            let (start, end) = info.data_offsets;
            TensorEntry {
                name,
                dtype: info.dtype,
                shape: info.shape,
                offset: data_start + start as u64,
                len: (end - start) as u64,
            }
        })
        .collect();
    Ok(Header { tensors })
}
