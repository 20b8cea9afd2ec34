//! The callback signatures and the manager's options.

use std::ffi::{c_char, c_void};

use crate::mm_result;
use crate::types::{mm_event, mm_progress, mm_snapshot};

/// Called on a loader thread after every chunk read (see
/// `mm_manager_options.progress`). `progress` is only valid during the call.
pub type mm_progress_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, progress: *const mm_progress)>;

/// Called once when a load ends (see `mm_manager_load`). `snapshot` is only
/// valid during the call.
pub type mm_load_callback = Option<
    unsafe extern "C" fn(userdata: *mut c_void, result: mm_result, snapshot: *const mm_snapshot),
>;

/// Called for every transition (see `mm_manager_subscribe`). `event` is only
/// valid during the call.
pub type mm_event_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, event: *const mm_event)>;

/// Settings for `mm_manager_new`. Fill it with `mm_manager_options_init`,
/// then change what you need.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct mm_manager_options {
    /// The device: `"cpu"`, `"cuda:N"` (or `"cuda"` for `"cuda:0"`) or
    /// `"metal"`; CUDA and Metal need a library built with those features.
    /// Not NULL. Read during `mm_manager_new` only.
    pub device: *const c_char,
    /// Refuse loads whose tensors need more bytes than this (checked before
    /// anything is allocated); 0 = model-manager's default, the memory
    /// available on the device when the load starts.
    pub memory_budget: u64,
    /// Bytes per read: progress is reported and cancellation checked this
    /// often; 0 = the default (4 MiB).
    pub chunk_size: usize,
    /// Threads reading one file in parallel; 0 = the default (the available
    /// cores, at most 4).
    pub read_threads: usize,
    /// Convert floating-point tensors to this dtype while loading:
    /// `MM_DTYPE_F32`, `MM_DTYPE_F16` or `MM_DTYPE_BF16`; integer tensors
    /// keep theirs. `MM_DTYPE_KEEP` (the default) converts nothing; any
    /// other value makes `mm_manager_new` fail with
    /// `MM_RESULT_INVALID_ARGUMENT`.
    pub dtype: u32,
    /// How long `mm_manager_destroy` waits for leases still held before
    /// giving up on them, in milliseconds; 0 = the default (5000).
    pub drain_timeout_ms: u32,
    /// Called on a loader thread after every chunk of every load; may be
    /// NULL. Calls never overlap and, within a load, each sees more bytes
    /// done than the last, but they may come from different threads. It must
    /// return quickly: it slows the load. Like every callback it may read
    /// the manager and call `mm_manager_cancel`, `mm_manager_load` or
    /// `mm_manager_unload`, but not the blocking functions.
    pub progress: mm_progress_callback,
    /// Passed verbatim to `progress` as its first argument.
    pub progress_userdata: *mut c_void,
}
