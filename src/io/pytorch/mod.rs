//! PyTorch weights (`pytorch_model.bin`, `diffusion_pytorch_model.bin`,
//! `.pt`, `.pth`): the zip archive `torch.save` writes since PyTorch 1.6,
//! read as a header like a safetensors file's, so that the one read engine
//! loads it with the same guarantees (the budget checked before a byte is
//! allocated, progress, cancel at every chunk, dtype conversion, CUDA).
//!
//! The archive holds `<dir>/data.pkl`, the pickled state dict, and one
//! record per storage (`<dir>/data/<key>`), stored uncompressed. The pickle
//! is read by a restricted unpickler that runs nothing ([`unpickle`]); each
//! tensor in it (`torch._utils._rebuild_tensor_v2(storage, offset, size,
//! stride, ...)`) becomes an entry at its bytes' offset in the archive. A
//! tensor must be contiguous (as a state dict's are); tensors that share a
//! storage (tied weights) are each read from it.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod tensors;
mod unpickle;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use self::tensors::{place, rebuild, state_dict};
use self::unpickle::unpickle;
use super::reader::{read_exact_at, Reader};
use super::safetensors::Header;
use crate::error::{Error, Result};

/// The largest `data.pkl` read: 64 MiB (a state dict's pickle is names and
/// shapes, a few hundred bytes per tensor).
const MAX_PICKLE: u64 = 64 << 20;

/// How many times over its tensors may read an archive's bytes: tensors
/// that share a storage (tied weights) are each read from it.
const MAX_REREAD: u64 = 4;

/// Whether `head` (a file's first bytes) is a zip archive.
pub(crate) fn is_archive(head: &[u8]) -> bool {
    head.starts_with(b"PK\x03\x04")
}

/// A `Read + Seek` view of a [`Reader`], for the zip directory.
struct At<'r> {
    reader: &'r Reader,
    pos: u64,
    len: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let Some(dest) = buf.get_mut(..n) else {
            return Ok(0);
        };
        read_exact_at(self.reader, dest, self.pos)?;
        self.pos = self.pos.saturating_add(n as u64);
        Ok(n)
    }
}

impl Seek for At<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or(std::io::ErrorKind::InvalidInput)?;
        Ok(self.pos)
    }
}

/// One archive member: where its bytes start, and how many.
#[derive(Clone, Copy)]
struct Member {
    start: u64,
    len: u64,
}

/// Parse a PyTorch archive of `len` bytes into a header of its tensors.
pub(crate) fn parse(path: &Path, reader: &Reader, len: u64) -> Result<Header> {
    let bad = |problem: String| Error::invalid_model(path, problem);
    let mut zip = zip::ZipArchive::new(At {
        reader,
        pos: 0,
        len,
    })
    .map_err(|e| bad(format!("not a readable PyTorch archive (a zip): {e}")))?;
    // Every member, by name: where its bytes are.
    let mut members: HashMap<String, Member> = HashMap::new();
    let mut pickle_name = None;
    for i in 0..zip.len() {
        let member = zip
            .by_index_raw(i)
            .map_err(|e| bad(format!("archive member {i} cannot be read: {e}")))?;
        let name = member.name().map(|n| n.into_owned()).unwrap_or_default();
        let start = member.data_start().unwrap_or(u64::MAX);
        let stored = member.compression() == zip::CompressionMethod::Stored;
        let size = member.size();
        drop(member);
        if name.ends_with("/data.pkl") || name == "data.pkl" {
            if pickle_name.is_some() {
                return Err(bad("the archive holds more than one data.pkl".into()));
            }
            pickle_name = Some(name.clone());
        }
        if !stored {
            // Only the records a tensor names need to be stored; a
            // compressed one is refused when a tensor names it.
            continue;
        }
        if start.checked_add(size).is_none_or(|end| end > len) {
            return Err(bad(format!(
                "archive member {name:?} lies past the end of the file"
            )));
        }
        members.insert(name, Member { start, len: size });
    }
    let Some(pickle_name) = pickle_name else {
        return Err(bad(
            "a zip archive without data.pkl: not a PyTorch checkpoint (torch.save)".into(),
        ));
    };
    let prefix = pickle_name
        .strip_suffix("data.pkl")
        .unwrap_or_default()
        .to_string();
    if let Some(order) = members.get(&format!("{prefix}byteorder")) {
        let mut bytes = vec![0u8; usize::try_from(order.len.min(16)).unwrap_or(16)];
        read_exact_at(reader, &mut bytes, order.start).map_err(|e| Error::io(path, &e))?;
        if bytes != b"little" {
            return Err(bad(
                "the checkpoint was saved big-endian; only little-endian is read".into(),
            ));
        }
    }
    let Some(pkl) = members.get(&pickle_name).copied() else {
        return Err(bad(
            "data.pkl is compressed; PyTorch stores it uncompressed".into(),
        ));
    };
    if pkl.len > MAX_PICKLE {
        return Err(bad(format!(
            "data.pkl is {} bytes, beyond the {MAX_PICKLE}-byte limit",
            pkl.len
        )));
    }
    let mut bytes =
        vec![0u8; usize::try_from(pkl.len).map_err(|_| bad("data.pkl too large".into()))?];
    read_exact_at(reader, &mut bytes, pkl.start).map_err(|e| Error::io(path, &e))?;
    let pickle = unpickle(&bytes).map_err(|e| bad(format!("data.pkl: {e}")))?;
    let state = state_dict(&pickle).ok_or_else(|| {
        bad(
            "data.pkl holds no state dict (a dict of tensors, at the top or under \
             \"state_dict\", \"model\", ...)"
                .into(),
        )
    })?;
    let mut tensors = Vec::with_capacity(state.len());
    let mut names = HashSet::new();
    let mut total = 0u64;
    for (name, value) in state {
        let Some(tensor) = rebuild(&pickle, value) else {
            continue; // not a tensor (a step counter, a config value)
        };
        if !names.insert(name) {
            return Err(bad(format!("tensor {name:?} is in the state dict twice")));
        }
        let tensor = tensor.map_err(|problem| bad(format!("tensor {name:?}: {problem}")))?;
        let record = members
            .get(&format!("{prefix}data/{}", tensor.key))
            .copied();
        let entry = place(name, tensor, record).map_err(bad)?;
        // Tensors that share a storage (tied weights, views) are each read
        // from it: a bound on how many times over, so that a small file
        // cannot ask for a thousand copies of one storage.
        total = total.saturating_add(entry.len);
        if total > len.saturating_mul(MAX_REREAD).saturating_add(1 << 20) {
            return Err(bad(format!(
                "its tensors would read more than {MAX_REREAD} times the file's {len} bytes \
                 (many tensors over one storage)"
            )));
        }
        tensors.push(entry);
    }
    if tensors.is_empty() {
        return Err(bad("data.pkl holds no tensor".into()));
    }
    // File order, as the read engine expects of a header.
    tensors.sort_by_key(|t| t.offset);
    Ok(Header { tensors })
}
