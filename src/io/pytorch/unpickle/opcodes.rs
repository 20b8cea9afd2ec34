//! What each opcode does: the pickle opcodes a PyTorch state dict uses
//! (protocols 2 to 5), as [`Machine::step`].

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use super::{Machine, Refusal, Value, MAX_LONG};

impl Machine<'_> {
    /// Run one opcode; `true` at STOP.
    pub(super) fn step(&mut self, op: u8) -> Result<bool, Refusal> {
        match op {
            b'.' => return Ok(true),
            0x80 => {
                // PROTO
                let version = self.byte()?;
                if version > 5 {
                    return Err(format!("pickle protocol {version} is unknown"));
                }
            }
            0x95 => {
                // FRAME: a length hint, the data follows inline.
                self.take(8)?;
            }
            b'(' => self.mark()?,
            b'N' => self.push(Value::None)?,
            0x88 => self.push(Value::Bool(true))?,
            0x89 => self.push(Value::Bool(false))?,
            b'K' => {
                let v = self.byte()?;
                self.push(Value::Int(i64::from(v)))?;
            }
            b'M' => {
                let v = u16::from_le_bytes(self.array()?);
                self.push(Value::Int(i64::from(v)))?;
            }
            b'J' => {
                let v = i32::from_le_bytes(self.array()?);
                self.push(Value::Int(i64::from(v)))?;
            }
            0x8a | 0x8b => {
                // LONG1 / LONG4: little-endian two's complement.
                let n = if op == 0x8a {
                    usize::from(self.byte()?)
                } else {
                    let n = u64::from(self.u32()?);
                    self.len(n)?
                };
                if n > MAX_LONG {
                    return Err(format!("an integer of {n} bytes is too large"));
                }
                let bytes = self.take(n)?;
                let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
                let mut buf = if negative { [0xffu8; 8] } else { [0u8; 8] };
                for (slot, b) in buf.iter_mut().zip(bytes) {
                    *slot = *b;
                }
                self.push(Value::Int(i64::from_le_bytes(buf)))?;
            }
            b'G' => {
                let v = f64::from_be_bytes(self.array()?);
                self.push(Value::Float(v))?;
            }
            b'X' => {
                let n = u64::from(self.u32()?);
                let n = self.len(n)?;
                let s = self.string(n)?;
                self.push(Value::Str(s))?;
            }
            0x8c => {
                let n = usize::from(self.byte()?);
                let s = self.string(n)?;
                self.push(Value::Str(s))?;
            }
            b'C' | b'B' | 0x8e => {
                // SHORT_BINBYTES, BINBYTES, BINBYTES8: kept as a length.
                let n = match op {
                    b'C' => u64::from(self.byte()?),
                    b'B' => u64::from(self.u32()?),
                    _ => u64::from_le_bytes(self.array()?),
                };
                let n = self.len(n)?;
                self.take(n)?;
                self.push(Value::Bytes(n))?;
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                let module = self.alloc(Value::Str(module))?;
                let name = self.alloc(Value::Str(name))?;
                self.push(Value::Global(module, name))?;
            }
            0x93 => {
                // STACK_GLOBAL
                let name = self.pop()?;
                let module = self.pop()?;
                match (self.values.get(module), self.values.get(name)) {
                    (Some(Value::Str(_)), Some(Value::Str(_))) => {
                        self.push(Value::Global(module, name))?;
                    }
                    _ => return Err("STACK_GLOBAL of values that are not strings".into()),
                }
            }
            b')' => self.push(Value::Tuple(Vec::new()))?,
            b']' => self.push(Value::List(Vec::new()))?,
            b'}' => self.push(Value::Dict(Vec::new()))?,
            b't' => {
                let items = self.pop_mark()?;
                self.push(Value::Tuple(items))?;
            }
            b'l' => {
                let items = self.pop_mark()?;
                self.push(Value::List(items))?;
            }
            b'd' => {
                let items = self.pop_mark()?;
                let dict = self.alloc(Value::Dict(Vec::new()))?;
                self.set_items(dict, items)?;
                self.push_id(dict)?;
            }
            0x85..=0x87 => {
                let n = usize::from(op.saturating_sub(0x84));
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop()?);
                }
                items.reverse();
                self.push(Value::Tuple(items))?;
            }
            b'q' => {
                let key = self.byte()?;
                self.memo_put(u32::from(key))?;
            }
            b'r' => {
                let key = self.u32()?;
                self.memo_put(key)?;
            }
            0x94 => {
                // MEMOIZE: the next free memo key.
                let key = u32::try_from(self.memo.len()).map_err(|_| "the memo is full")?;
                self.memo_put(key)?;
            }
            b'h' => {
                let key = self.byte()?;
                self.memo_get(u32::from(key))?;
            }
            b'j' => {
                let key = self.u32()?;
                self.memo_get(key)?;
            }
            b'Q' => {
                let id = self.pop()?;
                self.push(Value::Persistent(id))?;
            }
            b'R' | 0x81 => {
                // REDUCE, NEWOBJ: recorded, never called.
                let args = self.pop()?;
                let callable = self.pop()?;
                let value = self.reduce(callable, args);
                self.push(value)?;
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                let dict = self.top()?;
                self.set_items(dict, vec![key, value])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                let dict = self.top()?;
                self.set_items(dict, items)?;
            }
            b'a' => {
                let item = self.pop()?;
                let list = self.top()?;
                self.append(list, vec![item])?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                let list = self.top()?;
                self.append(list, items)?;
            }
            b'b' => {
                // BUILD: sets an object's state (a state dict's `_metadata`,
                // a module's attributes): nothing a tensor needs.
                self.pop()?;
                self.top()?;
            }
            b'0' => {
                self.pop()?;
            }
            b'2' => {
                let top = self.top()?;
                self.push_id(top)?;
            }
            other => {
                return Err(format!(
                    "pickle opcode 0x{other:02x} is not one a state dict uses"
                ))
            }
        }
        Ok(false)
    }
}
