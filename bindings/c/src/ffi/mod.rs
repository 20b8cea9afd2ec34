//! The pointer and string discipline of the C ABI, in plain `std` code (no
//! tokio, no candle) so that Miri can check it:
//!
//! - [`boundary`]: every exported body runs inside it; a panic becomes
//!   [`mm_result::MM_RESULT_PANIC`](crate::mm_result), an error becomes its
//!   code and the thread's last error message.
//! - [`cstr`], [`borrow`]: NULL-checked arguments, UTF-8 checked strings.
//! - [`Out`]: a NULL-checked out-param, written only on success.
//! - [`copy_str_out`]: a string copied into a caller's buffer, reporting the
//!   length needed when the buffer is too small.
//! - [`CallbackGuard`]: marks the thread as running a user callback, so that
//!   blocking functions can refuse to run there.
//! - [`block_on`]: waits on a host thread with a deadline of its own clock.
//!
//! One concept per file: the boundary and the last error here, the
//! arguments in `args`, handles and user pointers in `handle`, the callback
//! guard in `callback`, waiting with a deadline in `wait`; all re-exported
//! here (`ffi::boundary`, `ffi::Out`).
//!
//! ```
//! use model_manager_c::ffi::{boundary, Failure};
//! use model_manager_c::mm_result;
//!
//! assert_eq!(boundary(|| Ok(())), mm_result::Ok);
//! let code = boundary(|| Err(Failure::new(mm_result::NotFound, "no such key")));
//! assert_eq!(code, mm_result::NotFound);
//! assert_eq!(boundary(|| panic!("bug")), mm_result::Panic);
//! ```

use std::any::Any;
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::mm_result;

mod args;
mod callback;
mod handle;
mod wait;

pub use args::*;
pub use callback::*;
pub use handle::*;
pub use wait::*;

/// Why an exported function failed: the code C sees and the message kept for
/// `mm_last_error_message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The code returned to C.
    pub code: mm_result,
    /// A human-readable description.
    pub message: String,
}

impl Failure {
    /// A failure with `code` and `message`.
    pub fn new(code: mm_result, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// A NULL pointer was passed for `what`.
    pub fn null(what: &str) -> Self {
        Failure::new(mm_result::NullArgument, format!("{what} is NULL"))
    }
}

impl From<model_manager::Error> for Failure {
    fn from(err: model_manager::Error) -> Self {
        Failure::new(mm_result::from(err.code()), err.to_string())
    }
}

/// The result of an exported body.
pub type FfiResult<T = ()> = Result<T, Failure>;

thread_local! {
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Remember `message` as this thread's last error.
pub fn set_last_error(message: impl Into<String>) {
    let message = message.into();
    // `try_with`: during thread teardown the slot may be gone; then the
    // message is dropped rather than panicking.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = Some(message));
}

/// This thread's last error message, if any.
pub fn last_error() -> Option<String> {
    LAST_ERROR
        .try_with(|slot| slot.borrow().clone())
        .ok()
        .flatten()
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}

/// Run an exported body: `Ok` becomes `MM_RESULT_OK`; an error becomes its
/// code, its message this thread's last error; a panic becomes
/// `MM_RESULT_PANIC`. Nothing unwinds past this function.
pub fn boundary(body: impl FnOnce() -> FfiResult) -> mm_result {
    boundary_with(body, true)
}

/// Like [`boundary`], but a failure leaves the last error message as it was
/// (for `mm_last_error_message` itself).
pub fn boundary_quiet(body: impl FnOnce() -> FfiResult) -> mm_result {
    boundary_with(body, false)
}

fn boundary_with(body: impl FnOnce() -> FfiResult, record: bool) -> mm_result {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => mm_result::Ok,
        Ok(Err(failure)) => {
            if record {
                set_last_error(failure.message);
            }
            failure.code
        }
        Err(payload) => {
            // Dropping a payload can itself panic; never let that escape.
            let message = catch_unwind(AssertUnwindSafe(|| {
                format!("panic in model-manager: {}", panic_message(&*payload))
            }))
            .unwrap_or_else(|_| "panic in model-manager".to_owned());
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            set_last_error(message);
            mm_result::Panic
        }
    }
}

/// Run a body that returns nothing (`_release`, `_unsubscribe`): a panic is
/// recorded as the last error and swallowed.
pub fn boundary_void(body: impl FnOnce()) {
    let _ = boundary(|| {
        body();
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_maps_ok_error_and_panic() {
        assert_eq!(boundary(|| Ok(())), mm_result::Ok);
        let code = boundary(|| Err(Failure::new(mm_result::NotFound, "nope")));
        assert_eq!(code, mm_result::NotFound);
        assert_eq!(last_error().as_deref(), Some("nope"));
        assert_eq!(boundary(|| panic!("boom {}", 42)), mm_result::Panic);
        assert_eq!(
            last_error().as_deref(),
            Some("panic in model-manager: boom 42")
        );
        assert_eq!(boundary(|| std::panic::panic_any(7u8)), mm_result::Panic);
        assert_eq!(
            last_error().as_deref(),
            Some("panic in model-manager: unknown panic payload")
        );
    }

    #[test]
    fn quiet_boundary_keeps_the_last_error() {
        set_last_error("first");
        let code = boundary_quiet(|| Err(Failure::new(mm_result::BufferTooSmall, "second")));
        assert_eq!(code, mm_result::BufferTooSmall);
        assert_eq!(last_error().as_deref(), Some("first"));
    }

    #[test]
    fn boundary_void_swallows_panics() {
        boundary_void(|| panic!("in release"));
        assert_eq!(
            last_error().as_deref(),
            Some("panic in model-manager: in release")
        );
    }
}
