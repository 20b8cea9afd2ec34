//! The core's values as plain JS objects (camelCase keys, numbers for
//! counters, strings for enums).

use js_sys::{Array, Object, Reflect, JSON};
use model_manager::candle_core::{CpuStorage, DType, Storage, Tensor};
use model_manager::{
    Command, Component, Error, ErrorCode, ModelStatus, PipelineInfo, PoolEvent, PoolEventKind,
    PoolSnapshot, Progress, Snapshot, State, StateEvent, UnloadReason,
};
use wasm_bindgen::prelude::*;

/// A plain object built key by key.
struct Obj(Object);

impl Obj {
    fn new() -> Self {
        Obj(Object::new())
    }

    fn set(self, key: &str, value: impl Into<JsValue>) -> Self {
        // Defining a property on a fresh plain object cannot fail.
        let _ = Reflect::set(&self.0, &key.into(), &value.into());
        self
    }

    fn done(self) -> JsValue {
        self.0.into()
    }
}

/// A `u64` counter as a JS number (exact below 2^53 bytes: 8 PiB).
fn num(n: u64) -> f64 {
    n as f64
}

/// The state as the JS API spells it: the core's one table of names.
pub(crate) fn state_name(state: State) -> &'static str {
    state.name()
}

/// The command as the JS API spells it: the core's one table of names, but
/// for `Finish`, which the JS API (`Command` in index.d.ts) has always
/// called `"finish"`, where the core says `"finish loading"` (it reads well
/// in its messages: "cannot finish loading while idle").
pub(crate) fn command_name(command: Command) -> &'static str {
    match command {
        Command::Finish => "finish",
        command => command.name(),
    }
}

/// `{ bytesDone, bytesTotal, tensorsDone, tensorsTotal, file }`.
pub(crate) fn progress(p: &Progress) -> JsValue {
    Obj::new()
        .set("bytesDone", num(p.bytes_done))
        .set("bytesTotal", num(p.bytes_total))
        .set("tensorsDone", num(p.tensors_done))
        .set("tensorsTotal", num(p.tensors_total))
        .set(
            "file",
            p.current
                .as_deref()
                .map_or(JsValue::NULL, JsValue::from_str),
        )
        .done()
}

/// `{ code, codeName, message }`.
pub(crate) fn error(e: &Error) -> JsValue {
    let code: ErrorCode = e.code();
    Obj::new()
        .set("code", code as u32)
        .set("codeName", code.name())
        .set("message", e.to_string())
        .done()
}

/// `{ state, generation, progress, error, residentBytes, unreclaimedBytes }`.
pub(crate) fn snapshot(s: &Snapshot) -> JsValue {
    Obj::new()
        .set("state", state_name(s.state))
        .set("generation", num(s.generation))
        .set("progress", progress(&s.progress))
        .set("error", s.error.as_ref().map_or(JsValue::NULL, error))
        .set("residentBytes", num(s.resident_bytes))
        .set("unreclaimedBytes", num(s.unreclaimed_bytes))
        .done()
}

/// `{ from, to, command, snapshot }`.
pub(crate) fn event(e: &StateEvent) -> JsValue {
    Obj::new()
        .set("from", state_name(e.from))
        .set("to", state_name(e.to))
        .set("command", command_name(e.command))
        .set("snapshot", snapshot(&e.snapshot))
        .done()
}

/// A parsed JSON config as a JS value (`null` when absent).
fn json(value: Option<&serde_json::Value>) -> JsValue {
    value
        .and_then(|v| JSON::parse(&v.to_string()).ok())
        .unwrap_or(JsValue::NULL)
}

/// `{ sampleSize, bytes, tensors, config }`.
pub(crate) fn info(i: &PipelineInfo) -> JsValue {
    let config = json(i.config.as_ref());
    Obj::new()
        .set(
            "sampleSize",
            i.sample_size.map_or(JsValue::NULL, |n| num(n).into()),
        )
        .set("bytes", num(i.bytes))
        .set("tensors", num(i.tensors))
        .set("config", config)
        .done()
}

/// `{ name, config, tensors }` (`tensors`: how many).
pub(crate) fn component(c: &Component) -> JsValue {
    Obj::new()
        .set("name", c.name())
        .set("config", json(c.config()))
        .set("tensors", c.tensors().count() as f64)
        .done()
}

/// The dtype as safetensors and the JS API spell it.
pub(crate) fn dtype_name(dtype: DType) -> &'static str {
    dtype.as_str()
}

/// `{ dtype, shape, data }`, with `data` a typed array holding a copy of the
/// tensor's elements (f16 and bf16 as their raw bits in a `Uint16Array`).
pub(crate) fn tensor(t: &Tensor) -> Result<JsValue, Error> {
    let shape: Array = t.dims().iter().map(|&d| JsValue::from(d as f64)).collect();
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Err(Error::Device("the tensor is not in host memory".into()));
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Err(Error::Device("the tensor is not contiguous".into()));
    };
    let range = start..end;
    let data: JsValue = match cpu {
        CpuStorage::U8(v) => js_sys::Uint8Array::from(&v[range]).into(),
        CpuStorage::U32(v) => js_sys::Uint32Array::from(&v[range]).into(),
        CpuStorage::I16(v) => js_sys::Int16Array::from(&v[range]).into(),
        CpuStorage::I32(v) => js_sys::Int32Array::from(&v[range]).into(),
        CpuStorage::I64(v) => js_sys::BigInt64Array::from(&v[range]).into(),
        CpuStorage::F16(v) => {
            js_sys::Uint16Array::from(bytemuck::cast_slice::<_, u16>(&v[range])).into()
        }
        CpuStorage::BF16(v) => {
            js_sys::Uint16Array::from(bytemuck::cast_slice::<_, u16>(&v[range])).into()
        }
        CpuStorage::F32(v) => js_sys::Float32Array::from(&v[range]).into(),
        CpuStorage::F64(v) => js_sys::Float64Array::from(&v[range]).into(),
        _ => {
            return Err(Error::Device(format!(
                "tensors of dtype {} cannot be handed to JS",
                t.dtype().as_str()
            )))
        }
    };
    Ok(Obj::new()
        .set("dtype", dtype_name(t.dtype()))
        .set("shape", shape)
        .set("data", data)
        .done())
}

