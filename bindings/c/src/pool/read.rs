//! Reading a pool: each model's status, the pool's totals and counters,
//! the ids it knows, why a model's last load failed, and the metrics text.
//! Every read takes one snapshot of the pool.

use std::ffi::c_char;

use model_manager::{ModelStatus, PoolSnapshot};

use super::{args, millis, mm_pool, MM_KEEP_ALIVE_FOREVER, MM_POOL_NO_TIME};
use crate::ffi::{borrow, boundary, check_buf, copy_str_out, read_into, Failure, FfiResult};
use crate::mm_result;
use crate::types::mm_state;

/// One model of a pool, as it is now (`mm_pool_status`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct mm_pool_model_status {
    /// `MM_STATE_READY` while a version serves leases (even while a reload
    /// loads beside it); else `MM_STATE_LOADING`, `MM_STATE_UNLOADING` (being
    /// freed), `MM_STATE_FAILED` (its last load failed; acquires answer that
    /// error during the retry cooldown) or `MM_STATE_IDLE` (known, not
    /// resident).
    pub state: mm_state,
    /// The version serving leases (each load or reload of the model, failed
    /// ones included, takes the next number, from 1); 0 when none serves.
    pub version: u64,
    /// The version loading (a first load, a load on demand or a reload); 0
    /// when none is.
    pub loading_version: u64,
    /// Bytes charged against the budget for this model, all its versions
    /// together: the estimate while loading, the measured bytes once ready,
    /// until the memory is freed.
    pub charged_bytes: u64,
    /// Bytes of model memory its versions hold right now, as measured.
    pub resident_bytes: u64,
    /// Leases held, on every version.
    pub leases: usize,
    /// Acquires waiting for its load.
    pub waiters: usize,
    /// Whether it is pinned (never evicted).
    pub pinned: bool,
    /// Its keep-alive in milliseconds (`MM_KEEP_ALIVE_FOREVER`: forever).
    pub keep_alive_ms: u64,
    /// Milliseconds before its keep-alive unloads it, while the clock runs
    /// (resident, no lease held, not forever); else `MM_POOL_NO_TIME`.
    pub expires_in_ms: u64,
    /// Milliseconds since it was last acquired or released;
    /// `MM_POOL_NO_TIME` if never.
    pub idle_for_ms: u64,
    /// Why its last load or reload failed (kept until a load succeeds; the
    /// text is given by `mm_pool_error_message`); else `MM_RESULT_OK`.
    pub last_error: mm_result,
    /// Parked: its copy in host memory (the host tier) is made, and the
    /// next acquire loads it back from there; `state` is then
    /// `MM_STATE_IDLE` (or `MM_STATE_LOADING` while it comes back).
    pub parked: bool,
    /// Bytes charged against the host budget for it: its copy in host
    /// memory (kept while the model is back on the device, as long as the
    /// tier has room), or the copy being made.
    pub parked_bytes: u64,
}

impl From<&ModelStatus> for mm_pool_model_status {
    fn from(s: &ModelStatus) -> Self {
        mm_pool_model_status {
            state: s.state.into(),
            version: s.version.unwrap_or(0),
            loading_version: s.loading_version.unwrap_or(0),
            charged_bytes: s.charged_bytes,
            resident_bytes: s.resident_bytes,
            leases: s.leases,
            waiters: s.waiters,
            pinned: s.pinned,
            keep_alive_ms: s.keep_alive.map_or(MM_KEEP_ALIVE_FOREVER, millis),
            expires_in_ms: s.expires_in.map_or(MM_POOL_NO_TIME, millis),
            idle_for_ms: s.idle_for.map_or(MM_POOL_NO_TIME, millis),
            last_error: s
                .last_error
                .as_ref()
                .map_or(mm_result::Ok, |e| e.code().into()),
            parked: s.parked,
            parked_bytes: s.parked_bytes,
        }
    }
}

