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
use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;

use crate::mm_result;

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
    static CALLBACK_DEPTH: Cell<u32> = const { Cell::new(0) };
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

/// Borrow `*ptr` for the length of a call.
///
/// # Safety
///
/// `ptr` is NULL or points to a live, properly aligned `T` that is not
/// mutated for the lifetime `'a`.
pub unsafe fn borrow<'a, T>(ptr: *const T, what: &str) -> FfiResult<&'a T> {
    // SAFETY: the caller guarantees `ptr` is NULL or valid for `'a`;
    // `as_ref` maps NULL to `None`.
    unsafe { ptr.as_ref() }.ok_or_else(|| Failure::null(what))
}

/// Borrow a NUL-terminated UTF-8 string.
///
/// # Safety
///
/// `ptr` is NULL or points to a NUL-terminated string that lives and is not
/// mutated for the lifetime `'a`.
pub unsafe fn cstr<'a>(ptr: *const c_char, what: &str) -> FfiResult<&'a str> {
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: non-NULL, and the caller guarantees a NUL-terminated string
    // valid for `'a`.
    let bytes = unsafe { CStr::from_ptr(ptr) };
    bytes.to_str().map_err(|e| {
        Failure::new(
            mm_result::InvalidUtf8,
            format!("{what} is not valid UTF-8: {e}"),
        )
    })
}

/// A NULL-checked out-param. Check every out-param before doing any work,
/// write them only once the call has succeeded.
#[derive(Debug)]
pub struct Out<T>(NonNull<T>);

impl<T> Out<T> {
    /// Check `ptr` for NULL.
    pub fn new(ptr: *mut T, what: &str) -> FfiResult<Self> {
        NonNull::new(ptr)
            .map(Out)
            .ok_or_else(|| Failure::null(what))
    }

    /// Write `value` (without dropping what was there: C memory holds no Rust
    /// value that needs dropping).
    ///
    /// # Safety
    ///
    /// The pointer given to [`Out::new`] is valid for writes of a `T` and
    /// properly aligned.
    pub unsafe fn write(self, value: T) {
        // SAFETY: non-NULL by construction; valid and aligned per the
        // caller's guarantee.
        unsafe { self.0.as_ptr().write(value) }
    }
}

/// Copy `s` and a terminating NUL into `buf` (of `len` bytes) and write the
/// string's length (without the NUL) to `*len_out`.
///
/// `buf` may be NULL when `len` is 0 (a query of the length needed). When the
/// buffer is too small nothing is copied, `*len_out` still receives the length
/// needed, and the result is `MM_RESULT_BUFFER_TOO_SMALL` — the one failure
/// that writes an out-param, so a caller can retry with a buffer of
/// `*len_out + 1` bytes.
///
/// # Safety
///
/// `buf` is NULL or valid for writes of `len` bytes; `len_out` is NULL or
/// valid for a write of a `usize`; they do not overlap each other or `s`.
pub unsafe fn copy_str_out(
    s: &str,
    buf: *mut c_char,
    len: usize,
    len_out: *mut usize,
) -> FfiResult {
    check_buf(buf, len, len_out)?;
    let len_out = Out::new(len_out, "len_out")?;
    let needed = s.len();
    if len <= needed {
        // SAFETY: checked non-NULL; the caller guarantees it is writable.
        unsafe { len_out.write(needed) };
        return Err(Failure::new(
            mm_result::BufferTooSmall,
            format!(
                "buffer of {len} bytes is too small: {} bytes needed",
                needed + 1
            ),
        ));
    }
    // SAFETY: `buf` is non-NULL (len > needed >= 0) and valid for `len >
    // needed` bytes; the source is a distinct Rust string of `needed` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast::<u8>(), needed);
        buf.add(needed).write(0);
        len_out.write(needed);
    }
    Ok(())
}

