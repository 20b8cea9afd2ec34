//! [`RawPool`]: the core's [`ModelPool`] as a wasm-bindgen class. The JS
//! wrapper (`ModelPool` in `js/core.js`) validates arguments, turns sources
//! into [`RawSource`]s and wraps leases; this layer translates.

use std::rc::Rc;
use std::str::FromStr;
use std::time::Duration;

use js_sys::{Function, Promise};
use model_manager::candle_core::DType;
use model_manager::{ErrorCode, ModelOptions, ModelPool, PoolEvent, ReloadPolicy};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::convert;
use crate::error::{js, js_error, to_js};
use crate::lease::RawLease;
use crate::listen::{listen, Events, RawSubscription};
use crate::pace::pace;
use crate::source::RawSource;

fn invalid(message: String) -> JsValue {
    js_error(
        ErrorCode::InvalidArgument,
        &format!("invalid argument: {message}"),
    )
}

/// Milliseconds from JS as a duration: `null`/`undefined` is `None`;
/// `Infinity` is "never" (the core saturates it); a negative or NaN value
/// is refused.
fn millis(value: Option<f64>, name: &str) -> Result<Option<Duration>, JsValue> {
    match value {
        None => Ok(None),
        Some(ms) if ms == f64::INFINITY => Ok(Some(Duration::MAX)),
        // Beyond what a Duration holds (about 5.8e11 years) is "never" too.
        Some(ms) if ms.is_finite() && ms >= 0.0 => Ok(Some(
            Duration::try_from_secs_f64(ms / 1e3).unwrap_or(Duration::MAX),
        )),
        Some(ms) => Err(invalid(format!("{name} must be milliseconds, not {ms}"))),
    }
}

fn count(value: Option<f64>, name: &str) -> Result<Option<usize>, JsValue> {
    match value {
        None => Ok(None),
        Some(n) if n.is_finite() && n >= 1.0 && n.fract() == 0.0 && n <= u32::MAX as f64 => {
            Ok(Some(n as usize))
        }
        Some(n) => Err(invalid(format!(
            "{name} must be a positive integer, not {n}"
        ))),
    }
}

/// A model's options from `add`'s arguments: forever if `keep_forever`,
/// else `keep_alive_ms` if given, else the pool's default keep-alive.
fn model_options(
    keep_alive_ms: Option<f64>,
    keep_forever: bool,
    pinned: bool,
) -> Result<ModelOptions, JsValue> {
    let options = ModelOptions::new().pinned(pinned);
    Ok(if keep_forever {
        options.keep_alive(None)
    } else {
        match millis(keep_alive_ms, "keepAlive")? {
            Some(d) => options.keep_alive(Some(d)),
            None => options,
        }
    })
}

/// A byte count: a whole number from 0 up to 2^53 (the integers a JS
/// number holds exactly).
fn bytes(value: Option<f64>, name: &str) -> Result<u64, JsValue> {
    match value {
        None => Ok(0),
        Some(n)
            if n.is_finite() && n >= 0.0 && n.fract() == 0.0 && n <= 9_007_199_254_740_992.0 =>
        {
            Ok(n as u64)
        }
        Some(n) => Err(invalid(format!(
            "{name} must be a byte count (a whole number, 0 or more), not {n}"
        ))),
    }
}

/// A promise of a version number.
fn version_promise(
    future: impl std::future::Future<Output = model_manager::Result<u64>> + 'static,
) -> Promise {
    future_to_promise(async move {
        future
            .await
            .map(|v| JsValue::from(v as f64))
            .map_err(|e| to_js(&e))
    })
}

/// Several models under one memory budget.
#[wasm_bindgen]
pub struct RawPool {
    pool: Rc<ModelPool>,
}

