//! [`RawManager`], [`RawLoad`] and [`RawSubscription`]: the manager, one
//! load, and one state-change listener, as wasm-bindgen classes.

use std::future::Future;
use std::rc::Rc;
use std::str::FromStr;
use std::task::{Context, Poll, Waker};

use js_sys::{Function, Promise};
use model_manager::candle_core::DType;
use model_manager::{ErrorCode, LoadHandle, ModelManager, ModelSource, RecvError};
use tokio_util::sync::CancellationToken;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, spawn_local};

use crate::convert;
use crate::error::{js, js_error, to_js};
use crate::lease::RawLease;
use crate::pace::pace;
use crate::source::{ensure_room, RawSource};

/// The default chunk: small enough that a page stays responsive between two
/// reads, large enough that yielding costs nothing measurable.
pub(crate) const DEFAULT_CHUNK: usize = 1 << 20;

/// A Promise for `future`, polled once right away, so that what it does
/// before its first await happens in this call, not a microtask later:
/// `shutdown` is an `async fn` (it refuses commands and cancels a load on
/// its first poll); `unload()` takes effect when called, but its future
/// borrows the manager (so it must be created inside this `'static` one)
/// and reports a refusal only when polled.
///
/// The first poll uses a no-op waker; if the future is pending,
/// `future_to_promise` polls it again with a real one, and a future
/// registers the waker of its latest poll.
fn eager(future: impl Future<Output = Result<JsValue, JsValue>> + 'static) -> Promise {
    let mut future = Box::pin(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(Ok(value)) => Promise::resolve(&value),
        Poll::Ready(Err(error)) => Promise::reject(&error),
        Poll::Pending => future_to_promise(future),
    }
}

/// Bytes an in-memory source holds.
fn source_bytes(source: &ModelSource) -> u64 {
    match source {
        ModelSource::Bytes(bytes) => bytes.len() as u64,
        ModelSource::Files(files) => files.values().map(|f| f.len() as u64).sum(),
        _ => 0,
    }
}

/// Call a JS callback; what it throws is the JS wrapper's to report.
fn call(callback: &Function, value: &JsValue) {
    let _ = callback.call1(&JsValue::UNDEFINED, value);
}

/// The manager. The JS wrapper's `free()` calls [`shutdown`](Self::shutdown)
/// and then drops this (wasm-bindgen's `free()`); dropping the last
/// reference without a shutdown also closes the manager (the core's `Drop`).
/// Either way a pending load rejects with code 3 (Cancelled).
#[wasm_bindgen]
pub struct RawManager {
    /// Shared with the futures behind the promises this returns (an
    /// `unload()` in flight keeps it alive until it settles).
    manager: Rc<ModelManager>,
}

#[wasm_bindgen]
impl RawManager {
    /// `chunk_size` in bytes (default 1 MiB); `dtype` one of `"f32"`,
    /// `"f16"`, `"bf16"` (floating-point tensors are converted while
    /// loading); `memory_budget` in bytes (default: none).
    #[wasm_bindgen(constructor)]
    pub fn new(
        chunk_size: Option<f64>,
        dtype: Option<String>,
        memory_budget: Option<f64>,
    ) -> Result<RawManager, JsValue> {
        let mut builder = ModelManager::builder().pace(pace());
        builder = builder.chunk_size(match chunk_size {
            None => DEFAULT_CHUNK,
            Some(n) if n.is_finite() && n >= 1.0 && n <= u32::MAX as f64 => n as usize,
            Some(n) => {
                return Err(js_error(
                    ErrorCode::InvalidArgument,
                    &format!("invalid argument: chunkSize must be a positive integer, not {n}"),
                ))
            }
        });
        if let Some(name) = dtype {
            let dtype = DType::from_str(&name.to_ascii_lowercase()).map_err(|_| {
                js_error(
                    ErrorCode::InvalidArgument,
                    &format!(
                        "invalid argument: unknown dtype {name:?} (expected f32, f16 or bf16)"
                    ),
                )
            })?;
            builder = builder.dtype(dtype);
        }
        if let Some(n) = memory_budget {
            if !(n.is_finite() && n >= 0.0) {
                return Err(js_error(
                    ErrorCode::InvalidArgument,
                    &format!("invalid argument: memoryBudget must be a byte count, not {n}"),
                ));
            }
            builder = builder.memory_budget(n as u64);
        }
        Ok(RawManager {
            manager: Rc::new(js(builder.build())?),
        })
    }

