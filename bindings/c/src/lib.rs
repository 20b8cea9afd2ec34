//! # model-manager-c
//!
//! The C ABI of model-manager: a thin translation of [`model_manager`] into
//! opaque handles, plain C structs, result codes and callbacks, following
//! rustls-ffi's conventions. The header `include/model_manager.h` is
//! generated from this crate by cbindgen 0.29.4; `include/model_manager.hpp`
//! wraps it for C++.
//!
//! - Every exported body runs inside a panic boundary ([`ffi::boundary`]):
//!   a panic becomes `MM_RESULT_PANIC`, never an unwind into C.
//! - Every pointer argument is NULL-checked (`MM_RESULT_NULL_ARGUMENT`),
//!   every string UTF-8-checked (`MM_RESULT_INVALID_UTF8`); out-params are
//!   written only on success (two documented exceptions report the size
//!   needed or the leases outstanding).
//! - Each manager owns a tokio runtime with one worker thread, where load
//!   and event callbacks run; progress callbacks run on its loader threads.
//!
//! ```no_run
//! use std::ptr;
//! use model_manager_c::*;
//!
//! // SAFETY: every pointer is a live local or a handle from the library.
//! unsafe {
//!     let mut options = std::mem::zeroed();
//!     assert_eq!(mm_manager_options_init(&mut options), mm_result::Ok);
//!     let mut manager = ptr::null_mut();
//!     assert_eq!(mm_manager_new(&options, &mut manager), mm_result::Ok);
//!     let path = c"models/tiny";
//!     assert_eq!(mm_manager_load(manager, path.as_ptr(), None, ptr::null_mut()), mm_result::Ok);
//!     let mut state = mm_state::Idle;
//!     assert_eq!(mm_manager_wait(manager, MM_TIMEOUT_INFINITE, &mut state), mm_result::Ok);
//!     assert_eq!(mm_manager_destroy(manager), mm_result::Ok);
//! }
//! ```

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
// The exported names are C's: `mm_manager`, `mm_result`, ...
#![allow(non_camel_case_types)]
// The safety contract of every exported function is written, for C readers,
// in its doc comment (it becomes the header's documentation): which pointers
// may be NULL, who owns them, from which threads it may be called.
#![allow(clippy::missing_safety_doc)]

/// Large blocks an evicted model frees serve the next load in a pool
/// (`model_manager::alloc`).
#[cfg(not(miri))]
#[global_allocator]
static ALLOC: model_manager::alloc::Allocator = model_manager::alloc::Allocator::new();

use std::ffi::c_char;

// The header lists items in this order: keep the main API first.
mod result;

mod types;

mod tensors;

mod callbacks;

mod manager;

mod subscription;

mod lease;

mod pool;

pub mod ffi;

#[cfg(test)]
mod tests;

pub use callbacks::*;
pub use lease::*;
pub use manager::*;
pub use pool::*;
pub use result::*;
pub use subscription::*;
pub use tensors::*;
pub use types::*;

use ffi::{boundary_quiet, copy_str_out, last_error, Failure};

/// A timeout that never expires, for `mm_manager_wait`,
/// `mm_manager_unload_timeout` and the pool's blocking functions
/// (`mm_pool_acquire`, `mm_pool_load`, ...).
pub const MM_TIMEOUT_INFINITE: u32 = u32::MAX;

/// The library's version, such as `"0.1.0"`.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: the string is static; do not free it.
#[no_mangle]
pub extern "C" fn mm_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The name of a state, such as `"ready"`, or `"unknown"` for a number that
/// is not one.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: the string is static; do not free it.
#[no_mangle]
pub extern "C" fn mm_state_name(state: u32) -> *const c_char {
    // The core's one table of names (static, NUL-terminated).
    model_manager::State::from_u32(state)
        .map_or(c"unknown", model_manager::State::c_name)
        .as_ptr()
}

/// Copy the message of the last failed call made on this thread into `buf`,
/// NUL-terminated, and its length (without the NUL) into `*len_out`.
/// Successful calls leave it unchanged; during a load callback it describes
/// that load's failure. `MM_RESULT_NOT_FOUND` if no call has failed on this
/// thread. If `len` is too small: `MM_RESULT_BUFFER_TOO_SMALL`, nothing
/// copied, and `*len_out` receives the length needed (allocate
/// `*len_out + 1`). `buf` may be NULL when `len` is 0. Failures of this
/// function do not replace the message.
///
/// Threads: any, concurrently (each thread has its own message). Callbacks:
/// may be called from them.
/// Ownership: `buf` is the caller's.
#[no_mangle]
pub unsafe extern "C" fn mm_last_error_message(
    buf: *mut c_char,
    len: usize,
    len_out: *mut usize,
) -> mm_result {
    boundary_quiet(|| {
        ffi::check_buf(buf, len, len_out)?;
        let message = last_error()
            .ok_or_else(|| Failure::new(mm_result::NotFound, "no error on this thread"))?;
        // SAFETY: `buf` is NULL or writable for `len` bytes and `len_out`
        // writable, per the header.
        unsafe { copy_str_out(&message, buf, len, len_out) }
    })
}
