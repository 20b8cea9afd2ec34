//! Tensor buffers: one typed allocation per dtype per file, read as bytes,
//! handed to candle without a copy, advised to use huge pages.

use std::mem::MaybeUninit;

use candle_core::{DType, Device, Tensor};

/// A typed allocation of `len` elements, written as bytes, handed to
/// candle without a copy. Made either zeroed (every byte initialised from
/// the start) or for overwrite (none is: the caller writes every byte, then
/// says so with [`Buffer::assume_filled`]); candle only ever gets a filled
/// one.
pub(crate) struct Buffer {
    typed: Typed,
    /// Elements, once filled.
    len: usize,
}

enum Typed {
    U8(Vec<u8>),
    U32(Vec<u32>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F16(Vec<half::f16>),
    BF16(Vec<half::bf16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

macro_rules! each_buffer {
    ($value:expr, $v:ident => $body:expr) => {
        match $value {
            Typed::U8($v) => $body,
            Typed::U32($v) => $body,
            Typed::I16($v) => $body,
            Typed::I32($v) => $body,
            Typed::I64($v) => $body,
            Typed::F16($v) => $body,
            Typed::BF16($v) => $body,
            Typed::F32($v) => $body,
            Typed::F64($v) => $body,
        }
    };
}

/// A `Typed` of `dtype` holding `$make::<T>(n)`.
macro_rules! typed {
    ($dtype:expr, $n:expr, $make:ident) => {
        match $dtype {
            DType::U8 => Typed::U8($make($n)?),
            DType::U32 => Typed::U32($make($n)?),
            DType::I16 => Typed::I16($make($n)?),
            DType::I32 => Typed::I32($make($n)?),
            DType::I64 => Typed::I64($make($n)?),
            DType::F16 => Typed::F16($make($n)?),
            DType::BF16 => Typed::BF16($make($n)?),
            DType::F64 => Typed::F64($make($n)?),
            _ => Typed::F32($make($n)?),
        }
    };
}

impl Buffer {
    /// A zeroed buffer of `bytes`: allocations this large come straight
    /// from the OS as untouched pages, so the zeroes cost nothing until
    /// written. `None` when the allocator refuses (never a panic or an
    /// abort).
    pub(crate) fn zeroed(dtype: DType, bytes: usize) -> Option<Buffer> {
        fn zeroed<T: bytemuck::Zeroable + Copy>(n: usize) -> Option<Vec<T>> {
            bytemuck::allocation::try_zeroed_vec(n).ok()
        }
        let len = bytes / dtype.size_in_bytes();
        Some(Buffer {
            typed: typed!(dtype, len, zeroed),
            len,
        })
    }

    /// A buffer of `bytes` whose every byte the caller writes before
    /// [`Buffer::assume_filled`]: its memory may be pages a model just
    /// freed (see [`crate::alloc`]), neither zeroed nor faulted in again.
    pub(crate) fn for_overwrite(dtype: DType, bytes: usize) -> Option<Buffer> {
        fn reserved<T>(n: usize) -> Option<Vec<T>> {
            let mut v = Vec::new();
            v.try_reserve_exact(n).ok()?;
            Some(v)
        }
        let len = bytes / dtype.size_in_bytes();
        Some(Buffer {
            typed: typed!(dtype, len, reserved),
            len,
        })
    }

    fn filled(&self) -> bool {
        each_buffer!(&self.typed, v => v.len() == self.len)
    }

    /// The buffer's bytes, to be written. Only initialised bytes are ever
    /// written through it (reads from files and copies), so a filled
    /// buffer stays filled.
    pub(crate) fn dest(&mut self) -> &mut [MaybeUninit<u8>] {
        let len = self.len;
        each_buffer!(&mut self.typed, v => {
            let bytes = len * elem_size(v);
            let ptr = v.as_mut_ptr().cast::<MaybeUninit<u8>>();
            // SAFETY: the allocation holds at least `len` elements (its
            // capacity: made so), `bytes` bytes, borrowed mutably with
            // `self`; any bytes may be seen as `MaybeUninit<u8>`.
            unsafe { std::slice::from_raw_parts_mut(ptr, bytes) }
        })
    }

    /// The bytes of a zeroed (or filled) buffer; `None` before it is
    /// filled.
    pub(crate) fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        if !self.filled() {
            return None;
        }
        Some(each_buffer!(&mut self.typed, v => bytemuck::cast_slice_mut(v.as_mut_slice())))
    }

    /// Mark every byte written.
    ///
    /// # Safety
    /// Every byte of [`Buffer::dest`] has been written since the buffer
    /// was made.
    pub(crate) unsafe fn assume_filled(&mut self) {
        let len = self.len;
        // SAFETY: the capacity is at least `len` (made so) and, by the
        // caller's promise, all `len` elements are initialised bytes (any
        // bytes are valid values of these plain numeric types).
        each_buffer!(&mut self.typed, v => unsafe { v.set_len(len) })
    }

    /// The filled buffer as one 1-D tensor of `len` elements; an error
    /// before it is filled.
    pub(crate) fn into_tensor(self) -> candle_core::Result<Tensor> {
        if !self.filled() {
            return Err(candle_core::Error::Msg(
                "internal: a tensor buffer was not filled".into(),
            ));
        }
        let n = self.len;
        each_buffer!(self.typed, v => Tensor::from_vec(v, &[n], &Device::Cpu))
    }
}

fn elem_size<T>(_: &Vec<T>) -> usize {
    std::mem::size_of::<T>()
}

/// Ask the kernel to back `bytes` with huge pages (Linux, transparent huge
/// pages in `madvise` mode). Advice only: nothing changes if it is refused.
pub(crate) fn advise_huge_pages(bytes: &mut [MaybeUninit<u8>]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = bytes.as_mut_ptr() as usize;
        let first = start.next_multiple_of(HUGE);
        let end = (start + bytes.len()) & !(HUGE - 1);
        if end > first {
            // SAFETY: [first, end) lies inside `bytes`, which this function
            // borrows exclusively, and is page-aligned as madvise requires.
            // MADV_HUGEPAGE changes how the kernel backs the pages, never
            // their contents or their validity.
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
}
