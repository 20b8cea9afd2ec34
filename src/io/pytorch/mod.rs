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

mod unpickle;

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use safetensors::Dtype;

use self::unpickle::{unpickle, Id, Pickle, Value};
use super::reader::{read_exact_at, Reader};
use super::safetensors::{Header, TensorEntry};
use crate::error::{Error, Result};

/// The largest `data.pkl` read: 64 MiB (a state dict's pickle is names and
/// shapes, a few hundred bytes per tensor).
const MAX_PICKLE: u64 = 64 << 20;

/// The keys under which a checkpoint may keep its state dict, when its top
/// level holds no tensor.
const NESTED: [&str; 5] = ["state_dict", "model_state_dict", "model", "module", "ema"];

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
    for (name, value) in state {
        let Some(tensor) = rebuild(&pickle, value) else {
            continue; // not a tensor (a step counter, a config value)
        };
        let tensor = tensor.map_err(|problem| bad(format!("tensor {name:?}: {problem}")))?;
        let record = members
            .get(&format!("{prefix}data/{}", tensor.key))
            .copied();
        let entry = place(name, tensor, record).map_err(bad)?;
        tensors.push(entry);
    }
    if tensors.is_empty() {
        return Err(bad("data.pkl holds no tensor".into()));
    }
    // File order, as the read engine expects of a header.
    tensors.sort_by_key(|t| t.offset);
    Ok(Header { tensors })
}

/// The dict of tensors: the top-level dict if it holds a tensor, else the
/// first of the [`NESTED`] keys that holds one.
fn state_dict(pickle: &Pickle) -> Option<Vec<(String, Id)>> {
    let entries = |id: Id| -> Option<Vec<(String, Id)>> {
        let Some(Value::Dict(items)) = pickle.get(id) else {
            return None;
        };
        Some(
            items
                .iter()
                .filter_map(|&(k, v)| match pickle.get(k) {
                    Some(Value::Str(name)) => Some((name.clone(), v)),
                    _ => None,
                })
                .collect(),
        )
    };
    let has_tensor =
        |items: &[(String, Id)]| items.iter().any(|&(_, v)| rebuild(pickle, v).is_some());
    let top = entries(pickle.root)?;
    if has_tensor(&top) {
        return Some(top);
    }
    NESTED.iter().find_map(|key| {
        let (_, id) = top.iter().find(|(name, _)| name == key)?;
        entries(*id).filter(|items| has_tensor(items))
    })
}

/// A tensor as the pickle rebuilds it.
struct Rebuilt {
    key: String,
    dtype: Dtype,
    offset: u64,
    shape: Vec<usize>,
    stride: Vec<u64>,
}

/// How many `nn.Parameter` wrappers a tensor may sit in (one, in what
/// PyTorch writes): a bound, so that no pickle nests them deep enough to
/// exhaust the stack.
const MAX_WRAPPERS: usize = 4;

/// `value` as a tensor: `None` if it is not one, an error if it is one that
/// cannot be read.
fn rebuild(pickle: &Pickle, value: Id) -> Option<std::result::Result<Rebuilt, String>> {
    rebuild_within(pickle, value, MAX_WRAPPERS)
}