    /// Start loading `source`; returns at once. Latest request wins: the
    /// load it replaces rejects with code 4 (Superseded).
    pub fn load(&self, source: &RawSource) -> Result<RawLoad, JsValue> {
        // The tensors need about as many bytes as the source holds (more
        // when `dtype` widens them: that case is not probed). A model held
        // now is freed before the new one is read (latest request wins).
        let held = match self.manager.snapshot().model {
            Some(model) if *model == source.source => None,
            Some(model) => Some(self.manager.resident_bytes() + source_bytes(&model)),
            None => Some(self.manager.resident_bytes()),
        };
        if let Some(freed) = held {
            ensure_room(source.bytes().saturating_sub(freed), "the model")?;
        }
        let handle = js(self.manager.load(source.source.clone()))?;
        Ok(RawLoad { handle })
    }

    /// Cancel the load in flight (or waiting for an unload); returns whether
    /// there was one. The state stays `"loading"` until the load has freed
    /// what it read (at its next chunk), then becomes `"idle"`; the load's
    /// promise rejects then.
    pub fn cancel(&self) -> bool {
        self.manager.cancel().is_ok()
    }

    /// Unload, in this call (`"ready"` becomes `"unloading"`; a load is
    /// cancelled, and stays `"loading"` until it has freed what it read):
    /// resolves once every lease is released and the memory freed. Rejects
    /// with code 2 when there is nothing to unload, 15 after shutdown.
    pub fn unload(&self) -> Promise {
        let manager = self.manager.clone();
        eager(async move {
            js(manager.unload().await)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// `Failed --reset--> Idle`.
    pub fn reset(&self) -> Result<(), JsValue> {
        js(self.manager.reset())
    }

    /// A lease on the ready model (code 5, NotReady, unless ready).
    pub fn acquire(&self) -> Result<RawLease, JsValue> {
        Ok(RawLease::new(js(self.manager.acquire())?))
    }

    /// `"idle" | "loading" | "ready" | "unloading" | "failed"`.
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> String {
        convert::state_name(self.manager.current_state()).to_owned()
    }

    /// The current snapshot as a plain object.
    #[wasm_bindgen(getter)]
    pub fn snapshot(&self) -> JsValue {
        convert::snapshot(&self.manager.snapshot())
    }

    /// `sample_size` from the ready model's config.
    #[wasm_bindgen(getter, js_name = sampleSize)]
    pub fn sample_size(&self) -> Option<f64> {
        self.manager.sample_size().map(|n| n as f64)
    }

    /// The ready model's config facts, or `null`.
    #[wasm_bindgen(getter)]
    pub fn info(&self) -> JsValue {
        self.manager
            .info()
            .as_ref()
            .map_or(JsValue::NULL, convert::info)
    }

    /// Bytes of model memory held right now.
    #[wasm_bindgen(getter, js_name = residentBytes)]
    pub fn resident_bytes(&self) -> f64 {
        self.manager.resident_bytes() as f64
    }

    /// Leases held.
    #[wasm_bindgen(getter, js_name = outstandingLeases)]
    pub fn outstanding_leases(&self) -> u32 {
        self.manager.outstanding_leases() as u32
    }

    /// Call `callback` with every transition from now on, in order, each as
    /// `{ from, to, command, snapshot }`, until the subscription is closed.
    pub fn subscribe(&self, callback: Function) -> RawSubscription {
        listen(self.manager.subscribe(), callback)
    }

    /// Cancel any load and shut the manager down in the background; the
    /// returned promise resolves once every task has ended. Leases still
    /// held keep their model's memory until released. The JS wrapper calls
    /// this, then `free()`.
    pub fn shutdown(&self) -> Promise {
        let manager = self.manager.clone();
        eager(async move {
            manager.shutdown().await;
            Ok(JsValue::UNDEFINED)
        })
    }
}

/// One requested load.
#[wasm_bindgen]
pub struct RawLoad {
    handle: LoadHandle,
}

#[wasm_bindgen]
impl RawLoad {
    /// Resolves to the snapshot once the model is ready; rejects with the
    /// load's error (code 3 when cancelled, 4 when superseded). Calls
    /// `on_progress` with `{ bytesDone, bytesTotal, tensorsDone,
    /// tensorsTotal, file }` as chunks are read (monotonic), and once more
    /// with the final totals when the load succeeds.
    pub fn wait(&self, on_progress: Option<Function>) -> Promise {
        let handle = self.handle.clone();
        future_to_promise(async move {
            let outcome = match on_progress {
                None => handle.wait().await,
                Some(callback) => {
                    let mut updates = handle.progress_updates();
                    let mut last = None;
                    // The stream starts from the progress now, as already
                    // seen: the load's task runs before this one and may
                    // have read a chunk already. Report it, or that chunk
                    // would never be.
                    let now = updates.borrow_and_update().clone();
                    if now.bytes_done > 0 {
                        call(&callback, &convert::progress(&now));
                        last = Some(now);
                    }
                    let wait = handle.wait();
                    tokio::pin!(wait);
                    let outcome = loop {
                        tokio::select! {
                            biased;
                            outcome = &mut wait => break outcome,
                            changed = updates.changed() => {
                                if changed.is_err() {
                                    break wait.await;
                                }
                                let progress = updates.borrow_and_update().clone();
                                call(&callback, &convert::progress(&progress));
                                last = Some(progress);
                            }
                        }
                    };
                    if let Ok(snapshot) = &outcome {
                        if last.as_ref() != Some(&snapshot.progress) {
                            call(&callback, &convert::progress(&snapshot.progress));
                        }
                    }
                    outcome
                }
            };
            outcome
                .map(|snapshot| convert::snapshot(&snapshot))
                .map_err(|e| to_js(&e))
        })
    }

    /// Cancel this load if it is still the current (or pending) one; a
    /// no-op once it has finished or been replaced.
    pub fn cancel(&self) {
        self.handle.cancel();
    }

    /// Progress so far.
    #[wasm_bindgen(getter)]
    pub fn progress(&self) -> JsValue {
        convert::progress(&self.handle.progress())
    }
}

/// One `subscribe` listener; `close()` stops it.
#[wasm_bindgen]
pub struct RawSubscription {
    closed: CancellationToken,
}

/// A stream of events a listener forwards to JS: the next one as a JS
/// value, `Err(n)` when `n` were missed, `None` once no more can come.
pub(crate) trait Events: 'static {
    /// What a listener that fell behind is called in the console.
    const WHAT: &'static str;
    async fn next(&mut self) -> Option<Result<JsValue, u64>>;
}

impl Events for model_manager::Subscription {
    const WHAT: &'static str = "state";
    async fn next(&mut self) -> Option<Result<JsValue, u64>> {
        match self.recv().await {
            Ok(event) => Some(Ok(convert::event(&event))),
            Err(RecvError::Lagged(n)) => Some(Err(n)),
            Err(RecvError::Closed) => None,
        }
    }
}

/// Call `callback` with every event of `events`, in order, until the
/// returned subscription is closed (or no more events can come).
pub(crate) fn listen<E: Events>(mut events: E, callback: Function) -> RawSubscription {
    let closed = CancellationToken::new();
    let stop = closed.clone();
    spawn_local(async move {
        loop {
            let event = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                event = events.next() => event,
            };
            match event {
                Some(Ok(value)) => call(&callback, &value),
                Some(Err(n)) => crate::console_error(&format!(
                    "model-manager: a {} listener fell behind and missed {n} events",
                    E::WHAT
                )),
                None => break,
            }
        }
    });
    RawSubscription { closed }
}

#[wasm_bindgen]
impl RawSubscription {
    /// Stop calling the listener (no call happens after this returns).
    pub fn close(&self) {
        self.closed.cancel();
    }
}

impl Drop for RawSubscription {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}
