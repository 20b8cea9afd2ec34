//! `Tensor`: one tensor of a lease, exported through DLPack without a copy.

use std::ffi::c_void;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use model_manager::candle_core::{DType, Device, DeviceLocation};
use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use super::dlpack::{
    capsule_legacy, capsule_versioned, delete_legacy, delete_versioned, dl_device, dl_dtype,
    located, Context, DLManagedTensor, DLManagedTensorVersioned, DLPackVersion, DLTensor, DL_CPU,
    FLAG_IS_COPIED, FLAG_READ_ONLY, NAME_LEGACY, NAME_VERSIONED,
};
use super::held::{tensor, Cell};

/// One tensor of a lease. `numpy.from_dlpack(t)` and `torch.from_dlpack(t)`
/// share its memory; it holds nothing itself and fails once the lease is
/// released.
#[pyclass(frozen, module = "model_manager._model_manager")]
pub struct Tensor {
    cell: Arc<Cell>,
    component: String,
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    location: DeviceLocation,
    /// Export as unsigned integers of the element's width.
    bits: bool,
}

impl Tensor {
    /// Tensor `name` of `component` of the lease in `cell`.
    pub(super) fn new(
        cell: Arc<Cell>,
        component: &str,
        name: &str,
        dtype: DType,
        shape: Vec<usize>,
        location: DeviceLocation,
    ) -> Self {
        Tensor {
            cell,
            component: component.to_owned(),
            name: name.to_owned(),
            dtype,
            shape,
            location,
            bits: false,
        }
    }
}

impl Tensor {
    /// The DLPack capsule of this tensor, or of a copy of it on `target`
    /// (a copy when `copy` is true, or when `target` is not the tensor's
    /// device and `copy` is not false).
    fn export(
        &self,
        py: Python<'_>,
        versioned: bool,
        target: Option<(i32, i32)>,
        copy: Option<bool>,
    ) -> PyResult<PyObject> {
        let held = self.cell.get()?;
        let source = tensor(&held, &self.component, &self.name)?;
        let own = dl_device(source.device().location())?;
        let own = (own.device_type, own.device_id);
        let elsewhere = target.is_some_and(|t| t != own);
        let copied = if elsewhere {
            if copy == Some(false) {
                return Err(PyBufferError::new_err(format!(
                    "the tensor is on DLPack device {own:?}, not {target:?}, and copy=False"
                )));
            }
            if target != Some((DL_CPU, 0)) {
                return Err(PyBufferError::new_err(format!(
                    "a tensor on DLPack device {own:?} can be copied to the host (1, 0) only"
                )));
            }
            Some(source.to_device(&Device::Cpu).map_err(buffer_error)?)
        } else if copy == Some(true) {
            let copied = source.copy().map_err(buffer_error)?;
            // The copy runs on the manager's stream: complete before any
            // consumer's stream reads it.
            copied.device().synchronize().map_err(buffer_error)?;
            Some(copied)
        } else {
            None
        };
        let exported = copied.as_ref().unwrap_or(source);
        let data = located(exported)?;
        let device = dl_device(data.location)?;
        let dtype = dl_dtype(self.dtype, self.bits)?;
        let shape: Vec<i64> = self.shape.iter().map(|&d| d as i64).collect();
        let mut strides = vec![1i64; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * shape[i + 1].max(1);
        }
        let is_copy = copied.is_some();
        if !is_copy && !source.device().is_cpu() {
            held.device_exported.store(true, Ordering::SeqCst);
        }
        let mut ctx = Box::new(Context {
            _held: (!is_copy).then(|| held.clone()),
            copy: copied,
            shape,
            strides,
        });
        let dl_tensor = DLTensor {
            data: data.address as *mut c_void,
            device,
            ndim: ctx.shape.len() as i32,
            dtype,
            shape: ctx.shape.as_mut_ptr(),
            strides: ctx.strides.as_mut_ptr(),
            byte_offset: 0,
        };
        let ctx = Box::into_raw(ctx).cast::<c_void>();
        // SAFETY: each pointer is a fresh box handed to the capsule, which
        // deletes it unless a consumer takes it (and then deletes it).
        unsafe {
            let capsule = if versioned {
                let managed = Box::into_raw(Box::new(DLManagedTensorVersioned {
                    version: DLPackVersion { major: 1, minor: 1 },
                    manager_ctx: ctx,
                    deleter: Some(delete_versioned),
                    flags: if is_copy {
                        FLAG_IS_COPIED
                    } else {
                        FLAG_READ_ONLY
                    },
                    dl_tensor,
                }));
                let capsule = pyo3::ffi::PyCapsule_New(
                    managed.cast(),
                    NAME_VERSIONED.as_ptr(),
                    Some(capsule_versioned),
                );
                if capsule.is_null() {
                    delete_versioned(managed);
                }
                capsule
            } else {
                let managed = Box::into_raw(Box::new(DLManagedTensor {
                    dl_tensor,
                    manager_ctx: ctx,
                    deleter: Some(delete_legacy),
                }));
                let capsule = pyo3::ffi::PyCapsule_New(
                    managed.cast(),
                    NAME_LEGACY.as_ptr(),
                    Some(capsule_legacy),
                );
                if capsule.is_null() {
                    delete_legacy(managed);
                }
                capsule
            };
            Bound::from_owned_ptr_or_err(py, capsule).map(Bound::unbind)
        }
    }
}