/// A duration in milliseconds, `null` for none.
fn ms(d: Option<std::time::Duration>) -> JsValue {
    d.map_or(JsValue::NULL, |d| (d.as_secs_f64() * 1e3).into())
}

/// One model of a pool: `{ id, state, version, loadingVersion,
/// chargedBytes, residentBytes, leases, waiters, idleMs, keepAliveMs,
/// expiresInMs, pinned, lastError }`.
pub(crate) fn model_status(m: &ModelStatus) -> JsValue {
    Obj::new()
        .set("id", m.id.as_str())
        .set("state", state_name(m.state))
        .set(
            "version",
            m.version.map_or(JsValue::NULL, |v| num(v).into()),
        )
        .set(
            "loadingVersion",
            m.loading_version.map_or(JsValue::NULL, |v| num(v).into()),
        )
        .set("chargedBytes", num(m.charged_bytes))
        .set("residentBytes", num(m.resident_bytes))
        .set("leases", m.leases as f64)
        .set("waiters", m.waiters as f64)
        .set("idleMs", ms(m.idle_for))
        .set("keepAliveMs", ms(m.keep_alive))
        .set("expiresInMs", ms(m.expires_in))
        .set("pinned", m.pinned)
        .set(
            "lastError",
            m.last_error.as_ref().map_or(JsValue::NULL, error),
        )
        .done()
}

/// The pool: `{ budget, charged, queued, unreclaimedBytes, models,
/// counters }` (`counters`: `{ loads, hits, misses, evictions,
/// expirations, failures }`).
pub(crate) fn pool_snapshot(s: &PoolSnapshot) -> JsValue {
    let c = &s.counters;
    let counters = Obj::new()
        .set("loads", num(c.loads))
        .set("hits", num(c.hits))
        .set("misses", num(c.misses))
        .set("evictions", num(c.evictions))
        .set("expirations", num(c.expirations))
        .set("failures", num(c.failures))
        .done();
    let queued: Array = s
        .queued
        .iter()
        .map(|(id, v)| -> JsValue {
            Obj::new()
                .set("id", id.as_str())
                .set("version", num(*v))
                .done()
        })
        .collect();
    let models: Array = s.models.iter().map(model_status).collect();
    Obj::new()
        .set("budget", num(s.budget))
        .set("charged", num(s.charged))
        .set("queued", queued)
        .set("unreclaimedBytes", num(s.unreclaimed_bytes))
        .set("models", models)
        .set("counters", counters)
        .done()
}

/// `{ id, version, kind, ... }`: `kind` one of `"queued"`, `"loading"`
/// (`charged`), `"ready"` (`bytes`), `"failed"` (`error`), `"unloading"`
/// (`reason`: `"evicted"` with `forId`, `"expired"`, `"unloaded"`,
/// `"replaced"`, `"madeRoomForReload"`), `"freed"` (`bytes`).
pub(crate) fn pool_event(e: &PoolEvent) -> JsValue {
    let o = Obj::new()
        .set("id", e.id.as_str())
        .set("version", num(e.version));
    let o = o.set("kind", e.kind.name());
    match &e.kind {
        PoolEventKind::Loading { charged } => o.set("charged", num(*charged)),
        // A wasm pool has no host tier: `parked` and `unparked` never come.
        PoolEventKind::Ready { bytes }
        | PoolEventKind::Freed { bytes }
        | PoolEventKind::Parked { bytes }
        | PoolEventKind::Unparked { bytes } => o.set("bytes", num(*bytes)),
        PoolEventKind::Failed { error: e } => o.set("error", error(e)),
        PoolEventKind::Unloading { reason } => {
            let o = o.set("reason", reason.name());
            match reason {
                UnloadReason::Evicted { for_id } => o.set("forId", for_id.as_str()),
                _ => o,
            }
        }
        _ => o,
    }
    .done()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names the JS API (index.d.ts's `State` and `Command`) has always
    /// had, now read from the core's table.
    #[test]
    fn names_match_the_js_api() {
        let states = ["idle", "loading", "ready", "unloading", "failed"];
        assert_eq!(State::ALL.len(), states.len());
        for (state, name) in State::ALL.into_iter().zip(states) {
            assert_eq!(state_name(state), name);
            assert!(std::ptr::eq(state_name(state), state.name()), "{state:?}");
        }
        let commands = [
            "load", "finish", "cancel", "fail", "unload", "drain", "reset",
        ];
        assert_eq!(Command::ALL.len(), commands.len());
        for (command, name) in Command::ALL.into_iter().zip(commands) {
            assert_eq!(command_name(command), name);
            if command != Command::Finish {
                assert!(std::ptr::eq(command_name(command), command.name()));
            }
        }
        assert_eq!(dtype_name(DType::BF16), "bf16");
        assert_eq!(dtype_name(DType::I64), "i64");
    }
}
