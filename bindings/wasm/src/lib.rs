//! # model-manager-wasm
//!
//! The WebAssembly binding of model-manager: a thin translation of
//! [`model_manager::ModelManager`] into classes that wasm-bindgen exports to
//! JavaScript. The JavaScript package around it (`js/`) wraps these raw
//! exports into the public API (`ModelManager`, `load(source, { signal,
//! onProgress })`, leases, `onStateChange`), so nothing here is meant to be
//! called by applications directly.
//!
//! What this layer does:
//! - copies JS buffers into wasm memory once, as the core's in-memory
//!   [`ModelSource`](model_manager::ModelSource) ([`RawSource`]);
//! - feeds streamed models (a download): [`RawStream`] copies each chunk JS
//!   receives straight into its tensor's final place in wasm memory;
//! - turns the core's futures into Promises and its values (snapshots,
//!   progress, events, errors with their stable numeric codes) into plain JS
//!   objects;
//! - paces loads with a host-provided "yield a macrotask" function
//!   ([`set_pacer`]) so a page stays responsive and an abort lands between
//!   two chunks.
//!
//! JS callbacks are only ever called from tasks of their own (never while
//! the core holds a lock), so a callback may call back into the manager.
//!
//! ```no_run
//! // What the JS wrapper does, in Rust terms.
//! use model_manager_wasm::{RawManager, RawSource};
//! # fn f(bytes: js_sys::Uint8Array) -> Result<(), wasm_bindgen::JsValue> {
//! let manager = RawManager::new(Some(1048576.0), None, None)?;
//! let source = RawSource::from_bytes(&bytes)?;
//! // `bytes` is the key: loading it again joins this load (`join`).
//! let load = manager.load_from(bytes.clone().into(), source)?;
//! let _promise = load.wait(None); // resolves to the Ready snapshot
//! # Ok(()) }
//! ```

#![warn(missing_docs)]
#![deny(unsafe_code)] // one justified exception: source.rs, copy_in

mod convert;
mod error;
mod lease;
mod listen;
mod load;
mod manager;
mod pace;
mod pool;
mod source;
mod stream;
#[cfg(test)]
mod tables;

pub use lease::RawLease;
pub use listen::RawSubscription;
pub use load::RawLoad;
pub use manager::RawManager;
pub use pace::set_pacer;
pub use pool::{RawAcquire, RawPool};
pub use source::RawSource;
pub use stream::RawStream;

use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(message: &str);
}

/// Runs when the module is instantiated: report Rust panics on the console
/// (a panic aborts the wasm instance; without this the page sees only
/// "unreachable").
#[wasm_bindgen(start)]
pub fn start() {
    #[cfg(target_arch = "wasm32")]
    std::panic::set_hook(Box::new(|info| {
        console_error(&format!("model-manager (wasm) panicked: {info}"));
    }));
}

/// The version of this package's Rust crate.
#[wasm_bindgen(js_name = version)]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
