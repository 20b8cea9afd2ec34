//! Handles given to C ([`into_handle`], [`free_handle`]) and C's
//! `void *userdata` carried to other threads ([`UserData`]).

use std::ffi::c_void;

/// Move `value` to the heap and hand C the pointer (free it with
/// [`free_handle`]).
pub fn into_handle<T>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

/// Take back a handle made by [`into_handle`]; `None` for NULL.
///
/// # Safety
///
/// `ptr` is NULL or came from [`into_handle::<T>`] and has not been freed;
/// no other reference to it is used afterwards.
pub unsafe fn free_handle<T>(ptr: *mut T) -> Option<Box<T>> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: per the caller's guarantee, `ptr` owns a live `Box<T>`.
    Some(unsafe { Box::from_raw(ptr) })
}

/// A user's `void *userdata`, handed back verbatim to its callback on
/// whatever thread the callback runs. The user promises (in the header) that
/// what it points to may be used from that thread.
#[derive(Debug, Clone, Copy)]
pub struct UserData(*mut c_void);

// SAFETY: the pointer is never dereferenced by Rust, only passed back to C;
// the header makes thread-safety of what it points to the user's contract.
unsafe impl Send for UserData {}
// SAFETY: as above; sharing the pointer value is harmless.
unsafe impl Sync for UserData {}

impl UserData {
    /// Wrap a user's pointer (NULL allowed).
    pub fn new(ptr: *mut c_void) -> Self {
        UserData(ptr)
    }

    /// The pointer. A method, not a field access, so that closures capture
    /// the whole `Send` wrapper rather than the raw pointer inside it.
    pub fn get(self) -> *mut c_void {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip() {
        let handle = into_handle(String::from("manager"));
        // SAFETY: fresh from `into_handle`, freed once.
        let back = unsafe { free_handle(handle) }.unwrap();
        assert_eq!(*back, "manager");
        // SAFETY: NULL is a no-op.
        assert!(unsafe { free_handle::<String>(std::ptr::null_mut()) }.is_none());
    }

    #[test]
    fn userdata_is_passed_back_verbatim() {
        let mut x = 3i32;
        let ud = UserData::new((&mut x as *mut i32).cast());
        let moved = std::thread::spawn(move || ud.get() as usize)
            .join()
            .unwrap();
        assert_eq!(moved, &mut x as *mut i32 as usize);
    }
}