/// Check the arguments of a [`copy_str_out`] before doing any work: `len_out`
/// not NULL, `buf` not NULL unless `len` is 0.
pub fn check_buf(buf: *mut c_char, len: usize, len_out: *mut usize) -> FfiResult {
    if buf.is_null() && len != 0 {
        return Err(Failure::null("buf"));
    }
    Out::new(len_out, "len_out").map(drop)
}

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
    use std::ffi::CString;

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

    #[test]
    fn cstr_checks_null_and_utf8() {
        let ok = CString::new("cuda:0").unwrap();
        // SAFETY: a live CString.
        assert_eq!(unsafe { cstr(ok.as_ptr(), "device") }, Ok("cuda:0"));
        // SAFETY: NULL is allowed.
        let null = unsafe { cstr(std::ptr::null(), "device") }.unwrap_err();
        assert_eq!(null.code, mm_result::NullArgument);
        assert_eq!(null.message, "device is NULL");
        let bad = CString::new(vec![b'a', 0xff, b'b']).unwrap();
        // SAFETY: a live CString.
        let bad = unsafe { cstr(bad.as_ptr(), "path") }.unwrap_err();
        assert_eq!(bad.code, mm_result::InvalidUtf8);
        assert!(bad.message.starts_with("path is not valid UTF-8"));
    }

    #[test]
    fn borrow_checks_null() {
        let x = 5u64;
        // SAFETY: a live local.
        assert_eq!(unsafe { borrow(&x, "x") }.copied(), Ok(5));
        // SAFETY: NULL is allowed.
        let err = unsafe { borrow::<u64>(std::ptr::null(), "x") }.unwrap_err();
        assert_eq!(err.code, mm_result::NullArgument);
    }

    #[test]
    fn out_writes_only_when_asked() {
        let mut slot = 1u32;
        let out = Out::new(&mut slot, "slot").unwrap();
        // SAFETY: a live, aligned local.
        unsafe { out.write(9) };
        assert_eq!(slot, 9);
        let err = Out::<u32>::new(std::ptr::null_mut(), "state_out").unwrap_err();
        assert_eq!(err, Failure::null("state_out"));
    }

    #[test]
    fn copy_str_out_fits_exactly() {
        let mut buf = [0x55 as c_char; 6];
        let mut len = 0usize;
        // SAFETY: a live buffer of 6 bytes and a live usize.
        unsafe { copy_str_out("hello", buf.as_mut_ptr(), buf.len(), &mut len) }.unwrap();
        assert_eq!(len, 5);
        // SAFETY: NUL-terminated by the call.
        let copied = unsafe { CStr::from_ptr(buf.as_ptr()) };
        assert_eq!(copied.to_str(), Ok("hello"));
    }

    #[test]
    fn copy_str_out_reports_the_length_needed() {
        let mut buf = [0x55 as c_char; 5];
        let mut len = 0usize;
        // SAFETY: a live buffer of 5 bytes and a live usize.
        let err =
            unsafe { copy_str_out("hello", buf.as_mut_ptr(), buf.len(), &mut len) }.unwrap_err();
        assert_eq!(err.code, mm_result::BufferTooSmall);
        assert_eq!(len, 5);
        assert!(buf.iter().all(|&b| b == 0x55), "nothing copied");
        // A size query: NULL buffer, zero length.
        let mut len = 0usize;
        // SAFETY: NULL with len 0 is allowed; `len` is live.
        let err = unsafe { copy_str_out("hello", std::ptr::null_mut(), 0, &mut len) }.unwrap_err();
        assert_eq!((err.code, len), (mm_result::BufferTooSmall, 5));
    }

    #[test]
    fn copy_str_out_checks_null() {
        let mut len = 7usize;
        // SAFETY: NULL buffer with a non-zero length is refused before use.
        let err = unsafe { copy_str_out("x", std::ptr::null_mut(), 4, &mut len) }.unwrap_err();
        assert_eq!(err.code, mm_result::NullArgument);
        assert_eq!(len, 7, "len_out untouched on a NULL argument");
        let mut buf = [0 as c_char; 4];
        // SAFETY: a live buffer; NULL len_out is refused before use.
        let err =
            unsafe { copy_str_out("x", buf.as_mut_ptr(), 4, std::ptr::null_mut()) }.unwrap_err();
        assert_eq!(err, Failure::null("len_out"));
        // The empty string fits in one byte.
        let mut len = 7usize;
        // SAFETY: a live buffer of 4 bytes and a live usize.
        unsafe { copy_str_out("", buf.as_mut_ptr(), 1, &mut len) }.unwrap();
        assert_eq!((len, buf[0]), (0, 0));
    }

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
