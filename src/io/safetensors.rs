//! The safetensors header: parsed and validated against the file before a
//! single tensor byte is allocated.
//!
//! Validation (contiguous, non-overlapping offsets that match shape × dtype)
//! is the reference `safetensors` crate's; on top of it this module checks
//! the header against the real file length, so a truncated file is an error
//! before reading, not a short read half-way.
//!
//! Every number in a header is untrusted: offsets and lengths are added and
//! subtracted checked, so no header makes this module panic or overflow.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::Dtype;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::hint;
use crate::error::{Error, Result};

/// The reference parser's cap on the header size.
pub(crate) const MAX_HEADER: u64 = 100_000_000;

/// The most dimensions a tensor may have. A header is parsed straight into
/// these typed entries, never into a JSON tree, and a shape longer than
/// this is refused while it is read: what a header holds in memory stays a
/// small multiple of its length (a `serde_json::Value` tree of a long
/// shape took 40 bytes per byte of header, enough to exhaust wasm memory).
pub(crate) const MAX_RANK: usize = 64;

/// One tensor's entry, as written.
#[derive(serde::Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Shape,
    data_offsets: (Offset, Offset),
}

/// A byte offset: a whole number that fits in `usize`, refused with words
/// that say so (serde's own would be "invalid type: floating point").
struct Offset(usize);

impl<'de> Deserialize<'de> for Offset {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Bytes;
        impl Visitor<'_> for Bytes {
            type Value = Offset;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a byte offset (a whole number from 0 to {})", usize::MAX)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Offset, E> {
                usize::try_from(v)
                    .map(Offset)
                    .map_err(|_| E::custom(format!("data offset {v} is beyond {}", usize::MAX)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Offset, E> {
                u64::try_from(v).map_or_else(
                    |_| {
                        Err(E::custom(format!(
                            "data offset {v} is not a valid byte offset"
                        )))
                    },
                    |v| self.visit_u64(v),
                )
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<Offset, E> {
                Err(E::custom(format!(
                    "data offset {v} is not a valid byte offset (a whole number from 0 to {})",
                    usize::MAX
                )))
            }
        }
        d.deserialize_u64(Bytes)
    }
}

struct Shape(Vec<usize>);

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Dims;
        impl<'de> Visitor<'de> for Dims {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a shape of at most {MAX_RANK} dimensions")
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Shape, A::Error> {
                let mut dims = Vec::new();
                while let Some(dim) = seq.next_element::<usize>()? {
                    if dims.len() == MAX_RANK {
                        return Err(serde::de::Error::custom(format!(
                            "a shape of more than {MAX_RANK} dimensions"
                        )));
                    }
                    dims.push(dim);
                }
                Ok(Shape(dims))
            }
        }
        d.deserialize_seq(Dims)
    }
}

