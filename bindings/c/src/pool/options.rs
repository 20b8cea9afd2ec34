//! `mm_pool_options` and `mm_pool_options_init`, its defaults.

use std::ffi::c_char;

use crate::ffi::{boundary, Out};
use crate::mm_result;
use crate::types::MM_DTYPE_KEEP;

use super::MM_KEEP_ALIVE_FOREVER;

/// Settings for `mm_pool_new`. Fill it with `mm_pool_options_init`, then
/// change what you need: every field is taken as written (0 is zero) except
/// where it says that 0 means a default.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct mm_pool_options {
    /// The device every model loads onto: `"cpu"` (the default), `"cuda"`,
    /// `"cuda:N"` or `"metal"`. One pool per device: the budget is that
    /// device's.
    pub device: *const c_char,
    /// Bytes all models together may hold. 0: the memory available when the
    /// pool is created (`MemAvailable` on the CPU, the driver's free memory
    /// on CUDA; required on Metal).
    pub memory_budget: u64,
    /// Bytes per read; 0: the default (4 MiB).
    pub chunk_size: usize,
    /// Threads reading one file in parallel; 0: the default.
    pub read_threads: usize,
    /// Convert floating-point tensors to `MM_DTYPE_F32`, `MM_DTYPE_F16` or
    /// `MM_DTYPE_BF16` while loading, or keep them (`MM_DTYPE_KEEP`, the
    /// default).
    pub dtype: u32,
    /// How long `mm_pool_destroy` waits for leases before freeing the models
    /// anyway (default 5000).
    pub drain_timeout_ms: u32,
    /// The keep-alive of a model added without one: how long it stays loaded
    /// once its last lease is released, in milliseconds
    /// (`MM_KEEP_ALIVE_FOREVER`, the default: until evicted or unloaded).
    pub keep_alive_ms: u64,
    /// At most this many loads wait for memory at once; more fail with
    /// `MM_RESULT_QUEUE_FULL` (default 64; must not be 0).
    pub max_queue: u32,
    /// Loads that may run at once (default 1: one load reads at the device's
    /// full speed rather than several sharing it; must not be 0).
    pub concurrent_loads: u32,
    /// How long a load waits for memory held by leased or loading models
    /// before failing with `MM_RESULT_MEMORY_BUSY` (default 60000; 0: fail
    /// at once; `MM_TIMEOUT_INFINITE`: no limit).
    pub admission_timeout_ms: u32,
    /// After a model's load fails, acquires of it answer that error for this
    /// long instead of loading it again (default 5000; 0: retry at once).
    pub retry_cooldown_ms: u32,
    /// Bytes left to other processes on the device: the budget is
    /// `memory_budget` (or the memory available) less this (default 0;
    /// more than the budget: `MM_RESULT_INVALID_ARGUMENT`).
    pub headroom: u64,
    /// The host tier, for a pool on a CUDA device (default 0: none): a model
    /// evicted from the device is parked in page-locked host memory when it
    /// fits these many bytes, and an acquire brings it back with one copy
    /// (no file read). On the CPU: `MM_RESULT_INVALID_ARGUMENT` unless 0.
    pub host_budget: u64,
}

/// Fill `*options` with the defaults: device `"cpu"`, the memory available
/// as the budget, 4 MiB chunks, the default read threads, dtypes kept, a
/// 5000 ms drain timeout, keep-alive forever, a queue of 64 loads, one load
/// at a time, a 60000 ms admission timeout, a 5000 ms retry cooldown, no
/// headroom and no host tier.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `options` is the caller's; `options->device` is set to a
/// static string.
#[no_mangle]
pub unsafe extern "C" fn mm_pool_options_init(options: *mut mm_pool_options) -> mm_result {
    boundary(|| {
        let out = Out::new(options, "options")?;
        // SAFETY: non-NULL; the caller passes a writable `mm_pool_options`.
        unsafe { out.write(mm_pool_options::default()) };
        Ok(())
    })
}

impl Default for mm_pool_options {
    fn default() -> Self {
        mm_pool_options {
            device: c"cpu".as_ptr(),
            memory_budget: 0,
            chunk_size: 0,
            read_threads: 0,
            dtype: MM_DTYPE_KEEP,
            drain_timeout_ms: 5_000,
            keep_alive_ms: MM_KEEP_ALIVE_FOREVER,
            max_queue: 64,
            concurrent_loads: 1,
            admission_timeout_ms: 60_000,
            retry_cooldown_ms: 5_000,
            headroom: 0,
            host_budget: 0,
        }
    }
}