/// The whole pool, as it is now (`mm_pool_stats`): its budget and charges,
/// and its counters since it was created.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct mm_pool_totals {
    /// The memory budget, in bytes.
    pub budget: u64,
    /// Bytes charged now (never above `budget`).
    pub charged: u64,
    /// Bytes of unloaded models that leases kept alive past destroy's drain.
    pub unreclaimed_bytes: u64,
    /// Models the pool knows.
    pub models: usize,
    /// Models with a version serving leases.
    pub resident_models: usize,
    /// Loads waiting for memory.
    pub queued: usize,
    /// Loads started (admitted against the budget).
    pub loads: u64,
    /// Acquires served at once by a resident model.
    pub hits: u64,
    /// Acquires that had to wait for a load.
    pub misses: u64,
    /// Models unloaded to make room for another.
    pub evictions: u64,
    /// Models unloaded because their keep-alive ran out.
    pub expirations: u64,
    /// Loads (and reloads) that failed, cancellations included.
    pub failures: u64,
    /// Bytes models freed and the process keeps for a load waiting for
    /// memory (process-wide: the library's allocator keeps them, up to
    /// that load's estimate, until it ends).
    pub retained_bytes: u64,
    /// The host tier's budget (0: none).
    pub host_budget: u64,
    /// Bytes charged against the host budget now.
    pub parked_bytes: u64,
    /// Models parked in host memory now.
    pub parked_models: usize,
    /// Models evicted from the device and parked.
    pub parks: u64,
    /// Parked models loaded back onto the device.
    pub resumes: u64,
}

impl From<&PoolSnapshot> for mm_pool_totals {
    fn from(s: &PoolSnapshot) -> Self {
        mm_pool_totals {
            budget: s.budget,
            charged: s.charged,
            unreclaimed_bytes: s.unreclaimed_bytes,
            models: s.models.len(),
            resident_models: s.models.iter().filter(|m| m.version.is_some()).count(),
            queued: s.queued.len(),
            loads: s.counters.loads,
            hits: s.counters.hits,
            misses: s.counters.misses,
            evictions: s.counters.evictions,
            expirations: s.counters.expirations,
            failures: s.counters.failures,
            retained_bytes: s.retained_bytes,
            host_budget: s.host_budget,
            parked_bytes: s.parked,
            parked_models: s.models.iter().filter(|m| m.parked).count(),
            parks: s.counters.parks,
            resumes: s.counters.resumes,
        }
    }
}

/// The status of model `id`, or `MM_RESULT_UNKNOWN_MODEL`.
fn status(pool: &mm_pool, id: &str) -> FfiResult<ModelStatus> {
    pool.inner
        .status(id)
        .ok_or_else(|| model_manager::Error::UnknownModel(id.to_owned()).into())
}

/// The status of model `id` (state, versions, bytes, leases, waiters, pin,
/// keep-alive, last error), into `*status_out`. `MM_RESULT_UNKNOWN_MODEL`
/// if the pool has no model `id`.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `id` is read during the call only; `*status_out` is the
/// caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_pool_status(
    pool: *const mm_pool,
    id: *const c_char,
    status_out: *mut mm_pool_model_status,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or live arguments, per the header.
        let (pool, id) = unsafe { args(pool, id) }?;
        let out = crate::ffi::Out::new(status_out, "status_out")?;
        let value = mm_pool_model_status::from(&status(pool, id)?);
        // SAFETY: non-NULL; the caller passes a writable struct.
        unsafe { out.write(value) };
        Ok(())
    })
}

/// The pool's budget, charges, model counts and counters, into
/// `*stats_out`.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `pool` is only borrowed for the call; `*stats_out` is the
/// caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_pool_stats(
    pool: *const mm_pool,
    stats_out: *mut mm_pool_totals,
) -> mm_result {
    let read = |pool: &mm_pool| Ok(mm_pool_totals::from(&pool.inner.snapshot()));
    // SAFETY: NULL or a live pool, NULL or a writable struct, per the header.
    unsafe { read_into(pool, "pool", stats_out, "stats_out", read) }
}