#[wasm_bindgen]
impl RawPool {
    /// `memory_budget` in bytes (required: wasm memory has no "free memory"
    /// to read); `keep_alive_ms` the default keep-alive (`null`: forever);
    /// the rest as the core's `ModelPoolBuilder` (`null`: its default).
    #[allow(clippy::too_many_arguments)]
    #[wasm_bindgen(constructor)]
    pub fn new(
        memory_budget: f64,
        keep_alive_ms: Option<f64>,
        max_queue: Option<f64>,
        concurrent_loads: Option<f64>,
        admission_timeout_ms: Option<f64>,
        retry_cooldown_ms: Option<f64>,
        chunk_size: Option<f64>,
        dtype: Option<String>,
        headroom: Option<f64>,
    ) -> Result<RawPool, JsValue> {
        if !(memory_budget.is_finite() && memory_budget >= 0.0) {
            return Err(invalid(format!(
                "memoryBudget must be a byte count, not {memory_budget}"
            )));
        }
        let mut builder = ModelPool::builder()
            .memory_budget(memory_budget as u64)
            .pace(pace())
            .keep_alive(millis(keep_alive_ms, "keepAlive")?)
            .chunk_size(count(chunk_size, "chunkSize")?.unwrap_or(crate::manager::DEFAULT_CHUNK));
        builder = builder.headroom(bytes(headroom, "headroom")?);
        if let Some(n) = count(max_queue, "maxQueue")? {
            builder = builder.max_queue(n);
        }
        if let Some(n) = count(concurrent_loads, "concurrentLoads")? {
            builder = builder.concurrent_loads(n);
        }
        if let Some(d) = millis(admission_timeout_ms, "admissionTimeout")? {
            builder = builder.admission_timeout(d);
        }
        if let Some(d) = millis(retry_cooldown_ms, "retryCooldown")? {
            builder = builder.retry_cooldown(d);
        }
        if let Some(name) = dtype {
            let dtype = DType::from_str(&name.to_ascii_lowercase()).map_err(|_| {
                invalid(format!(
                    "unknown dtype {name:?} (expected f32, f16 or bf16)"
                ))
            })?;
            builder = builder.dtype(dtype);
        }
        Ok(RawPool {
            pool: Rc::new(js(builder.build())?),
        })
    }

    /// Make `source` known as `id` (loads nothing). Its keep-alive:
    /// forever if `keep_forever`, else `keep_alive_ms` if given, else the
    /// pool's default.
    pub fn add(
        &self,
        id: &str,
        source: &RawSource,
        keep_alive_ms: Option<f64>,
        keep_forever: bool,
        pinned: bool,
    ) -> Result<(), JsValue> {
        let options = model_options(keep_alive_ms, keep_forever, pinned)?;
        js(self.pool.add_with(id, source.source.clone(), options))
    }

    /// Make the pipeline `source` known as one model per component with
    /// weights (`id/component`); their ids.
    #[wasm_bindgen(js_name = addPipeline)]
    pub fn add_pipeline(
        &self,
        id: &str,
        source: &RawSource,
        keep_alive_ms: Option<f64>,
        keep_forever: bool,
        pinned: bool,
    ) -> Result<Vec<String>, JsValue> {
        let options = model_options(keep_alive_ms, keep_forever, pinned)?;
        js(self
            .pool
            .add_pipeline_with(id, source.source.clone(), options))
    }

    /// A lease on `id` (loading it if need be), with `working_bytes`
    /// reserved beside it, as a promise that `cancel()` rejects with code
    /// 3: the waiter leaves, the load goes on, nothing stays reserved.
    pub fn acquire(&self, id: String, working_bytes: Option<f64>) -> Result<RawAcquire, JsValue> {
        let working = bytes(working_bytes, "workingBytes")?;
        let pool = self.pool.clone();
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let promise = future_to_promise(async move {
            tokio::select! {
                lease = pool.acquire_with(&id, working) => Ok(RawLease::of_pool(js(lease)?).into()),
                () = stop.cancelled() => Err(js_error(
                    ErrorCode::Cancelled,
                    "acquire cancelled: the caller stopped waiting (the load goes on)",
                )),
            }
        });
        Ok(RawAcquire { promise, cancel })
    }

    /// A lease on `id` if it is ready now (code 5, NotReady, else).
    #[wasm_bindgen(js_name = tryAcquire)]
    pub fn try_acquire(&self, id: &str) -> Result<RawLease, JsValue> {
        Ok(RawLease::of_pool(js(self.pool.try_acquire(id))?))
    }

