//! Commands on one model of a pool: `mm_pool_load`, `mm_pool_unload`,
//! `mm_pool_reload`, `mm_pool_cancel`. Each takes effect when called; the
//! blocking ones then wait, bounded by the caller's timeout.

use std::ffi::c_char;

use model_manager::{ModelSource, ReloadPolicy};

use super::{args, mm_pool, wait};
use crate::ffi::{boundary, cstr, Failure, Out};
use crate::mm_result;

/// What `mm_pool_reload` does when the new version cannot fit beside the
/// old one. Values are explicit and never reused.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum mm_reload_policy {
    /// Refuse the reload with `MM_RESULT_INSUFFICIENT_MEMORY`; the old
    /// version keeps serving (no downtime, ever).
    KeepServing = 0,
    /// Unload the old version first (waiting for its leases), then load the
    /// new one: acquires wait for the new version meanwhile. The old version
    /// stops serving as soon as the reload finds it cannot fit: if its
    /// leases are held past the pool's admission timeout, the reload fails
    /// with `MM_RESULT_MEMORY_BUSY` and the model is left unloading, not
    /// serving (the next acquire loads the old path again).
    UnloadFirst = 1,
}

/// Load `id` now, unless it is ready or loading, and wait until it is ready
/// (as `mm_pool_acquire` does, without taking a lease). Waits up to
/// `timeout_ms` (`MM_TIMEOUT_INFINITE`: no limit): `MM_RESULT_TIMEOUT` then,
/// and the load goes on. Fails with the load's error (see
/// `mm_pool_acquire`), or `MM_RESULT_UNKNOWN_MODEL`.
///
/// Threads: any, concurrently. Callbacks: must not be called from them.
/// Ownership: `id` is read during the call only.
#[no_mangle]
pub unsafe extern "C" fn mm_pool_load(
    pool: *const mm_pool,
    id: *const c_char,
    timeout_ms: u32,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or live arguments, per the header.
        let (pool, id) = unsafe { args(pool, id) }?;
        wait("mm_pool_load", "the load", timeout_ms, pool.inner.load(id)).map(drop)
    })
}

/// Unload `id`: its load in flight (or reload) stops, its serving version
/// stops taking leases, waits for the ones held and is freed. Takes effect
/// when called; then waits up to `timeout_ms` (`MM_TIMEOUT_INFINITE`: no
/// limit) until nothing of it is charged to the budget:
/// `MM_RESULT_TIMEOUT` if leases are still held then (the unload goes on
/// and ends when they are released). The model stays known: a later
/// acquire loads it again. `MM_RESULT_UNKNOWN_MODEL` if the pool has no
/// model `id`.
///
/// Threads: any, concurrently. Callbacks: must not be called from them.
/// Ownership: `id` is read during the call only.
#[no_mangle]
pub unsafe extern "C" fn mm_pool_unload(
    pool: *const mm_pool,
    id: *const c_char,
    timeout_ms: u32,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or live arguments, per the header.
        let (pool, id) = unsafe { args(pool, id) }?;
        wait(
            "mm_pool_unload",
            "the unload",
            timeout_ms,
            pool.inner.unload(id),
        )
    })
}

/// Load the model at `path` as the next version of `id`, beside the one
/// serving; once it is ready new leases get it, and the old version is freed
/// when its leases are released (leases keep the version they hold, and
/// their pointers stay valid). `policy` (an `mm_reload_policy`) says what
/// happens when both cannot fit. The newest reload wins: a load or reload
/// in flight for `id` stops. `*version_out` receives the new version once
/// it serves.
///
/// Takes effect when called; then waits up to `timeout_ms`
/// (`MM_TIMEOUT_INFINITE`: no limit): `MM_RESULT_TIMEOUT` then, and the
/// reload goes on (`mm_pool_status` shows its outcome). A failed reload
/// fails with the load's error (also in the model's status) and leaves the
/// old version serving, except as `MM_RELOAD_POLICY_UNLOAD_FIRST` says. `MM_RESULT_INVALID_ARGUMENT` for a policy that is
/// not an `mm_reload_policy`; `MM_RESULT_UNKNOWN_MODEL` if the pool has no
/// model `id`.
///
/// Threads: any, concurrently. Callbacks: must not be called from them.
/// Ownership: `id` and `path` are read during the call only.
#[no_mangle]
pub unsafe extern "C" fn mm_pool_reload(
    pool: *const mm_pool,
    id: *const c_char,
    path: *const c_char,
    policy: u32,
    timeout_ms: u32,
    version_out: *mut u64,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or live arguments, per the header.
        let (pool, id) = unsafe { args(pool, id) }?;
        // SAFETY: NULL or a NUL-terminated string, per the header.
        let path = unsafe { cstr(path, "path") }?;
        let out = Out::new(version_out, "version_out")?;
        let policy = match policy {
            p if p == mm_reload_policy::KeepServing as u32 => ReloadPolicy::KeepServing,
            p if p == mm_reload_policy::UnloadFirst as u32 => ReloadPolicy::UnloadFirst,
            p => {
                return Err(Failure::new(
                    mm_result::InvalidArgument,
                    format!(
                        "policy {p} is not MM_RELOAD_POLICY_KEEP_SERVING or \
                         MM_RELOAD_POLICY_UNLOAD_FIRST"
                    ),
                ))
            }
        };
        crate::ffi::refuse_in_callback("mm_pool_reload")?;
        let reload = pool.inner.reload_with(id, ModelSource::from(path), policy);
        let version = wait("mm_pool_reload", "the reload", timeout_ms, reload)?;
        // SAFETY: non-NULL; the caller passes a writable `uint64_t`.
        unsafe { out.write(version) };
        Ok(())
    })
}

/// Stop the load (or reload) of `id` in flight; `*cancelled_out` says
/// whether there was one. Its waiters fail with `MM_RESULT_CANCELLED`; a
/// serving version keeps serving. Returns at once; the load frees what it
/// read before its charge goes. `MM_RESULT_UNKNOWN_MODEL` if the pool has
/// no model `id`.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `id` is read during the call only.
#[no_mangle]
pub unsafe extern "C" fn mm_pool_cancel(
    pool: *const mm_pool,
    id: *const c_char,
    cancelled_out: *mut bool,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or live arguments, per the header.
        let (pool, id) = unsafe { args(pool, id) }?;
        let out = Out::new(cancelled_out, "cancelled_out")?;
        let cancelled = pool.inner.cancel(id)?;
        // SAFETY: non-NULL; the caller passes a writable `bool`.
        unsafe { out.write(cancelled) };
        Ok(())
    })
}
