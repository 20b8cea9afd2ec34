//! DLPack 1.1's C structs, and the capsules a tensor is exported in: their
//! destructors free the export (and so release what it holds) exactly once,
//! whichever of the consumer or Python frees it.

use std::ffi::{c_void, CStr};
use std::sync::Arc;

use model_manager::candle_core::{DType, Device, DeviceLocation, Tensor as CandleTensor};
use model_manager::{tensor_data, TensorData};
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
pub(super) const DL_CUDA: i32 = 2;
pub(super) const DL_INT: u8 = 0;
pub(super) const DL_UINT: u8 = 1;
pub(super) const DL_FLOAT: u8 = 2;
pub(super) const DL_BFLOAT: u8 = 4;
pub(super) const FLAG_READ_ONLY: u64 = 1;
pub(super) const FLAG_IS_COPIED: u64 = 1 << 1;

pub(super) const NAME_LEGACY: &CStr = c"dltensor";
pub(super) const NAME_VERSIONED: &CStr = c"dltensor_versioned";

/// What an exported tensor keeps alive: the lease (or a copy), and the
/// shape and strides the DLTensor points to.
pub(super) struct Context {
    /// The lease, for an export of its memory (whose release synchronizes
    /// the device once, if any of its device memory was exported: `Held`'s
    /// `Drop`).
    pub(super) _held: Option<Arc<Held>>,
    pub(super) copy: Option<CandleTensor>,
    pub(super) shape: Vec<i64>,
    pub(super) strides: Vec<i64>,
}

impl Drop for Context {
    fn drop(&mut self) {
        if let Some(copy) = self.copy.take() {
            // A copy on a GPU may still be read by the consumer's kernels:
            // the device finishes them before its memory goes (off this
            // thread, which may hold the GIL).
            if !copy.device().is_cpu() {
                crate::rt::runtime().spawn_blocking(move || {
                    synchronize(copy.device());
                    drop(copy);
                });
            }
        }
    }
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

/// The DLPack device of a candle device.
pub(super) fn dl_device(location: DeviceLocation) -> PyResult<DLDevice> {
    match location {
        DeviceLocation::Cpu => Ok(DLDevice {
            device_type: DL_CPU,
            device_id: 0,
        }),
        DeviceLocation::Cuda { gpu_id } => Ok(DLDevice {
            device_type: DL_CUDA,
            device_id: i32::try_from(gpu_id)
                .map_err(|_| PyBufferError::new_err("CUDA ordinal out of range"))?,
        }),
        other => Err(PyBufferError::new_err(format!(
            "the tensor is on {other:?}, which has no DLPack export here"
        ))),
    }
}

/// Where a tensor's elements are.
pub(super) fn located(t: &CandleTensor) -> PyResult<TensorData> {
    tensor_data(t).map_err(|e| PyBufferError::new_err(e.to_string()))
}

/// Waits for every stream of a CUDA device to finish: an exported tensor is
/// read on the consumer's streams (torch's), which the manager knows
/// nothing of, so its memory is freed only once their work is done.
#[cfg(feature = "cuda")]
pub(super) fn synchronize(device: &Device) {
    if let Device::Cuda(cuda) = device {
        // A failure here is the device's (a sticky error): nothing to wait
        // for, and a deleter cannot report it.
        let _ = cuda.cuda_stream().context().synchronize();
    }
}

#[cfg(not(feature = "cuda"))]
pub(super) fn synchronize(_device: &Device) {}
