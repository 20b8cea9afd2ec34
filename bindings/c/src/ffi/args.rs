//! Arguments from C: NULL-checked pointers ([`borrow`]), UTF-8 checked
//! strings ([`cstr`]), out-params written only on success ([`Out`]), and
//! strings copied into a caller's buffer ([`copy_str_out`]); [`read_into`],
//! the shape of every function that reads one value out of a handle.

use std::ffi::{c_char, CStr};
use std::ptr::NonNull;

use super::{boundary, Failure, FfiResult};
use crate::mm_result;

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

/// The body of every exported read, inside a [`boundary`]: borrow `handle`
/// (`handle_name` in the NULL message), check the out-param `out`
/// (`out_name`), then compute the value with `read` and write it, only if
/// `read` succeeds.
///
/// # Safety
///
/// `handle` is NULL or points to a live `H` for the call (as for
/// [`borrow`]); `out` is NULL or valid for a write of a `T` and properly
/// aligned (as for [`Out::write`]).
pub unsafe fn read_into<H, T>(
    handle: *const H,
    handle_name: &str,
    out: *mut T,
    out_name: &str,
    read: impl FnOnce(&H) -> FfiResult<T>,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or live for the call, per this function's contract.
        let handle = unsafe { borrow(handle, handle_name) }?;
        let out = Out::new(out, out_name)?;
        let value = read(handle)?;
        // SAFETY: non-NULL, writable and aligned per this function's contract.
        unsafe { out.write(value) };
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;

    use super::*;

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
    fn read_into_checks_then_writes_on_success_only() {
        let handle = 20u64;
        let mut slot = 1u64;
        // SAFETY: a live handle and a live, aligned out-param throughout.
        unsafe {
            let read = |h: &u64| Ok(*h + 1);
            assert_eq!(
                read_into(&handle, "h", &mut slot, "out", read),
                mm_result::Ok
            );
            assert_eq!(slot, 21);
            let fail = |_: &u64| Err(Failure::new(mm_result::NotReady, "not ready"));
            assert_eq!(
                read_into(&handle, "h", &mut slot, "out", fail),
                mm_result::NotReady
            );
            assert_eq!(slot, 21, "untouched on failure");
            let unreached = |_: &u64| -> FfiResult<u64> { panic!("read before the checks") };
            let null = read_into(std::ptr::null(), "h", &mut slot, "out", unreached);
            assert_eq!(null, mm_result::NullArgument);
            let null = read_into(&handle, "h", std::ptr::null_mut(), "out", unreached);
            assert_eq!(null, mm_result::NullArgument);
        }
    }
}
