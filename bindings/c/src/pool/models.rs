//! The models a pool knows: `mm_pool_add`, `mm_pool_remove`, and each
//! model's settings (`mm_pool_pin`, `mm_pool_unpin`,
//! `mm_pool_set_keep_alive`).

use std::ffi::c_char;

use model_manager::ModelSource;

use super::{args, mm_pool, wait};
use crate::ffi::{boundary, cstr, Out};
use crate::mm_result;

/// Make the model at `path` (a `.safetensors` file or a model folder) known
/// as `id`, with the pool's default keep-alive, not pinned. Loads nothing:
/// the first `mm_pool_acquire` (or `mm_pool_load`) does; a missing or broken
/// model is reported then. `MM_RESULT_INVALID_ARGUMENT` for an empty id or
/// one the pool already has.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `id` and `path` are copied during the call.
#[no_mangle]
pub unsafe extern "C" fn mm_pool_add(
    pool: *const mm_pool,
    id: *const c_char,
    path: *const c_char,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or live arguments, per the header.
        let (pool, id) = unsafe { args(pool, id) }?;
        // SAFETY: NULL or a NUL-terminated string, per the header.
        let path = unsafe { cstr(path, "path") }?;
        pool.inner.add(id, ModelSource::from(path))?;
        Ok(())
    })
}

/// Make the diffusers pipeline folder at `path` known as one model per
/// component that holds weights, under the ids `"<id>/<component>"`
/// (`"sd/unet"`, `"sd/vae"`, ...): each loads only its component and is
/// leased, evicted and reloaded on its own. Their number goes to
/// `*count_out`; `mm_pool_model_id` lists them. Reads the pipeline's
/// headers and configs now; all or nothing: `MM_RESULT_INVALID_ARGUMENT`
/// (nothing added) for a source that is not a pipeline or an id the pool
/// already has, the path's error for a missing or broken pipeline.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `id` and `path` are copied during the call; `*count_out` is
/// the caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_pool_add_pipeline(
    pool: *const mm_pool,
    id: *const c_char,
    path: *const c_char,
    count_out: *mut usize,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or live arguments, per the header.
        let (pool, id) = unsafe { args(pool, id) }?;
        // SAFETY: NULL or a NUL-terminated string, per the header.
        let path = unsafe { cstr(path, "path") }?;
        let out = Out::new(count_out, "count_out")?;
        let ids = pool.inner.add_pipeline(id, ModelSource::from(path))?;
        // SAFETY: non-NULL; the caller passes a writable `size_t`.
        unsafe { out.write(ids.len()) };
        Ok(())
    })
}

/// Unload `id` (as `mm_pool_unload`), then forget it: its id may be added
/// again. Waits up to `timeout_ms` (`MM_TIMEOUT_INFINITE`: no limit) for its
/// leases to be released and its memory freed; on `MM_RESULT_TIMEOUT` it is
/// still unloading and still known (call again to forget it).
/// `MM_RESULT_UNKNOWN_MODEL` if the pool has no model `id`.
///
/// Threads: any, concurrently. Callbacks: must not be called from them.
/// Ownership: `id` is read during the call only.
#[no_mangle]
pub unsafe extern "C" fn mm_pool_remove(
    pool: *const mm_pool,
    id: *const c_char,
    timeout_ms: u32,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or live arguments, per the header.
        let (pool, id) = unsafe { args(pool, id) }?;
        wait(
            "mm_pool_remove",
            "the removal",
            timeout_ms,
            pool.inner.remove(id),
        )
    })
}

/// Pin `id`: it is never evicted, nor unloaded by its keep-alive, until
/// unpinned (`mm_pool_unload` still unloads it). `MM_RESULT_UNKNOWN_MODEL`
/// if the pool has no model `id`.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `id` is read during the call only.
#[no_mangle]
pub unsafe extern "C" fn mm_pool_pin(pool: *const mm_pool, id: *const c_char) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or live arguments, per the header.
        let (pool, id) = unsafe { args(pool, id) }?;
        Ok(pool.inner.pin(id)?)
    })
}

/// Unpin `id` (loads waiting for memory look again).
/// `MM_RESULT_UNKNOWN_MODEL` if the pool has no model `id`.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `id` is read during the call only.
#[no_mangle]
pub unsafe extern "C" fn mm_pool_unpin(pool: *const mm_pool, id: *const c_char) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or live arguments, per the header.
        let (pool, id) = unsafe { args(pool, id) }?;
        Ok(pool.inner.unpin(id)?)
    })
}

/// Set `id`'s keep-alive: how long it stays loaded once its last lease is
/// released, in milliseconds (`MM_KEEP_ALIVE_FOREVER`: until evicted or
/// unloaded; 0: unloaded as soon as it is idle). A running clock restarts.
/// `MM_RESULT_UNKNOWN_MODEL` if the pool has no model `id`.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `id` is read during the call only.
#[no_mangle]
pub unsafe extern "C" fn mm_pool_set_keep_alive(
    pool: *const mm_pool,
    id: *const c_char,
    keep_alive_ms: u64,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or live arguments, per the header.
        let (pool, id) = unsafe { args(pool, id) }?;
        Ok(pool
            .inner
            .set_keep_alive(id, super::keep_alive(keep_alive_ms))?)
    })
}