fn buffer_error(e: model_manager::candle_core::Error) -> PyErr {
    PyBufferError::new_err(e.to_string())
}

#[pymethods]
impl Tensor {
    /// The DLPack capsule. With `max_version` of 1 or more, a versioned
    /// capsule flagged read-only (the manager's memory); else the legacy
    /// capsule. `dl_device` other than the tensor's own: a copy to the host
    /// (`(1, 0)`), unless `copy=False`. `copy=True`: a copy on the tensor's
    /// device. On a CUDA device the data is complete before the model is
    /// ready (and a copy before it is returned), so `stream` needs no
    /// ordering; the memory is freed only after the device's pending work
    /// once the last consumer lets go of it.
    #[pyo3(signature = (*, stream=None, max_version=None, dl_device=None, copy=None))]
    fn __dlpack__(
        &self,
        py: Python<'_>,
        stream: Option<Bound<'_, PyAny>>,
        max_version: Option<(u32, u32)>,
        dl_device: Option<(i32, i32)>,
        copy: Option<bool>,
    ) -> PyResult<PyObject> {
        let _ = stream;
        let versioned = max_version.is_some_and(|(major, _)| major >= 1);
        self.export(py, versioned, dl_device, copy)
    }

    fn __dlpack_device__(&self) -> PyResult<(i32, i32)> {
        let device = dl_device(self.location)?;
        Ok((device.device_type, device.device_id))
    }

    /// The same memory seen as unsigned integers of the element's width
    /// (bf16 as uint16): for consumers without the dtype (numpy has no
    /// bfloat16).
    fn bits(&self) -> Tensor {
        Tensor {
            cell: self.cell.clone(),
            component: self.component.clone(),
            name: self.name.clone(),
            dtype: self.dtype,
            shape: self.shape.clone(),
            location: self.location,
            bits: true,
        }
    }

    /// The dtype's name as candle spells it (`"f32"`, `"bf16"`, ...), or
    /// its bits' (`"u16"`) for `bits()`.
    #[getter]
    fn dtype(&self) -> String {
        if self.bits {
            match self.dtype.size_in_bytes() {
                1 => "u8".into(),
                2 => "u16".into(),
                4 => "u32".into(),
                _ => "u64".into(),
            }
        } else {
            self.dtype.as_str().to_owned()
        }
    }

    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.shape)
    }

    #[getter]
    fn nbytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size_in_bytes()
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    #[getter]
    fn component(&self) -> &str {
        &self.component
    }

    /// The address of the first element in the manager's memory (a
    /// device address for a tensor on a GPU).
    #[getter]
    fn data_ptr(&self) -> PyResult<usize> {
        let held = self.cell.get()?;
        let data = located(tensor(&held, &self.component, &self.name)?)?;
        usize::try_from(data.address).map_err(|_| PyBufferError::new_err("address out of range"))
    }

    /// `"cpu"`, or `"cuda:N"` for a tensor on a CUDA device.
    #[getter]
    fn device(&self) -> String {
        match self.location {
            DeviceLocation::Cpu => "cpu".into(),
            DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            other => format!("{other:?}").to_lowercase(),
        }
    }

    /// The element values as a flat list of Python numbers (a copy; for
    /// small tensors and checks).
    fn tolist<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let held = self.cell.get()?;
        let t = tensor(&held, &self.component, &self.name)?
            .flatten_all()
            .and_then(|t| t.to_dtype(DType::F64))
            .and_then(|t| t.to_vec1::<f64>())
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        PyList::new(py, t)
    }

    fn __repr__(&self) -> String {
        format!(
            "Tensor({}/{}, dtype={}, shape={:?})",
            self.component,
            self.name,
            self.dtype(),
            self.shape
        )
    }
}
