//! `mm_pool`: several models under one memory budget, each named by an id
//! string, loaded on demand, evicted when another needs the room, kept
//! alive while idle, pinned, reloaded beside the serving version (see
//! model-manager's `ModelPool` for the semantics, which this translates
//! one to one).
//!
//! The pool owns its threads (the core's runtime: one worker thread, a few
//! reader threads). The blocking functions (acquire, load, unload, remove,
//! reload) wait on the caller's thread, on its own clock, with the caller's
//! timeout (`ffi::block_on`): what they wait for needs no thread of the
//! binding's. The pool runs no user callback.
//!
//! One concept per file, in the header's order: `options` (the options
//! struct and its defaults), `lifecycle` (create and destroy), `models`
//! (add, remove, pin, keep-alive), `acquire` (leases), `load` (load,
//! unload, reload, cancel) and `read` (each model's status, the pool's
//! totals, error messages, the metrics text).

use std::future::Future;
use std::time::Duration;

use model_manager::ModelPool;

use crate::ffi::{block_on, refuse_in_callback, Failure, FfiResult};
use crate::{mm_result, MM_TIMEOUT_INFINITE};

// The header lists the functions in this order.
mod options;

mod lifecycle;

mod models;

mod acquire;

mod load;

mod read;

pub use acquire::*;
pub use lifecycle::*;
pub use load::*;
pub use models::*;
pub use options::*;
pub use read::*;

/// A pool of models under one memory budget. Create with `mm_pool_new`,
/// free with `mm_pool_destroy`. Opaque.
pub struct mm_pool {
    pub(crate) inner: ModelPool,
    /// How long destroy waits for leases (the pool's drain timeout).
    drain_timeout: Duration,
}

/// A keep-alive that never runs out (`mm_pool_options.keep_alive_ms`,
/// `mm_pool_set_keep_alive`, `mm_pool_model_status.keep_alive_ms`). A model
/// kept alive forever may still be evicted when another needs its memory;
/// only a pin prevents that.
pub const MM_KEEP_ALIVE_FOREVER: u64 = u64::MAX;

/// In `mm_pool_model_status`: no such time (no keep-alive clock running, or
/// never used).
pub const MM_POOL_NO_TIME: u64 = u64::MAX;

/// `timeout_ms` of a blocking pool function as a limit for `block_on`.
pub(crate) fn limit(timeout_ms: u32) -> Option<Duration> {
    (timeout_ms != MM_TIMEOUT_INFINITE).then(|| Duration::from_millis(u64::from(timeout_ms)))
}

/// Wait on this thread for `future`, at most `timeout_ms`
/// (`MM_TIMEOUT_INFINITE`: no limit); `MM_RESULT_TIMEOUT` when it passes,
/// and then the future is dropped (what it started goes on: every pool
/// command takes effect when called). Refused inside a callback.
fn wait<T>(
    function: &str,
    what: &str,
    timeout_ms: u32,
    future: impl Future<Output = model_manager::Result<T>>,
) -> FfiResult<T> {
    refuse_in_callback(function)?;
    match block_on(future, limit(timeout_ms)) {
        Some(result) => result.map_err(Failure::from),
        None => Err(Failure::new(
            mm_result::Timeout,
            format!("{what} did not finish within {timeout_ms} ms (it goes on)"),
        )),
    }
}

/// A keep-alive in milliseconds as the core's (`MM_KEEP_ALIVE_FOREVER`:
/// `None`).
pub(crate) fn keep_alive(ms: u64) -> Option<Duration> {
    (ms != MM_KEEP_ALIVE_FOREVER).then(|| Duration::from_millis(ms))
}

/// A duration in milliseconds for C, below the sentinel `u64::MAX`.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).map_or(u64::MAX - 1, |ms| ms.min(u64::MAX - 1))
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<mm_pool>();
};

/// Borrow the pool and the model id of a call.
///
/// # Safety
///
/// `pool` is NULL or a live pool, `id` NULL or a NUL-terminated string, for
/// the call.
unsafe fn args<'a>(
    pool: *const mm_pool,
    id: *const std::ffi::c_char,
) -> FfiResult<(&'a mm_pool, &'a str)> {
    // SAFETY: per this function's contract.
    let pool = unsafe { crate::ffi::borrow(pool, "pool") }?;
    // SAFETY: per this function's contract.
    let id = unsafe { crate::ffi::cstr(id, "id") }?;
    Ok((pool, id))
}