fn rebuild_within(
    pickle: &Pickle,
    value: Id,
    wrappers: usize,
) -> Option<std::result::Result<Rebuilt, String>> {
    let Some(Value::Reduce(callable, args)) = pickle.get(value) else {
        return None;
    };
    let global = |id: Id| match pickle.get(id) {
        Some(Value::Global(module, name)) => Some((module.as_str(), name.as_str())),
        _ => None,
    };
    let tuple = |id: Id| match pickle.get(id) {
        Some(Value::Tuple(items)) => Some(items.as_slice()),
        _ => None,
    };
    match global(*callable)? {
        // An nn.Parameter: its first argument is the tensor.
        ("torch._utils", "_rebuild_parameter") => {
            let inner = tuple(*args)?.first()?;
            match wrappers.checked_sub(1) {
                Some(left) => rebuild_within(pickle, *inner, left),
                None => Some(Err("parameters nested too deep".into())),
            }
        }
        ("torch._utils", "_rebuild_tensor_v2") => Some(tensor_args(pickle, tuple(*args)?)),
        ("torch._utils", other) if other.starts_with("_rebuild") => Some(Err(format!(
            "a {other} tensor (quantized, sparse or on a device) is not read"
        ))),
        _ => None,
    }
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, ...)`.
fn tensor_args(pickle: &Pickle, args: &[Id]) -> std::result::Result<Rebuilt, String> {
    let int = |id: Option<&Id>| match id.and_then(|&i| pickle.get(i)) {
        Some(Value::Int(n)) => u64::try_from(*n).ok(),
        _ => None,
    };
    let ints = |id: Option<&Id>| -> Option<Vec<u64>> {
        let Some(Value::Tuple(items)) = id.and_then(|&i| pickle.get(i)) else {
            return None;
        };
        items.iter().map(|i| int(Some(i))).collect()
    };
    let malformed = || "its record in data.pkl is malformed".to_string();
    let Some(Value::Persistent(storage)) = args.first().and_then(|&i| pickle.get(i)) else {
        return Err(malformed());
    };
    // ('storage', torch.FloatStorage, key, location, numel)
    let Some(Value::Tuple(record)) = pickle.get(*storage) else {
        return Err(malformed());
    };
    let class = match record.get(1).and_then(|&i| pickle.get(i)) {
        Some(Value::Global(_, class)) => class.clone(),
        _ => return Err(malformed()),
    };
    let key = match record.get(2).and_then(|&i| pickle.get(i)) {
        Some(Value::Str(key)) => key.clone(),
        _ => return Err(malformed()),
    };
    let dtype = storage_dtype(&class).ok_or(format!("storage type {class} is not read"))?;
    let offset = int(args.get(1)).ok_or_else(malformed)?;
    let shape = ints(args.get(2)).ok_or_else(malformed)?;
    let stride = ints(args.get(3)).ok_or_else(malformed)?;
    if shape.len() != stride.len() {
        return Err(malformed());
    }
    let shape = shape
        .into_iter()
        .map(usize::try_from)
        .collect::<std::result::Result<Vec<usize>, _>>()
        .map_err(|_| malformed())?;
    Ok(Rebuilt {
        key,
        dtype,
        offset,
        shape,
        stride,
    })
}

/// The dtype of a PyTorch storage class.
fn storage_dtype(class: &str) -> Option<Dtype> {
    Some(match class {
        "FloatStorage" => Dtype::F32,
        "DoubleStorage" => Dtype::F64,
        "HalfStorage" => Dtype::F16,
        "BFloat16Storage" => Dtype::BF16,
        "LongStorage" => Dtype::I64,
        "IntStorage" => Dtype::I32,
        "ShortStorage" => Dtype::I16,
        "CharStorage" => Dtype::I8,
        "ByteStorage" => Dtype::U8,
        "BoolStorage" => Dtype::BOOL,
        _ => return None,
    })
}

/// The entry of a tensor whose storage is the archive member `record`.
fn place(
    name: String,
    t: Rebuilt,
    record: Option<Member>,
) -> std::result::Result<TensorEntry, String> {
    let record = record.ok_or_else(|| {
        format!(
            "tensor {name:?}: its storage data/{} is missing or compressed",
            t.key
        )
    })?;
    let size = t.dtype.bitsize().checked_div(8).unwrap_or(0) as u64;
    let elements = t
        .shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
        .ok_or_else(|| format!("tensor {name:?}: its shape overflows"))?;
    // Row-major contiguous: each stride the product of the sizes after it
    // (a dimension of size 1 may have any stride).
    let mut want = 1u64;
    for (&dim, &stride) in t.shape.iter().zip(&t.stride).rev() {
        if dim != 1 && stride != want {
            return Err(format!(
                "tensor {name:?} is not contiguous (shape {:?}, stride {:?}); save it with \
                 .contiguous() first",
                t.shape, t.stride
            ));
        }
        want = want.saturating_mul(dim as u64);
    }
    let start = t.offset.checked_mul(size);
    let len = elements.checked_mul(size);
    let (Some(start), Some(len)) = (start, len) else {
        return Err(format!("tensor {name:?}: its offset or size overflows"));
    };
    if start.checked_add(len).is_none_or(|end| end > record.len) {
        return Err(format!(
            "tensor {name:?} ends past its storage data/{} ({} bytes)",
            t.key, record.len
        ));
    }
    Ok(TensorEntry {
        name,
        dtype: t.dtype,
        shape: t.shape,
        offset: record.start.saturating_add(start),
        len,
    })
}
