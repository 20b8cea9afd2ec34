//! The C view of a leased tensor: in host memory (`mm_tensor`) or wherever
//! it lives (`mm_device_tensor`).

use std::ffi::{c_char, c_void};

use crate::types::mm_dtype;

/// A tensor seen through a lease. Every pointer in it is owned by the lease
/// and valid until `mm_lease_release`; none may be freed or written through.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct mm_tensor {
    /// The tensor's name, NUL-terminated: `"weight"` for a single model,
    /// `"component/weight"` for a pipeline of several components.
    pub name: *const c_char,
    /// The element type.
    pub dtype: mm_dtype,
    /// Number of dimensions (0 for a scalar).
    pub rank: usize,
    /// `rank` dimensions, outermost first.
    pub shape: *const usize,
    /// The elements, contiguous, row-major, in host memory.
    pub data: *const c_void,
    /// Size of `data` in bytes (elements × dtype size).
    pub data_len: usize,
}

/// Where a tensor's data lives. Values are explicit and never reused.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum mm_device_kind {
    /// Host memory: `address` is a pointer the host may read.
    Cpu = 0,
    /// CUDA device memory: `address` is a `CUdeviceptr`.
    Cuda = 1,
}

/// A tensor seen through a lease, wherever it lives: for hosts that run
/// their own kernels on the model's memory (see `mm_lease_tensor_on_device`).
/// Every pointer and address in it is owned by the lease and valid until
/// `mm_lease_release`; the data is read-only. The load's copies and
/// conversions are complete before the model is Ready: a host's kernels
/// need no synchronisation with them, on any stream. They must have
/// finished before the lease is released (the manager may free the memory
/// then, on a stream of its own).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct mm_device_tensor {
    /// As in `mm_tensor`.
    pub name: *const c_char,
    /// The element type.
    pub dtype: mm_dtype,
    /// Number of dimensions (0 for a scalar).
    pub rank: usize,
    /// `rank` dimensions, outermost first.
    pub shape: *const usize,
    /// Where the data is.
    pub kind: mm_device_kind,
    /// The device's ordinal (`N` of `"cuda:N"`); 0 on the CPU.
    pub ordinal: u32,
    /// The first element, contiguous, row-major: a host pointer on the
    /// CPU, a `CUdeviceptr` on CUDA.
    pub address: u64,
    /// Size of the data in bytes (elements × dtype size).
    pub data_len: usize,
}