/// The header's tensors by name (`__metadata__` skipped without keeping
/// it; a name given twice keeps its last entry, as a JSON object would).
struct Entries(BTreeMap<String, RawEntry>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Tensors;
        impl<'de> Visitor<'de> for Tensors {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of tensors")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Entries, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(name) = map.next_key::<String>()? {
                    if name == "__metadata__" {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                    let entry = map.next_value::<RawEntry>().map_err(|e| {
                        serde::de::Error::custom(format!("tensor {name:?}: invalid entry: {e}"))
                    })?;
                    out.insert(name, entry);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(Tensors)
    }
}

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
        self.tensors
            .iter()
            .fold(0u64, |sum, t| sum.saturating_add(t.len))
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
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    );
    // What the first bytes look like, for a file that is not safetensors
    // (`known`: the bytes read so far, all there is if no more can be read).
    let looks_like = |read: &mut dyn FnMut(u64, usize) -> std::io::Result<Vec<u8>>,
                      known: &[u8]| {
        let more = read(0, usize::try_from(file_len.min(32)).unwrap_or(32));
        hint::looks_like(&name, more.as_deref().unwrap_or(known))
    };
    let short =
        read(0, usize::try_from(file_len.min(8)).unwrap_or(8)).map_err(|e| Error::io(path, &e))?;
    let Some(prefix) = short.get(..8).and_then(|p| <[u8; 8]>::try_from(p).ok()) else {
        let what = if short.is_empty() {
            String::new()
        } else {
            format!("; {}", looks_like(&mut read, &short))
        };
        return Err(bad(format!(
            "not a safetensors file: {file_len} bytes, too short for a header{what}"
        )));
    };
    let n = u64::from_le_bytes(prefix);
    // A header is a JSON object: what follows its length is `{` (or
    // whitespace before it).
    let first = if n > 0 && file_len > 8 {
        read(8, 1).map_err(|e| Error::io(path, &e))?
    } else {
        Vec::new()
    };
    if first
        .first()
        .is_some_and(|b| !matches!(b, b'{' | b' ' | b'\t' | b'\n' | b'\r'))
    {
        let known: Vec<u8> = short.iter().chain(&first).copied().collect();
        return Err(bad(format!(
            "not a safetensors file (one begins with an 8-byte header length and a JSON \
             header): {}",
            looks_like(&mut read, &known)
        )));
    }
    if n > MAX_HEADER {
        return Err(bad(format!(
            "not a safetensors file: its first 8 bytes give a header length of {n}, beyond \
             the {MAX_HEADER}-byte limit"
        )));
    }
    // `file_len >= 8` was checked above.
    let after_prefix = file_len.saturating_sub(8);
    if n > after_prefix {
        return Err(bad(format!(
            "the file is cut short: its header length {n} is larger than the file \
             ({file_len} bytes)"
        )));
    }
    let header_len =
        usize::try_from(n).map_err(|_| bad(format!("header length {n} does not fit in memory")))?;
    let bytes = read(8, header_len).map_err(|e| Error::io(path, &e))?;
    let text =
        std::str::from_utf8(&bytes).map_err(|e| bad(format!("header is not valid UTF-8: {e}")))?;
    let Entries(entries) = serde_json::from_str(text)
        .map_err(|e| bad(format!("header is not a valid JSON object of tensors: {e}")))?;

    let mut infos = Vec::with_capacity(entries.len());
    for (name, entry) in entries {
        let Ok(dtype) = serde_json::from_value::<Dtype>(Value::String(entry.dtype.clone())) else {
            return Err(Error::UnsupportedDtype {
                path: path.into(),
                tensor: name,
                dtype: entry.dtype,
            });
        };
        let (Offset(start), Offset(end)) = entry.data_offsets;
        let info = TensorInfo {
            dtype,
            shape: entry.shape.0,
            data_offsets: (start, end),
        };
        infos.push((name, info));
    }
    infos.sort_by_key(|(_, info)| info.data_offsets);
    // n <= file_len - 8, so neither overflows.
    let data_start = n.saturating_add(8);
    let available = file_len.saturating_sub(data_start);
    // Validate offsets, overlaps and sizes with the reference implementation.
    let metadata = Metadata::new(None, infos.clone()).map_err(|e| {
        bad(match e {
            safetensors::SafeTensorError::InvalidOffset(t) => {
                offsets_problem(&infos, &t, available)
            }
            safetensors::SafeTensorError::TensorInvalidInfo => {
                "a tensor's data offsets do not match its shape and dtype".into()
            }
            safetensors::SafeTensorError::ValidationOverflow => "a tensor's shape overflows".into(),
            other => format!("invalid header: {other}"),
        })
    })?;
    let data_len = metadata.data_len() as u64;
    if data_len > available {
        return Err(bad(format!(
            "file is truncated: the header describes {data_len} bytes of data, the file holds {available}"
        )));
    }
    let mut tensors = Vec::with_capacity(infos.len());
    for (name, info) in infos {
        // The reference validation guarantees start <= end <= data_len;
        // checked all the same, so a change there cannot become a panic here.
        let (start, end) = info.data_offsets;
        let (start, end) = (start as u64, end as u64);
        let (Some(offset), Some(len)) = (data_start.checked_add(start), end.checked_sub(start))
        else {
            return Err(bad(format!(
                "tensor {name:?}: data offsets [{start}, {end}] are out of order"
            )));
        };
        tensors.push(TensorEntry {
            name,
            dtype: info.dtype,
            shape: info.shape,
            offset,
            len,
        });
    }
    Ok(Header { tensors })
}

/// What is wrong with tensor `name`'s offsets, which the reference
/// validation refused: beyond the file's `available` bytes of data, or
/// overlapping, leaving a gap or out of order.
fn offsets_problem(infos: &[(String, TensorInfo)], name: &str, available: u64) -> String {
    let offsets = infos
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, info)| info.data_offsets);
    match offsets {
        Some((start, end)) if start as u64 > available || end as u64 > available => format!(
            "tensor {name:?}: data offsets [{start}, {end}] are out of range: beyond the end \
             of the file, which holds {available} bytes of data after its header"
        ),
        _ => format!("tensor {name:?}: data offsets overlap, leave a gap or are out of order"),
    }
}
