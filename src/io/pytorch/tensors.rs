//! The tensors of a state dict: which dict holds them, each tensor's
//! record (`torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
//! ...)`), and its entry at its bytes' place in the archive.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use safetensors::Dtype;

use super::unpickle::{Id, Pickle, Value};
use super::Member;
use crate::io::safetensors::{TensorEntry, MAX_RANK};

/// The keys under which a checkpoint may keep its state dict, when its top
/// level holds no tensor.
const NESTED: [&str; 5] = ["state_dict", "model_state_dict", "model", "module", "ema"];

/// The dict of tensors, as (name, value) pairs borrowed from the pickle:
/// the top-level dict if it holds a tensor, else the first of the
/// [`NESTED`] keys that holds one.
pub(super) fn state_dict(pickle: &Pickle) -> Option<Vec<(&str, Id)>> {
    let entries = |id: Id| -> Option<Vec<(&str, Id)>> {
        let Some(Value::Dict(items)) = pickle.get(id) else {
            return None;
        };
        Some(
            items
                .iter()
                .filter_map(|&(k, v)| Some((pickle.str(k)?, v)))
                .collect(),
        )
    };
    let has_tensor =
        |items: &[(&str, Id)]| items.iter().any(|&(_, v)| rebuild(pickle, v).is_some());
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
pub(super) struct Rebuilt<'p> {
    pub(super) key: &'p str,
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
pub(super) fn rebuild(
    pickle: &Pickle,
    value: Id,
) -> Option<std::result::Result<Rebuilt<'_>, String>> {
    rebuild_within(pickle, value, MAX_WRAPPERS)
}

fn rebuild_within(
    pickle: &Pickle,
    value: Id,
    wrappers: usize,
) -> Option<std::result::Result<Rebuilt<'_>, String>> {
    let Some(Value::Reduce(callable, args)) = pickle.get(value) else {
        return None;
    };
    let global = |id: Id| pickle.global(id);
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
fn tensor_args<'p>(pickle: &'p Pickle, args: &[Id]) -> std::result::Result<Rebuilt<'p>, String> {
    let int = |id: Option<&Id>| match id.and_then(|&i| pickle.get(i)) {
        Some(Value::Int(n)) => u64::try_from(*n).ok(),
        _ => None,
    };
    let ints = |id: Option<&Id>| -> Option<Vec<u64>> {
        let Some(Value::Tuple(items)) = id.and_then(|&i| pickle.get(i)) else {
            return None;
        };
        if items.len() > MAX_RANK {
            return None;
        }
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
    let Some((_, class)) = record.get(1).and_then(|&i| pickle.global(i)) else {
        return Err(malformed());
    };
    let Some(key) = record.get(2).and_then(|&i| pickle.str(i)) else {
        return Err(malformed());
    };
    let dtype = storage_dtype(class).ok_or(format!("storage type {class} is not read"))?;
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
pub(super) fn place(
    name: &str,
    t: Rebuilt<'_>,
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
    // (a dimension of size 1 may have any stride; an empty tensor has
    // nothing to lay out, and PyTorch gives it strides as if its zero
    // sizes were 1).
    let mut want = 1u64;
    for (&dim, &stride) in t.shape.iter().zip(&t.stride).rev() {
        if elements != 0 && dim != 1 && stride != want {
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
        name: name.to_string(),
        dtype: t.dtype,
        shape: t.shape,
        offset: record.start.saturating_add(start),
        len,
    })
}
