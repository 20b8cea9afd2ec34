//! A restricted unpickler: reads the pickle PyTorch writes for a state dict
//! (`data.pkl` in a `torch.save` archive) into inert values. It runs no code
//! and imports nothing: a `GLOBAL` is only a name, a `REDUCE` only a record
//! of a call that is never made. What it builds lives in one arena and is
//! referred to by index (a string, too, is stored once: a `GLOBAL` names
//! its module and name by index), so a value shared through the memo is
//! never copied (no "pickle bomb" grows it). The arena, the stack and the
//! memo hold at most [`MAX_VALUES`] entries each, `None` and the booleans
//! are shared, and a value takes 32 bytes: what a pickle can make it hold
//! is bounded whatever its length. Every opcode PyTorch's own
//! `weights_only` unpickler accepts for a state dict is read here; any
//! other is an error.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use std::collections::HashMap;

mod opcodes;

/// An index into the arena.
pub(crate) type Id = usize;

/// A value the pickle built.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Box<str>),
    Bytes(usize),
    Tuple(Vec<Id>),
    List(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    /// `module.name` (the ids of two strings), never imported.
    Global(Id, Id),
    /// `callable(*args)`, never called.
    Reduce(Id, Id),
    /// A persistent id (a PyTorch storage): the record it names.
    Persistent(Id),
}

/// What a pickle built: its values, and the one it returned.
#[derive(Debug)]
pub(crate) struct Pickle {
    values: Vec<Value>,
    pub(crate) root: Id,
}

impl Pickle {
    pub(crate) fn get(&self, id: Id) -> Option<&Value> {
        self.values.get(id)
    }

    /// The string `id` is, if it is one.
    pub(crate) fn str(&self, id: Id) -> Option<&str> {
        match self.values.get(id) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// The `(module, name)` of the global `id` is, if it is one.
    pub(crate) fn global(&self, id: Id) -> Option<(&str, &str)> {
        match self.values.get(id) {
            Some(Value::Global(module, name)) => Some((self.str(*module)?, self.str(*name)?)),
            _ => None,
        }
    }
}

/// The most values, stack entries and memo entries a pickle may make: far
/// more than a state dict needs (a tensor takes about 20 values), and at 32
/// bytes a value, 128 MiB at most.
pub(crate) const MAX_VALUES: usize = 1 << 22;

/// The shared `None`, `False` and `True`: made once, at these ids.
const NONE: Id = 0;
const FALSE: Id = 1;
const TRUE: Id = 2;

/// The largest integer a `LONG1`/`LONG4` may hold here: 8 bytes.
const MAX_LONG: usize = 8;

/// Why a pickle was refused.
pub(crate) type Refusal = String;

struct Machine<'a> {
    input: &'a [u8],
    at: usize,
    values: Vec<Value>,
    stack: Vec<Id>,
    /// Stack heights at each `MARK`.
    marks: Vec<usize>,
    memo: HashMap<u32, Id>,
    /// Entries of lists and dicts, all told.
    entries: usize,
}

/// Read a pickle into values. Its length bounds what it builds: every
/// opcode reads at least one byte and makes at most one value.
pub(crate) fn unpickle(input: &[u8]) -> Result<Pickle, Refusal> {
    let mut m = Machine {
        input,
        at: 0,
        values: vec![Value::None, Value::Bool(false), Value::Bool(true)],
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        entries: 0,
    };
    loop {
        let offset = m.at;
        let op = m.byte()?;
        if m.step(op)
            .map_err(|e| format!("{e} (opcode 0x{op:02x} at byte {offset})"))?
        {
            break;
        }
    }
    let root = m.pop()?;
    Ok(Pickle {
        values: m.values,
        root,
    })
}

