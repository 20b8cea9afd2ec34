//! Pacing: how a load yields to the JS event loop between two chunks.
//!
//! The host (the JS wrapper) registers a function that returns a Promise
//! resolved on a later macrotask: a `MessageChannel` post in browsers (no
//! 4 ms clamp, unlike `setTimeout(0)`), `setImmediate` in Node. Between two
//! chunks the load awaits it, so timers, input and `AbortSignal` listeners
//! run, and a cancel lands before the next chunk is read.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use js_sys::{Function, Promise};
use model_manager::Pace;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

thread_local! {
    // wasm32 without atomics is single-threaded: one pacer for the module.
    static PACER: RefCell<Option<Function>> = const { RefCell::new(None) };
}

/// Register the function loads call between chunks; it must return a
/// Promise that resolves on a later macrotask. Without one, loads only yield
/// to the microtask queue, which keeps the page busy until the load ends.
#[wasm_bindgen(js_name = setPacer)]
pub fn set_pacer(pacer: Option<Function>) {
    PACER.with(|p| *p.borrow_mut() = pacer);
}

/// The pace handed to the core: one turn of the host's event loop.
pub(crate) fn pace() -> Pace {
    Arc::new(|| -> Pin<Box<dyn Future<Output = ()>>> { Box::pin(turn()) })
}

async fn turn() {
    let promise = PACER.with(|p| {
        p.borrow()
            .as_ref()
            .and_then(|f| f.call0(&JsValue::UNDEFINED).ok())
    });
    match promise.map(|value| Promise::resolve(&value)) {
        Some(promise) => {
            // A rejected pacer promise is still a turn of the event loop.
            let _ = JsFuture::from(promise).await;
        }
        None => tokio::task::yield_now().await,
    }
}
