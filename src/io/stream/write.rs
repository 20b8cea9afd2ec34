//! The write itself, under the stream's lock: bytes into the small file,
//! header or tensor that the producer's file is at; and the end of a file.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use std::path::PathBuf;

use super::shared::{stream_error, Body, Current, Inner};
use crate::error::{Error, Result};
use crate::io::files::MAX_JSON_BYTES;
use crate::io::safetensors::MAX_HEADER;

/// A weights file the producer has ended: `Done` when every byte of its
/// tensor data (and of its declared length) arrived, else the file stays
/// as it is and the error says it is truncated.
pub(crate) fn ended(body: Box<Body>) -> (Current, Option<Error>) {
    let want = body.declared.unwrap_or(0).max(body.data_end());
    if body.pos >= want {
        return (Current::Done(body), None);
    }
    let name = body.file.path.display().to_string();
    let error = stream_error(
        &name,
        format!(
            "file is truncated: it ended after {} of {want} bytes",
            body.pos
        ),
    );
    (Current::Body(body), Some(error))
}

/// The write itself, under the lock.
pub(crate) fn write_locked(
    inner: &mut Inner,
    max: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Result<usize> {
    match &mut inner.current {
        Current::None => Err(Error::InvalidArgument(
            "write() without a file begun".into(),
        )),
        Current::Allocating { ended: true, .. } => {
            Err(Error::InvalidArgument("write() after end()".into()))
        }
        Current::Allocating { .. } | Current::Done(_) => Ok(0),
        Current::Small {
            name,
            declared,
            bytes,
        } => {
            if let Some(want) = *declared {
                if (bytes.len() as u64).saturating_add(max as u64) > want {
                    return Err(Error::InvalidConfig {
                        path: PathBuf::from(name.as_str()),
                        problem: format!("more bytes arrived than the file holds ({want})"),
                    });
                }
            }
            let room = usize::try_from(MAX_JSON_BYTES)
                .unwrap_or(usize::MAX)
                .saturating_sub(bytes.len());
            if max > room {
                return Err(Error::InvalidConfig {
                    path: PathBuf::from(name.as_str()),
                    problem: format!("larger than the {MAX_JSON_BYTES}-byte limit for small files"),
                });
            }
            append(bytes, max, fill, name)?;
            Ok(max)
        }
        Current::Header {
            name,
            declared,
            bytes,
        } => {
            let want = match bytes.get(..8).and_then(|p| <[u8; 8]>::try_from(p).ok()) {
                None => 8usize.saturating_sub(bytes.len()),
                Some(prefix) => {
                    let n = u64::from_le_bytes(prefix);
                    if n > MAX_HEADER {
                        return Err(stream_error(
                            name,
                            format!("header length {n} exceeds the {MAX_HEADER}-byte limit"),
                        ));
                    }
                    // n <= MAX_HEADER: fits in usize on every target.
                    usize::try_from(n)
                        .unwrap_or(usize::MAX)
                        .saturating_add(8)
                        .saturating_sub(bytes.len())
                }
            };
            let n = max.min(want);
            append(bytes, n, fill, name)?;
            let complete = match bytes.get(..8).and_then(|p| <[u8; 8]>::try_from(p).ok()) {
                Some(prefix) => bytes.len() as u64 == u64::from_le_bytes(prefix).saturating_add(8),
                None => false,
            };
            if complete {
                let (name, declared, bytes) =
                    (std::mem::take(name), *declared, std::mem::take(bytes));
                inner.current = Current::Allocating {
                    name,
                    declared,
                    bytes,
                    ended: false,
                };
            }
            Ok(n)
        }
        Current::Body(body) => {
            let end = body.declared.unwrap_or(0).max(body.data_end());
            if body.pos >= end {
                let name = body.file.path.display().to_string();
                return Err(stream_error(
                    &name,
                    format!("more bytes arrived than the file holds ({end})"),
                ));
            }
            let (before, data_end) = (body.pos, body.data_end());
            let n = write_body(body, max, fill)?;
            // Progress counts tensor bytes: trailing bytes after the data
            // are taken and dropped, not counted.
            let counted = body.pos.min(data_end).saturating_sub(before.min(data_end));
            inner.written = inner.written.saturating_add(counted);
            let done = body.advance_cursor();
            inner.tensors_done = inner.tensors_done.saturating_add(done);
            Ok(n)
        }
    }
}

/// Append `n` bytes, filled by `fill`, to a small buffer (fallibly).
pub(crate) fn append(
    bytes: &mut Vec<u8>,
    n: usize,
    fill: impl FnOnce(&mut [u8]),
    name: &str,
) -> Result<()> {
    if bytes.try_reserve(n).is_err() {
        return Err(Error::InsufficientMemory {
            needed: n as u64,
            available: 0,
            pinned: 0,
        });
    }
    let start = bytes.len();
    bytes.resize(start.saturating_add(n), 0);
    match bytes.get_mut(start..) {
        Some(dest) => fill(dest),
        None => return Err(stream_error(name, "internal: append out of range")),
    }
    Ok(())
}

/// Copy up to `max` bytes into the tensor the file position is in.
pub(crate) fn write_body(
    body: &mut Body,
    max: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Result<usize> {
    let data_end = body.data_end();
    if body.pos >= data_end {
        // Trailing bytes after the tensor data: taken, dropped.
        let end = body.declared.unwrap_or(data_end);
        let n = max.min(usize::try_from(end.saturating_sub(body.pos)).unwrap_or(usize::MAX));
        body.pos = body.pos.saturating_add(n as u64);
        return Ok(n);
    }
    let internal = || stream_error(&body.file.path.display().to_string(), "internal: bad write");
    let entry = body
        .file
        .header
        .tensors
        .get(body.cursor)
        .ok_or_else(internal)?;
    let &(group, at) = body
        .prepared
        .placement
        .get(body.cursor)
        .ok_or_else(internal)?;
    let within = body.pos.checked_sub(entry.offset).ok_or_else(internal)?;
    let left = entry.len.saturating_sub(within);
    let n = max.min(usize::try_from(left).unwrap_or(usize::MAX));
    let start = usize::try_from(at.saturating_add(within)).map_err(|_| internal())?;
    let buffer = body.prepared.buffers.get_mut(group).ok_or_else(internal)?;
    let dest = buffer
        .bytes_mut()
        .and_then(|b| b.get_mut(start..start.saturating_add(n)))
        .ok_or_else(internal)?;
    fill(dest);
    body.pos = body.pos.saturating_add(n as u64);
    Ok(n)
}