impl Machine<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Refusal> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.input.len())
            .ok_or("the pickle ends in the middle of an opcode")?;
        let bytes = self.input.get(self.at..end).ok_or("internal: bad slice")?;
        self.at = end;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, Refusal> {
        Ok(*self.take(1)?.first().ok_or("the pickle is empty")?)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Refusal> {
        <[u8; N]>::try_from(self.take(N)?).map_err(|_| "internal: bad length".to_string())
    }

    fn u32(&mut self) -> Result<u32, Refusal> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn len(&mut self, n: u64) -> Result<usize, Refusal> {
        usize::try_from(n).map_err(|_| "a length does not fit in memory".to_string())
    }

    fn line(&mut self) -> Result<Box<str>, Refusal> {
        let rest = self.input.get(self.at..).unwrap_or_default();
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("a GLOBAL name has no end of line")?;
        let text = std::str::from_utf8(self.take(end)?)
            .map_err(|_| "a GLOBAL name is not UTF-8".to_string())?
            .into();
        self.take(1)?;
        Ok(text)
    }

    fn string(&mut self, n: usize) -> Result<Box<str>, Refusal> {
        match std::str::from_utf8(self.take(n)?) {
            Ok(s) => Ok(s.into()),
            Err(_) => Err("a string is not UTF-8".into()),
        }
    }

    fn alloc(&mut self, value: Value) -> Result<Id, Refusal> {
        if self.values.len() >= MAX_VALUES {
            return Err(format!("the pickle makes more than {MAX_VALUES} values"));
        }
        self.values.push(value);
        Ok(self.values.len().saturating_sub(1))
    }

    /// Push an existing value (no new one is made).
    fn push_id(&mut self, id: Id) -> Result<(), Refusal> {
        if self.stack.len() >= MAX_VALUES {
            return Err(format!(
                "the pickle's stack grows past {MAX_VALUES} entries"
            ));
        }
        self.stack.push(id);
        Ok(())
    }

    fn push(&mut self, value: Value) -> Result<(), Refusal> {
        let id = match value {
            Value::None => NONE,
            Value::Bool(false) => FALSE,
            Value::Bool(true) => TRUE,
            value => self.alloc(value)?,
        };
        self.push_id(id)
    }

    fn pop(&mut self) -> Result<Id, Refusal> {
        if self.marks.last().is_some_and(|&h| h >= self.stack.len()) {
            return Err("an opcode takes a value past a MARK".into());
        }
        self.stack.pop().ok_or_else(|| "the stack is empty".into())
    }

    fn top(&self) -> Result<Id, Refusal> {
        self.stack
            .last()
            .copied()
            .ok_or_else(|| "the stack is empty".into())
    }

    fn pop_mark(&mut self) -> Result<Vec<Id>, Refusal> {
        let height = self.marks.pop().ok_or("no MARK to pop to")?;
        if height > self.stack.len() {
            return Err("internal: a MARK above the stack".into());
        }
        Ok(self.stack.split_off(height))
    }

    fn value_mut(&mut self, id: Id) -> Result<&mut Value, Refusal> {
        self.values
            .get_mut(id)
            .ok_or_else(|| "internal: no such value".into())
    }

    fn memo_put(&mut self, key: u32) -> Result<(), Refusal> {
        let top = self.top()?;
        if self.memo.len() >= MAX_VALUES && !self.memo.contains_key(&key) {
            return Err(format!("the pickle's memo grows past {MAX_VALUES} entries"));
        }
        self.memo.insert(key, top);
        Ok(())
    }

    fn mark(&mut self) -> Result<(), Refusal> {
        if self.marks.len() >= MAX_VALUES {
            return Err(format!("the pickle nests more than {MAX_VALUES} MARKs"));
        }
        self.marks.push(self.stack.len());
        Ok(())
    }

    /// Count `n` more entries of lists and dicts, within [`MAX_VALUES`].
    fn grow(&mut self, n: usize) -> Result<(), Refusal> {
        self.entries = self.entries.saturating_add(n);
        if self.entries > MAX_VALUES {
            return Err(format!(
                "the pickle's lists and dicts hold more than {MAX_VALUES} entries"
            ));
        }
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<(), Refusal> {
        let id = *self
            .memo
            .get(&key)
            .ok_or(format!("memo {key} was never stored"))?;
        self.push_id(id)
    }

    /// Add `items` (key, value, key, value, ...) to the dict `target`.
    fn set_items(&mut self, target: Id, items: Vec<Id>) -> Result<(), Refusal> {
        if items.len() % 2 != 0 {
            return Err("SETITEMS with a key and no value".into());
        }
        self.grow(items.len())?;
        let pairs: Vec<(Id, Id)> = items
            .chunks_exact(2)
            .filter_map(|p| match p {
                [k, v] => Some((*k, *v)),
                _ => None,
            })
            .collect();
        match self.value_mut(target)? {
            Value::Dict(entries) => {
                entries.extend(pairs);
                Ok(())
            }
            _ => Err("SETITEMS on something that is not a dict".into()),
        }
    }

    fn append(&mut self, target: Id, items: Vec<Id>) -> Result<(), Refusal> {
        self.grow(items.len())?;
        match self.value_mut(target)? {
            Value::List(list) => {
                list.extend(items);
                Ok(())
            }
            _ => Err("APPENDS on something that is not a list".into()),
        }
    }

    /// `callable(*args)`, as a record; an `OrderedDict()` is a dict (its
    /// items come by SETITEMS, as for a dict).
    fn reduce(&self, callable: Id, args: Id) -> Value {
        let (module, name) = match self.values.get(callable) {
            Some(Value::Global(module, name)) => (*module, *name),
            _ => return Value::Reduce(callable, args),
        };
        let text = |id: Id| match self.values.get(id) {
            Some(Value::Str(s)) => Some(&**s),
            _ => None,
        };
        if text(module) == Some("collections") && text(name) == Some("OrderedDict") {
            Value::Dict(Vec::new())
        } else {
            Value::Reduce(callable, args)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_dict_of_ints_and_strings() {
        // pickle.dumps({"a": 1, "b": "x"}, protocol=2)
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01X\x01\x00\x00\x00bq\x02X\x01\x00\x00\x00xq\x03u.";
        let pickle = unpickle(p).unwrap();
        let Some(Value::Dict(items)) = pickle.get(pickle.root) else {
            panic!("not a dict")
        };
        assert_eq!(items.len(), 2);
        assert_eq!(pickle.get(items[0].0), Some(&Value::Str("a".into())));
        assert_eq!(pickle.get(items[0].1), Some(&Value::Int(1)));
    }

    #[test]
    fn shared_values_are_not_copied() {
        // A list holding itself through the memo, 2^k times over: the arena
        // grows by one value per opcode, not exponentially.
        let mut p = b"\x80\x02]q\x00".to_vec();
        for _ in 0..64 {
            p.extend_from_slice(b"(h\x00h\x00eq\x00");
        }
        p.push(b'.');
        let pickle = unpickle(&p).unwrap();
        assert!(pickle.values.len() < 10);
    }

    #[test]
    fn bad_pickles_are_refused() {
        for bad in [
            &b""[..],
            b"\x80\x02",
            b"\x80\x09.",
            b"t.",
            b"(K\x01u.",
            b"h\x07.",
            b"X\xff\xff\xff\xff",
            b"\x8b\xff\xff\xff\xff",
            b"cos\nsystem",
            b"\xff.",
            b"K\x01K\x02s.",
        ] {
            assert!(unpickle(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_global_is_only_a_name() {
        let pickle = unpickle(b"cos\nsystem\nX\x02\x00\x00\x00ls\x85R.").unwrap();
        assert!(matches!(pickle.get(pickle.root), Some(Value::Reduce(..))));
    }
}
