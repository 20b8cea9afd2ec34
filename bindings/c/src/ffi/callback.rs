//! The callback guard: marks a thread as running a user callback, so that
//! blocking functions can refuse to run there.

use std::cell::Cell;

use super::{Failure, FfiResult};
use crate::mm_result;

thread_local! {
    static CALLBACK_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Marks this thread as running a user callback while alive (nests).
#[derive(Debug)]
pub struct CallbackGuard(());

impl CallbackGuard {
    /// Enter a callback.
    pub fn enter() -> Self {
        let _ = CALLBACK_DEPTH.try_with(|d| d.set(d.get() + 1));
        CallbackGuard(())
    }
}

impl Drop for CallbackGuard {
    fn drop(&mut self) {
        let _ = CALLBACK_DEPTH.try_with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Whether this thread is inside a user callback.
pub fn in_callback() -> bool {
    CALLBACK_DEPTH.try_with(|d| d.get() > 0).unwrap_or(false)
}

/// Refuse a blocking function inside a callback.
pub fn refuse_in_callback(function: &str) -> FfiResult {
    if in_callback() {
        return Err(Failure::new(
            mm_result::CalledFromCallback,
            format!("{function} must not be called from inside a model-manager callback"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_guard_nests() {
        assert!(!in_callback());
        assert_eq!(refuse_in_callback("f"), Ok(()));
        {
            let _outer = CallbackGuard::enter();
            {
                let _inner = CallbackGuard::enter();
                assert!(in_callback());
            }
            assert!(in_callback());
            let err = refuse_in_callback("mm_manager_destroy").unwrap_err();
            assert_eq!(err.code, mm_result::CalledFromCallback);
        }
        assert!(!in_callback());
    }
}
