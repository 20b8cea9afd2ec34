//! Leases on a pool's models: `mm_pool_acquire` (loading on demand, bounded)
//! and `mm_pool_try_acquire` (never loads, never waits). Both give an
//! `mm_lease`, read and released like a manager's.

use std::ffi::c_char;

use super::{args, mm_pool, wait};
use crate::ffi::{boundary, into_handle, Out};
use crate::lease::mm_lease;
use crate::mm_result;

/// A lease on `id`'s serving version, into `*lease_out`: at once if it is
/// ready; else once its load is done (a load in flight is joined; one is
/// started if none is, evicting idle models if the budget needs room, or
/// waiting for leased ones up to the pool's admission timeout). While the
/// lease is held that version stays loaded and is never evicted; every
/// pointer obtained through it stays valid, even across a reload (which
/// gives new leases the new version). Read it with the `mm_lease_*`
/// functions; `mm_lease_version` gives its version.
///
/// Waits up to `timeout_ms` (`MM_TIMEOUT_INFINITE`: no limit; 0: only if it
/// is ready now, though a load is still started): `MM_RESULT_TIMEOUT` then,
/// and the load goes on. Else fails with the load's error
/// (`MM_RESULT_MISSING_FILE`, `MM_RESULT_INVALID_MODEL`, ...;
/// `MM_RESULT_MEMORY_BUSY` if the memory stayed held past the admission
/// timeout; `MM_RESULT_INSUFFICIENT_MEMORY` if the model cannot fit even
/// with every unpinned model gone; `MM_RESULT_QUEUE_FULL`), with the last
/// error for the retry cooldown after a failed load,
/// `MM_RESULT_UNKNOWN_MODEL` if the pool has no model `id`, or
/// `MM_RESULT_CANCELLED` if the load was cancelled or unloaded.
///
/// Threads: any, concurrently. Callbacks: must not be called from them.
/// Ownership: `id` is read during the call only; the caller owns the lease
/// and must release it with `mm_lease_release`, before or after destroying
/// the pool.
#[no_mangle]
pub unsafe extern "C" fn mm_pool_acquire(
    pool: *const mm_pool,
    id: *const c_char,
    timeout_ms: u32,
    lease_out: *mut *mut mm_lease,
) -> mm_result {
    // SAFETY: the caller's arguments, per the header.
    unsafe { acquire_into("mm_pool_acquire", pool, id, 0, timeout_ms, lease_out) }
}

/// As `mm_pool_acquire`, with `working_bytes` of working memory reserved
/// against the budget beside the model for its inference (activations):
/// unleased models are evicted to make room, as for a load; the reserve is
/// charged while the lease is held (`mm_lease_working_bytes`) and released
/// with it. Fails with `MM_RESULT_MEMORY_BUSY` once the pool's admission
/// timeout has passed with the memory still held by leases,
/// `MM_RESULT_INSUFFICIENT_MEMORY` at once if the reserve could never fit
/// beside the model and the pinned models, or `MM_RESULT_TIMEOUT` after
/// `timeout_ms` (nothing is reserved then). 0 bytes: `mm_pool_acquire`.
///
/// Threads: any, concurrently. Callbacks: must not be called from them.
/// Ownership: as `mm_pool_acquire`.
#[no_mangle]
pub unsafe extern "C" fn mm_pool_acquire_with(
    pool: *const mm_pool,
    id: *const c_char,
    working_bytes: u64,
    timeout_ms: u32,
    lease_out: *mut *mut mm_lease,
) -> mm_result {
    // SAFETY: the caller's arguments, per the header.
    unsafe {
        acquire_into(
            "mm_pool_acquire_with",
            pool,
            id,
            working_bytes,
            timeout_ms,
            lease_out,
        )
    }
}

/// `mm_pool_acquire_with`'s body (0 bytes: `mm_pool_acquire`'s), named
/// `function` in its errors.
///
/// # Safety
/// `pool`, `id` and `lease_out` are NULL or live, as the header says.
unsafe fn acquire_into(
    function: &str,
    pool: *const mm_pool,
    id: *const c_char,
    working_bytes: u64,
    timeout_ms: u32,
    lease_out: *mut *mut mm_lease,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or live arguments, per the header.
        let (pool, id) = unsafe { args(pool, id) }?;
        let out = Out::new(lease_out, "lease_out")?;
        let lease = wait(
            function,
            "the acquire",
            timeout_ms,
            pool.inner.acquire_with(id, working_bytes),
        )?;
        // SAFETY: non-NULL; the caller passes a writable `mm_lease *`.
        unsafe { out.write(into_handle(mm_lease::from_pool(lease))) };
        Ok(())
    })
}

/// A lease on `id` if it is ready now, into `*lease_out`; else
/// `MM_RESULT_NOT_READY` (its state is in `mm_pool_status`). Never loads,
/// never waits. `MM_RESULT_UNKNOWN_MODEL` if the pool has no model `id`.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `id` is read during the call only; the caller owns the lease
/// and must release it with `mm_lease_release`.
#[no_mangle]
pub unsafe extern "C" fn mm_pool_try_acquire(
    pool: *const mm_pool,
    id: *const c_char,
    lease_out: *mut *mut mm_lease,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or live arguments, per the header.
        let (pool, id) = unsafe { args(pool, id) }?;
        let out = Out::new(lease_out, "lease_out")?;
        let lease = pool.inner.try_acquire(id)?;
        // SAFETY: non-NULL; the caller passes a writable `mm_lease *`.
        unsafe { out.write(into_handle(mm_lease::from_pool(lease))) };
        Ok(())
    })
}
