//! Listeners: a manager's state changes or a pool's events, forwarded in
//! order from a local task to a JS callback (or to the binding's own use)
//! until closed; [`RawSubscription`] is the handle that closes one.

use js_sys::Function;
use model_manager::RecvError;
use tokio_util::sync::CancellationToken;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::spawn_local;

use crate::convert;

/// Call a JS callback; what it throws is the JS wrapper's to report.
pub(crate) fn call(callback: &Function, value: &JsValue) {
    let _ = callback.call1(&JsValue::UNDEFINED, value);
}

/// One `subscribe` listener; `close()` stops it.
#[wasm_bindgen]
pub struct RawSubscription {
    closed: CancellationToken,
}

/// A stream of events a listener forwards to JS: the next one as a JS
/// value, `Err(n)` when `n` were missed, `None` once no more can come.
pub(crate) trait Events: 'static {
    /// What an event is handed over as (a JS value, for a JS listener).
    type Item;
    /// What a listener that fell behind is called in the console.
    const WHAT: &'static str;
    async fn next(&mut self) -> Option<Result<Self::Item, u64>>;
}

impl Events for model_manager::Subscription {
    type Item = JsValue;
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
pub(crate) fn listen<E: Events<Item = JsValue>>(events: E, callback: Function) -> RawSubscription {
    listen_to(events, move |value| call(&callback, &value))
}

/// Call `f` with every state change, in order, until the returned
/// subscription is closed (or the manager is); `None` when changes were
/// missed (the listener fell behind), so that `f` can look at the state.
pub(crate) fn listen_with(
    events: model_manager::Subscription,
    mut f: impl FnMut(Option<&model_manager::StateEvent>) + 'static,
) -> RawSubscription {
    listen_to(Changes(events), move |event| f(event.as_ref()))
}

/// The manager's state changes as Rust values, for the binding's own use:
/// a gap (changes missed) is an item too (`None`), not only a log line.
struct Changes(model_manager::Subscription);

impl Events for Changes {
    type Item = Option<model_manager::StateEvent>;
    const WHAT: &'static str = "state";
    async fn next(&mut self) -> Option<Result<Option<model_manager::StateEvent>, u64>> {
        match self.0.recv().await {
            Ok(event) => Some(Ok(Some(event))),
            Err(RecvError::Lagged(_)) => Some(Ok(None)),
            Err(RecvError::Closed) => None,
        }
    }
}

fn listen_to<E: Events>(
    mut events: E,
    mut deliver: impl FnMut(E::Item) + 'static,
) -> RawSubscription {
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
                Some(Ok(value)) => deliver(value),
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
