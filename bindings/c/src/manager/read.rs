//! Reading a manager: its state and snapshot, why its last load failed,
//! and what the ready model says about itself (config, size in memory,
//! leases held). Every read takes one published snapshot of the core.

use std::ffi::c_char;

use crate::ffi::{borrow, boundary, check_buf, copy_str_out, cstr, read_into, Failure, FfiResult};
use crate::mm_result;
use crate::types::{mm_snapshot, mm_state};

use super::mm_manager;

/// The current state, into `*state_out`. Lock-free, never stale.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `manager` is only borrowed for the call; out-params are the
/// caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_state(
    manager: *const mm_manager,
    state_out: *mut mm_state,
) -> mm_result {
    let read = |manager: &mm_manager| Ok(manager.inner.current_state().into());
    // SAFETY: NULL or a live manager, NULL or a writable `mm_state`, per the
    // header.
    unsafe { read_into(manager, "manager", state_out, "state_out", read) }
}

/// The current snapshot (state, generation, live progress, error code), into
/// `*snapshot_out`. Lock-free.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `manager` is only borrowed for the call; out-params are the
/// caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_snapshot(
    manager: *const mm_manager,
    snapshot_out: *mut mm_snapshot,
) -> mm_result {
    let read = |manager: &mm_manager| Ok(mm_snapshot::from(&manager.inner.snapshot()));
    // SAFETY: NULL or a live manager, NULL or a writable `mm_snapshot`, per
    // the header.
    unsafe { read_into(manager, "manager", snapshot_out, "snapshot_out", read) }
}

/// In Failed, copy the text of why the last load failed (it names the file
/// and the problem) into `buf`, NUL-terminated, and its length (without the
/// NUL) into `*len_out`. Outside Failed: `MM_RESULT_NOT_FOUND`. If `len` is
/// too small: `MM_RESULT_BUFFER_TOO_SMALL`, nothing copied, and `*len_out`
/// receives the length needed (allocate `*len_out + 1`). `buf` may be NULL
/// when `len` is 0.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `manager` is only borrowed for the call; `buf` and `len_out`
/// are the caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_error_message(
    manager: *const mm_manager,
    buf: *mut c_char,
    len: usize,
    len_out: *mut usize,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or a live manager, per the header.
        let manager = unsafe { borrow(manager, "manager") }?;
        check_buf(buf, len, len_out)?;
        let message = manager
            .inner
            .snapshot()
            .error
            .map(|e| e.to_string())
            .ok_or_else(|| Failure::new(mm_result::NotFound, "no load has failed"))?;
        // SAFETY: `buf` is NULL or writable for `len` bytes and `len_out`
        // writable, per the header.
        unsafe { copy_str_out(&message, buf, len, len_out) }
    })
}

/// `sample_size` from the ready model's config (for a diffusers pipeline,
/// the denoiser's), into `*sample_size_out`. `MM_RESULT_NOT_READY` unless
/// Ready; `MM_RESULT_NOT_FOUND` if the config has none.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `manager` is only borrowed for the call; out-params are the
/// caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_sample_size(
    manager: *const mm_manager,
    sample_size_out: *mut u64,
) -> mm_result {
    let read = |manager: &mm_manager| {
        ready_info(manager)?
            .sample_size
            .ok_or_else(|| Failure::new(mm_result::NotFound, "the config has no sample_size"))
    };
    // SAFETY: NULL or a live manager, NULL or a writable `uint64_t`, per the
    // header.
    unsafe { read_into(manager, "manager", sample_size_out, "sample_size_out", read) }
}

fn ready_info(manager: &mm_manager) -> FfiResult<model_manager::PipelineInfo> {
    manager
        .inner
        .info()
        .ok_or_else(|| model_manager::Error::NotReady(manager.inner.current_state()).into())
}

/// Copy the value of the top-level `key` of the ready model's config
/// (`config.json`, or `model_index.json` for a pipeline) as compact JSON
/// (e.g. `64`, `"DDIM"`, `[1,2]`) into `buf`, NUL-terminated, and its
/// length (without the NUL) into `*len_out`. `MM_RESULT_NOT_READY` unless
/// Ready; `MM_RESULT_NOT_FOUND` without such a key. If `len` is too small:
/// `MM_RESULT_BUFFER_TOO_SMALL`, nothing copied, and `*len_out` receives the
/// length needed (allocate `*len_out + 1`). `buf` may be NULL when `len` is
/// 0.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `manager` is only borrowed for the call; `key` is read during
/// the call only; `buf` and `len_out` are the caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_config(
    manager: *const mm_manager,
    key: *const c_char,
    buf: *mut c_char,
    len: usize,
    len_out: *mut usize,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or a live manager, per the header.
        let manager = unsafe { borrow(manager, "manager") }?;
        // SAFETY: NULL or a NUL-terminated string, per the header.
        let key = unsafe { cstr(key, "key") }?;
        check_buf(buf, len, len_out)?;
        let info = ready_info(manager)?;
        let value = info
            .config
            .as_ref()
            .and_then(|config| config.get(key))
            .ok_or_else(|| {
                Failure::new(
                    mm_result::NotFound,
                    format!("the config has no key {key:?}"),
                )
            })?;
        let json = serde_json::to_string(value)
            .map_err(|e| Failure::new(mm_result::InvalidConfig, e.to_string()))?;
        // SAFETY: `buf` is NULL or writable for `len` bytes and `len_out`
        // writable, per the header.
        unsafe { copy_str_out(&json, buf, len, len_out) }
    })
}

/// Bytes of model memory resident on the device right now, into
/// `*bytes_out`.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `manager` is only borrowed for the call; out-params are the
/// caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_resident_bytes(
    manager: *const mm_manager,
    bytes_out: *mut u64,
) -> mm_result {
    let read = |manager: &mm_manager| Ok(manager.inner.resident_bytes());
    // SAFETY: NULL or a live manager, NULL or a writable `uint64_t`, per the
    // header.
    unsafe { read_into(manager, "manager", bytes_out, "bytes_out", read) }
}

/// Leases held (on the ready model, or on the one unloading), into
/// `*leases_out`.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `manager` is only borrowed for the call; out-params are the
/// caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_outstanding_leases(
    manager: *const mm_manager,
    leases_out: *mut usize,
) -> mm_result {
    let read = |manager: &mm_manager| Ok(manager.inner.outstanding_leases());
    // SAFETY: NULL or a live manager, NULL or a writable `size_t`, per the
    // header.
    unsafe { read_into(manager, "manager", leases_out, "leases_out", read) }
}