    /// Load `id` now; resolves to its version once ready.
    pub fn load(&self, id: String) -> Promise {
        let pool = self.pool.clone();
        version_promise(async move { pool.load(&id).await })
    }

    /// Load `source` as `id`'s next version beside the serving one;
    /// `unload_first`: when both cannot fit, unload the old one first.
    pub fn reload(&self, id: &str, source: &RawSource, unload_first: bool) -> Promise {
        let policy = if unload_first {
            ReloadPolicy::UnloadFirst
        } else {
            ReloadPolicy::KeepServing
        };
        version_promise(self.pool.reload_with(id, source.source.clone(), policy))
    }

    /// Stop `id`'s load in flight; whether there was one.
    pub fn cancel(&self, id: &str) -> Result<bool, JsValue> {
        js(self.pool.cancel(id))
    }

    /// Unload `id` (in this call); resolves once it is freed.
    pub fn unload(&self, id: String) -> Promise {
        let pool = self.pool.clone();
        future_to_promise(async move {
            js(pool.unload(&id).await)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Unload `id`, then forget it.
    pub fn remove(&self, id: String) -> Promise {
        let pool = self.pool.clone();
        future_to_promise(async move {
            js(pool.remove(&id).await)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Never evict `id` (or unpin it).
    #[wasm_bindgen(js_name = setPinned)]
    pub fn set_pinned(&self, id: &str, pinned: bool) -> Result<(), JsValue> {
        js(if pinned {
            self.pool.pin(id)
        } else {
            self.pool.unpin(id)
        })
    }

    /// `id`'s keep-alive in milliseconds (`null`: forever).
    #[wasm_bindgen(js_name = setKeepAlive)]
    pub fn set_keep_alive(&self, id: &str, keep_alive_ms: Option<f64>) -> Result<(), JsValue> {
        js(self
            .pool
            .set_keep_alive(id, millis(keep_alive_ms, "keepAlive")?))
    }

    /// `id`'s status, or `null`.
    pub fn status(&self, id: &str) -> JsValue {
        self.pool
            .status(id)
            .as_ref()
            .map_or(JsValue::NULL, convert::model_status)
    }

    /// The whole pool.
    #[wasm_bindgen(getter)]
    pub fn snapshot(&self) -> JsValue {
        convert::pool_snapshot(&self.pool.snapshot())
    }

    /// The counters in the Prometheus text format.
    #[wasm_bindgen(js_name = metricsText)]
    pub fn metrics_text(&self) -> String {
        self.pool.metrics_text()
    }

    /// Call `callback` with every pool event from now on, in order.
    pub fn subscribe(&self, callback: Function) -> RawSubscription {
        listen(self.pool.subscribe(), callback)
    }

    /// Stop every load, unload every model (leases still held keep theirs
    /// until released); resolves once every task has ended.
    pub fn shutdown(&self) -> Promise {
        let pool = self.pool.clone();
        future_to_promise(async move {
            pool.shutdown().await;
            Ok(JsValue::UNDEFINED)
        })
    }
}

/// One `acquire` in flight.
#[wasm_bindgen]
pub struct RawAcquire {
    promise: Promise,
    cancel: CancellationToken,
}

#[wasm_bindgen]
impl RawAcquire {
    /// Resolves to a `RawLease`.
    #[wasm_bindgen(getter)]
    pub fn promise(&self) -> Promise {
        self.promise.clone()
    }

    /// Stop waiting: the promise rejects with code 3 (unless it has
    /// settled).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

impl Events for broadcast::Receiver<PoolEvent> {
    type Item = JsValue;
    const WHAT: &'static str = "pool";
    async fn next(&mut self) -> Option<Result<JsValue, u64>> {
        match self.recv().await {
            Ok(event) => Some(Ok(convert::pool_event(&event))),
            Err(RecvError::Lagged(n)) => Some(Err(n)),
            Err(RecvError::Closed) => None,
        }
    }
}
