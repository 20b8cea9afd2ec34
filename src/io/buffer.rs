//! Tensor buffers: one typed allocation per dtype per file, read as bytes,
//! handed to candle without a copy, advised to use huge pages.

use candle_core::{DType, Device, Tensor};

/// A typed buffer, read as bytes, handed to candle without a copy.
pub(crate) enum Buffer {
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
            Buffer::U8($v) => $body,
            Buffer::U32($v) => $body,
            Buffer::I16($v) => $body,
            Buffer::I32($v) => $body,
            Buffer::I64($v) => $body,
            Buffer::F16($v) => $body,
            Buffer::BF16($v) => $body,
            Buffer::F32($v) => $body,
            Buffer::F64($v) => $body,
        }
    };
}

impl Buffer {
    /// Zeroed allocations of this size come straight from the OS as
    /// untouched pages: the read is the first and only write to them.
    /// `None` when the allocator refuses (never a panic or an abort).
    pub(crate) fn alloc(dtype: DType, bytes: usize) -> Option<Buffer> {
        fn zeroed<T: bytemuck::Zeroable + Copy>(n: usize) -> Option<Vec<T>> {
            bytemuck::allocation::try_zeroed_vec(n).ok()
        }
        let n = bytes / dtype.size_in_bytes();
        Some(match dtype {
            DType::U8 => Buffer::U8(zeroed(n)?),
            DType::U32 => Buffer::U32(zeroed(n)?),
            DType::I16 => Buffer::I16(zeroed(n)?),
            DType::I32 => Buffer::I32(zeroed(n)?),
            DType::I64 => Buffer::I64(zeroed(n)?),
            DType::F16 => Buffer::F16(zeroed(n)?),
            DType::BF16 => Buffer::BF16(zeroed(n)?),
            DType::F64 => Buffer::F64(zeroed(n)?),
            _ => Buffer::F32(zeroed(n)?),
        })
    }

    pub(crate) fn len(&self) -> usize {
        each_buffer!(self, v => v.len())
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        each_buffer!(self, v => bytemuck::cast_slice_mut(v.as_mut_slice()))
    }

    pub(crate) fn into_tensor(self, shape: &[usize]) -> candle_core::Result<Tensor> {
        each_buffer!(self, v => Tensor::from_vec(v, shape, &Device::Cpu))
    }
}

/// Ask the kernel to back `bytes` with huge pages (Linux, transparent huge
/// pages in `madvise` mode). Advice only: nothing changes if it is refused.
pub(crate) fn advise_huge_pages(bytes: &mut [u8]) {
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
