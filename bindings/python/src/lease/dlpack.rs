//! DLPack 1.1's C structs, and the capsules a tensor is exported in: their
//! destructors free the export (and so release what it holds) exactly once,
//! whichever of the consumer or Python frees it.

use std::ffi::{c_void, CStr};
use std::sync::Arc;

use model_manager::candle_core::{CpuStorage, DType, Storage, Tensor as CandleTensor};
use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;

use super::held::Held;

/// DLPack's C structs (dlpack.h, version 1.1).
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct DLDevice {
    pub(super) device_type: i32,
    pub(super) device_id: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct DLDataType {
    pub(super) code: u8,
    pub(super) bits: u8,
    pub(super) lanes: u16,
}

#[repr(C)]
pub(super) struct DLTensor {
    pub(super) data: *mut c_void,
    pub(super) device: DLDevice,
    pub(super) ndim: i32,
    pub(super) dtype: DLDataType,
    pub(super) shape: *mut i64,
    pub(super) strides: *mut i64,
    pub(super) byte_offset: u64,
}

#[repr(C)]
pub(super) struct DLManagedTensor {
    pub(super) dl_tensor: DLTensor,
    pub(super) manager_ctx: *mut c_void,
    pub(super) deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

#[repr(C)]
pub(super) struct DLPackVersion {
    pub(super) major: u32,
    pub(super) minor: u32,
}

#[repr(C)]
pub(super) struct DLManagedTensorVersioned {
    pub(super) version: DLPackVersion,
    pub(super) manager_ctx: *mut c_void,
    pub(super) deleter: Option<unsafe extern "C" fn(*mut DLManagedTensorVersioned)>,
    pub(super) flags: u64,
    pub(super) dl_tensor: DLTensor,
}

pub(super) const DL_CPU: i32 = 1;
pub(super) const DL_INT: u8 = 0;
pub(super) const DL_UINT: u8 = 1;
pub(super) const DL_FLOAT: u8 = 2;
pub(super) const DL_BFLOAT: u8 = 4;
pub(super) const FLAG_READ_ONLY: u64 = 1;
pub(super) const FLAG_IS_COPIED: u64 = 1 << 1;

pub(super) const NAME_LEGACY: &CStr = c"dltensor";
pub(super) const NAME_VERSIONED: &CStr = c"dltensor_versioned";

/// What an exported tensor keeps alive: the lease (or a copy's bytes), and
/// the shape and strides the DLTensor points to.
pub(super) struct Context {
    pub(super) _held: Option<Arc<Held>>,
    pub(super) _copy: Option<Vec<u64>>,
    pub(super) shape: Vec<i64>,
    pub(super) strides: Vec<i64>,
}

pub(super) unsafe extern "C" fn delete_legacy(managed: *mut DLManagedTensor) {
    if managed.is_null() {
        return;
    }
    // SAFETY: made by `Box::into_raw` in `export`, deleted once (by the
    // consumer, or by the capsule's destructor if never consumed).
    let managed = unsafe { Box::from_raw(managed) };
    // SAFETY: `manager_ctx` is the `Box<Context>` made with it.
    drop(unsafe { Box::from_raw(managed.manager_ctx.cast::<Context>()) });
}

pub(super) unsafe extern "C" fn delete_versioned(managed: *mut DLManagedTensorVersioned) {
    if managed.is_null() {
        return;
    }
    // SAFETY: as in `delete_legacy`.
    let managed = unsafe { Box::from_raw(managed) };
    // SAFETY: as in `delete_legacy`.
    drop(unsafe { Box::from_raw(managed.manager_ctx.cast::<Context>()) });
}

/// A capsule never consumed deletes its tensor; a consumed one was renamed
/// (`used_dltensor...`) and belongs to its consumer.
pub(super) unsafe extern "C" fn capsule_legacy(capsule: *mut pyo3::ffi::PyObject) {
    // SAFETY: called by Python with our capsule.
    unsafe {
        // A consumed capsule was renamed: checked without raising (an
        // exception may be pending while capsules are freed).
        if pyo3::ffi::PyCapsule_IsValid(capsule, NAME_LEGACY.as_ptr()) == 1 {
            let ptr = pyo3::ffi::PyCapsule_GetPointer(capsule, NAME_LEGACY.as_ptr());
            delete_legacy(ptr.cast());
        }
    }
}

pub(super) unsafe extern "C" fn capsule_versioned(capsule: *mut pyo3::ffi::PyObject) {
    // SAFETY: called by Python with our capsule.
    unsafe {
        // A consumed capsule was renamed: checked without raising (an
        // exception may be pending while capsules are freed).
        if pyo3::ffi::PyCapsule_IsValid(capsule, NAME_VERSIONED.as_ptr()) == 1 {
            let ptr = pyo3::ffi::PyCapsule_GetPointer(capsule, NAME_VERSIONED.as_ptr());
            delete_versioned(ptr.cast());
        }
    }
}

/// The DLPack dtype of a candle dtype (or of its bits).
pub(super) fn dl_dtype(dtype: DType, bits: bool) -> PyResult<DLDataType> {
    let width = (dtype.size_in_bytes() * 8) as u8;
    let code = if bits {
        DL_UINT
    } else {
        match dtype {
            DType::U8 | DType::U32 => DL_UINT,
            DType::I16 | DType::I32 | DType::I64 => DL_INT,
            DType::BF16 => DL_BFLOAT,
            DType::F16 | DType::F32 | DType::F64 => DL_FLOAT,
            other => {
                return Err(PyBufferError::new_err(format!(
                    "dtype {other:?} has no DLPack equivalent; use .bits()"
                )))
            }
        }
    };
    Ok(DLDataType {
        code,
        bits: width,
        lanes: 1,
    })
}

/// The bytes of a contiguous CPU tensor.
pub(super) fn host_bytes(t: &CandleTensor) -> PyResult<(*const u8, usize)> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Err(PyBufferError::new_err(format!(
            "the tensor is on {:?}; this build exports host memory only",
            t.device().location()
        )));
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Err(PyBufferError::new_err("the tensor is not contiguous"));
    };
    macro_rules! slice {
        ($v:expr) => {{
            let elems = $v
                .get(start..end)
                .ok_or_else(|| PyBufferError::new_err("tensor layout outside its storage"))?;
            (elems.as_ptr().cast::<u8>(), std::mem::size_of_val(elems))
        }};
    }
    let out = match cpu {
        CpuStorage::U8(v) => slice!(v),
        CpuStorage::U32(v) => slice!(v),
        CpuStorage::I16(v) => slice!(v),
        CpuStorage::I32(v) => slice!(v),
        CpuStorage::I64(v) => slice!(v),
        CpuStorage::BF16(v) => slice!(v),
        CpuStorage::F16(v) => slice!(v),
        CpuStorage::F32(v) => slice!(v),
        CpuStorage::F64(v) => slice!(v),
        CpuStorage::F8E4M3(v) => slice!(v),
        _ => {
            return Err(PyBufferError::new_err(format!(
                "dtype {:?} cannot be exported",
                t.dtype()
            )))
        }
    };
    // The pointer outlives the read guard: candle never writes to or moves
    // the buffer of a loaded tensor, and the lease keeps the storage alive.
    Ok(out)
}
