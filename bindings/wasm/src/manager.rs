//! [`RawManager`], [`RawLoad`] and [`RawSubscription`]: the manager, one
//! load, and one state-change listener, as wasm-bindgen classes.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::{Rc, Weak};
use std::str::FromStr;
use std::task::{Context, Poll, Waker};

use js_sys::{Function, Object, Promise};
use model_manager::candle_core::DType;
use model_manager::{ErrorCode, ModelManager, ModelSource, State};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::convert;
use crate::error::{js, js_error};
use crate::lease::RawLease;
use crate::listen::{listen, listen_with, RawSubscription};
use crate::load::RawLoad;
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

/// The manager. The JS wrapper's `free()` calls [`shutdown`](Self::shutdown)
/// and then drops this (wasm-bindgen's `free()`); dropping the last
/// reference without a shutdown also closes the manager (the core's `Drop`).
/// Either way a pending load rejects with code 3 (Cancelled).
#[wasm_bindgen]
pub struct RawManager {
    /// Shared with the futures behind the promises this returns (an
    /// `unload()` in flight keeps it alive until it settles).
    manager: Rc<ModelManager>,
    /// The model loading, ready or unloading, and the JS value it was
    /// loaded from. Cleared once the manager is idle or failed, so that the
    /// source's copy in wasm memory is freed with the model.
    current: Rc<RefCell<Option<Current>>>,
    /// Clears `current` (see [`forget_when_idle`]).
    _watcher: RawSubscription,
}

/// The source of the model loading or loaded, and the JS value (object or
/// URL string) it came from.
struct Current {
    key: JsValue,
    source: ModelSource,
    /// A stream is read once: after a cancel or unload it is never joined.
    read_once: bool,
    /// Set when a load of it is cancelled (`RawLoad::cancel`, an abort).
    stopped: Rc<Cell<bool>>,
}

/// Clear `current` whenever the manager settles in idle or failed: nothing
/// of its model is held then, and its source's bytes need not be either.
fn forget_when_idle(
    manager: &Rc<ModelManager>,
    current: &Rc<RefCell<Option<Current>>>,
) -> RawSubscription {
    let current: Weak<RefCell<Option<Current>>> = Rc::downgrade(current);
    let watched = Rc::downgrade(manager);
    let events = manager.subscribe();
    listen_with(events, move |event| {
        // A change to idle or failed, or a gap in which one may have been.
        if event.is_none_or(|e| matches!(e.to, State::Idle | State::Failed)) {
            let settled = watched
                .upgrade()
                .is_some_and(|m| matches!(m.current_state(), State::Idle | State::Failed));
            if let (true, Some(current)) = (settled, current.upgrade()) {
                current.borrow_mut().take();
            }
        }
    })
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
        let manager = Rc::new(js(builder.build())?);
        let current = Rc::new(RefCell::new(None));
        let _watcher = forget_when_idle(&manager, &current);
        Ok(RawManager {
            manager,
            current,
            _watcher,
        })
    }

    /// Loading `key` (a JS object, or a URL string) again: if it is the
    /// value the model loading, ready or unloading came from, a load of that
    /// same source (no copy, no reload: the core sees the same model), else
    /// `undefined`, and the caller makes a source and calls
    /// [`load_from`](Self::load_from).
    pub fn join(&self, key: JsValue) -> Result<Option<RawLoad>, JsValue> {
        let live = matches!(
            self.manager.current_state(),
            State::Loading | State::Ready | State::Unloading
        );
        let joined = {
            let mut current = self.current.borrow_mut();
            match &*current {
                // A stream whose load was cancelled is spent: forget it.
                Some(c) if c.read_once && c.stopped.get() => {
                    current.take();
                    None
                }
                Some(c) if live && Object::is(&c.key, &key) => {
                    Some((c.source.clone(), c.read_once.then(|| c.stopped.clone())))
                }
                _ => None,
            }
        };
        let Some((source, stopped)) = joined else {
            return Ok(None);
        };
        let handle = js(self.manager.load(source))?;
        Ok(Some(RawLoad { handle, stopped }))
    }

    /// Start loading `source`, made from the JS value `key`; returns at
    /// once. Takes the source (it is freed with the model, or at once if the
    /// load is refused). Latest request wins: the load it replaces rejects
    /// with code 4 (Superseded).
    #[wasm_bindgen(js_name = loadFrom)]
    pub fn load_from(&self, key: JsValue, source: RawSource) -> Result<RawLoad, JsValue> {
        let mut load = self.load(&source)?;
        let read_once = source.is_stream();
        let stopped = Rc::new(Cell::new(false));
        if read_once {
            load.stopped = Some(stopped.clone());
        }
        *self.current.borrow_mut() = Some(Current {
            key,
            read_once,
            stopped,
            source: source.source,
        });
        Ok(load)
    }
}

impl RawManager {
    fn load(&self, source: &RawSource) -> Result<RawLoad, JsValue> {
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
        Ok(RawLoad {
            handle,
            stopped: None,
        })
    }

    /// A stream is read once: a cancelled or unloaded stream load is never
    /// joined again.
    fn forget_stream(&self) {
        let mut current = self.current.borrow_mut();
        if current.as_ref().is_some_and(|c| c.read_once) {
            current.take();
        }
    }
}

#[wasm_bindgen]
impl RawManager {
    /// Cancel the load in flight (or waiting for an unload); returns whether
    /// there was one. The state stays `"loading"` until the load has freed
    /// what it read (at its next chunk), then becomes `"idle"`; the load's
    /// promise rejects then.
    pub fn cancel(&self) -> bool {
        let cancelled = self.manager.cancel().is_ok();
        if cancelled {
            self.forget_stream();
        }
        cancelled
    }

    /// Unload, in this call (`"ready"` becomes `"unloading"`; a load is
    /// cancelled, and stays `"loading"` until it has freed what it read):
    /// resolves once every lease is released and the memory freed. Rejects
    /// with code 2 when there is nothing to unload, 15 after shutdown.
    pub fn unload(&self) -> Promise {
        let manager = self.manager.clone();
        let unload = eager(async move {
            js(manager.unload().await)?;
            Ok(JsValue::UNDEFINED)
        });
        self.forget_stream();
        unload
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