/// Copy the id of model `index` (0 ≤ index < `mm_pool_totals.models`, in
/// the order of the ids' bytes) into `buf`, NUL-terminated, and its length
/// (without the NUL) into `*len_out`. `MM_RESULT_NOT_FOUND` for an index
/// out of range (models may be added and removed between calls). If `len`
/// is too small: `MM_RESULT_BUFFER_TOO_SMALL`, nothing copied, and
/// `*len_out` receives the length needed (allocate `*len_out + 1`). `buf`
/// may be NULL when `len` is 0.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `pool` is only borrowed for the call; `buf` and `len_out` are
/// the caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_pool_model_id(
    pool: *const mm_pool,
    index: usize,
    buf: *mut c_char,
    len: usize,
    len_out: *mut usize,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or a live pool, per the header.
        let pool = unsafe { borrow(pool, "pool") }?;
        check_buf(buf, len, len_out)?;
        let snapshot = pool.inner.snapshot();
        let model = snapshot.models.get(index).ok_or_else(|| {
            Failure::new(
                mm_result::NotFound,
                format!(
                    "model index {index} is out of range ({} models)",
                    snapshot.models.len()
                ),
            )
        })?;
        // SAFETY: `buf` is NULL or writable for `len` bytes and `len_out`
        // writable, per the header.
        unsafe { copy_str_out(&model.id, buf, len, len_out) }
    })
}

/// Copy the text of why `id`'s last load or reload failed (it names the
/// file and the problem; for `MM_RESULT_MEMORY_BUSY`, the models that held
/// the memory; for `MM_RESULT_INSUFFICIENT_MEMORY`, what pinned models
/// hold) into `buf`, NUL-terminated, and its length (without the NUL) into
/// `*len_out`. `MM_RESULT_NOT_FOUND` if its last load did not fail;
/// `MM_RESULT_UNKNOWN_MODEL` if the pool has no model `id`. If `len` is too
/// small: `MM_RESULT_BUFFER_TOO_SMALL`, nothing copied, and `*len_out`
/// receives the length needed (allocate `*len_out + 1`). `buf` may be NULL
/// when `len` is 0.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `id` is read during the call only; `buf` and `len_out` are
/// the caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_pool_error_message(
    pool: *const mm_pool,
    id: *const c_char,
    buf: *mut c_char,
    len: usize,
    len_out: *mut usize,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or live arguments, per the header.
        let (pool, id) = unsafe { args(pool, id) }?;
        check_buf(buf, len, len_out)?;
        let message = status(pool, id)?
            .last_error
            .map(|e| e.to_string())
            .ok_or_else(|| {
                Failure::new(mm_result::NotFound, format!("no load of {id:?} has failed"))
            })?;
        // SAFETY: `buf` is NULL or writable for `len` bytes and `len_out`
        // writable, per the header.
        unsafe { copy_str_out(&message, buf, len, len_out) }
    })
}

/// Copy the pool's counters and gauges in the Prometheus text format
/// (`model_manager_pool_loads_total`, `..._charged_bytes`,
/// `..._budget_bytes`, ...) into `buf`, NUL-terminated, and its length
/// (without the NUL) into `*len_out`. If `len` is too small:
/// `MM_RESULT_BUFFER_TOO_SMALL`, nothing copied, and `*len_out` receives the
/// length needed (allocate `*len_out + 1`; the text may grow a little
/// between two calls). `buf` may be NULL when `len` is 0.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `pool` is only borrowed for the call; `buf` and `len_out` are
/// the caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_pool_metrics_text(
    pool: *const mm_pool,
    buf: *mut c_char,
    len: usize,
    len_out: *mut usize,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or a live pool, per the header.
        let pool = unsafe { borrow(pool, "pool") }?;
        check_buf(buf, len, len_out)?;
        let text = pool.inner.metrics_text();
        // SAFETY: `buf` is NULL or writable for `len` bytes and `len_out`
        // writable, per the header.
        unsafe { copy_str_out(&text, buf, len, len_out) }
    })
}
