//! Leases and their tensors, exported through DLPack without a copy.
//!
//! A `Lease` holds the core's lease until `release()` (or the end of its
//! `with` block). Each tensor exported from it (`__dlpack__`) holds the
//! lease too, until the consumer frees it: an unload waits for every array
//! that shares the model's memory. A `Tensor` object itself holds no
//! memory: it names a tensor of the lease and fails once the lease is
//! released.

use std::ffi::{c_void, CStr};
use std::sync::{Arc, Mutex, PoisonError};

use model_manager::candle_core::{CpuStorage, DType, Storage, Tensor as CandleTensor};
use model_manager::{Component, Lease as CoreLease, PoolLease, TensorPipeline};
use pyo3::exceptions::{PyBufferError, PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::convert::json_opt;

/// What a lease holds: a manager's lease or a pool's.
pub enum Held {
    Manager(CoreLease),
    Pool(PoolLease),
}

impl Held {
    fn pipeline(&self) -> &TensorPipeline {
        match self {
            Held::Manager(lease) => lease.pipeline(),
            Held::Pool(lease) => lease.pipeline(),
        }
    }
}

/// The lease, until released; shared with the lease's `Tensor` objects.
struct Cell {
    held: Mutex<Option<Arc<Held>>>,
}

impl Cell {
    fn get(&self) -> PyResult<Arc<Held>> {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| PyValueError::new_err("the lease has been released"))
    }
}

fn component<'a>(held: &'a Held, name: &str) -> PyResult<&'a Component> {
    held.pipeline().component(name).ok_or_else(|| {
        let names: Vec<&str> = held
            .pipeline()
            .components()
            .iter()
            .map(Component::name)
            .collect();
        PyKeyError::new_err(format!("no component {name:?} (components: {names:?})"))
    })
}

fn tensor<'a>(held: &'a Held, comp: &str, name: &str) -> PyResult<&'a CandleTensor> {
    component(held, comp)?
        .tensor(name)
        .ok_or_else(|| PyKeyError::new_err(format!("no tensor {name:?} in component {comp:?}")))
}

/// A lease on the ready model: it stays loaded until the lease (and every
/// array exported from it) is released.
#[pyclass(frozen, module = "model_manager._model_manager")]
pub struct Lease {
    cell: Arc<Cell>,
    id: Option<String>,
    version: Option<u64>,
}

impl Lease {
    pub fn new(held: Held) -> Self {
        let (id, version) = match &held {
            Held::Manager(_) => (None, None),
            Held::Pool(lease) => (Some(lease.id().to_owned()), Some(lease.version())),
        };
        Lease {
            cell: Arc::new(Cell {
                held: Mutex::new(Some(Arc::new(held))),
            }),
            id,
            version,
        }
    }
}

#[pymethods]
impl Lease {
    /// The components' names, in load order (`"model"` for a single model).
    fn components(&self) -> PyResult<Vec<String>> {
        let held = self.cell.get()?;
        Ok(held
            .pipeline()
            .components()
            .iter()
            .map(|c| c.name().to_owned())
            .collect())
    }

    /// The tensors' names in a component, sorted.
    fn keys(&self, component: &str) -> PyResult<Vec<String>> {
        let held = self.cell.get()?;
        let c = self::component(&held, component)?;
        Ok(c.tensors().map(|(n, _)| n.to_owned()).collect())
    }

    /// A component's parsed `config.json` (`None` without one).
    fn config<'py>(&self, py: Python<'py>, component: &str) -> PyResult<Bound<'py, PyAny>> {
        let held = self.cell.get()?;
        json_opt(py, self::component(&held, component)?.config())
    }

    /// The pipeline's top-level config (`config.json` or `model_index.json`).
    fn pipeline_config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let held = self.cell.get()?;
        json_opt(py, held.pipeline().info().config.as_ref())
    }

    /// A tensor of a component, exportable through DLPack.
    fn tensor(&self, component: &str, name: &str) -> PyResult<Tensor> {
        let held = self.cell.get()?;
        let t = tensor(&held, component, name)?;
        Ok(Tensor {
            cell: self.cell.clone(),
            component: component.to_owned(),
            name: name.to_owned(),
            dtype: t.dtype(),
            shape: t.dims().to_vec(),
            bits: false,
        })
    }

    /// `{name: torch.Tensor}` for a component, sharing the lease's memory
    /// (`torch.from_dlpack` of every tensor); for `load_state_dict(...,
    /// assign=True)`. Needs torch.
    fn state_dict<'py>(&self, py: Python<'py>, component: &str) -> PyResult<Bound<'py, PyDict>> {
        let from_dlpack = py.import("torch")?.getattr("from_dlpack")?;
        let out = PyDict::new(py);
        for name in self.keys(component)? {
            let t = Bound::new(py, self.tensor(component, &name)?)?;
            out.set_item(&name, from_dlpack.call1((t,))?)?;
        }
        Ok(out)
    }

    /// Release the lease now (the arrays exported from it keep it until
    /// they are freed). Idempotent.
    fn release(&self) {
        let held = self
            .cell
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(held);
    }

    /// Whether `release()` has been called.
    #[getter]
    fn released(&self) -> bool {
        self.cell
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }

    /// For a pool's lease, the model's id (`None` for a manager's).
    #[getter]
    fn id(&self) -> Option<String> {
        self.id.clone()
    }

    /// For a pool's lease, the version it holds (`None` for a manager's).
    #[getter]
    fn version(&self) -> Option<u64> {
        self.version
    }

    /// Number of tensors in every component.
    fn tensor_count(&self) -> PyResult<usize> {
        Ok(self.cell.get()?.pipeline().tensor_count())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) {
        self.release();
    }
}

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
    /// Export as unsigned integers of the element's width.
    bits: bool,
}

/// DLPack's C structs (dlpack.h, version 1.1).
#[repr(C)]
#[derive(Clone, Copy)]
struct DLDevice {
    device_type: i32,
    device_id: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct DLDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

#[repr(C)]
struct DLTensor {
    data: *mut c_void,
    device: DLDevice,
    ndim: i32,
    dtype: DLDataType,
    shape: *mut i64,
    strides: *mut i64,
    byte_offset: u64,
}

#[repr(C)]
struct DLManagedTensor {
    dl_tensor: DLTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

#[repr(C)]
struct DLPackVersion {
    major: u32,
    minor: u32,
}

#[repr(C)]
struct DLManagedTensorVersioned {
    version: DLPackVersion,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensorVersioned)>,
    flags: u64,
    dl_tensor: DLTensor,
}

const DL_CPU: i32 = 1;
const DL_INT: u8 = 0;
const DL_UINT: u8 = 1;
const DL_FLOAT: u8 = 2;
const DL_BFLOAT: u8 = 4;
const FLAG_READ_ONLY: u64 = 1;
const FLAG_IS_COPIED: u64 = 1 << 1;

const NAME_LEGACY: &CStr = c"dltensor";
const NAME_VERSIONED: &CStr = c"dltensor_versioned";

/// What an exported tensor keeps alive: the lease (or a copy's bytes), and
/// the shape and strides the DLTensor points to.
struct Context {
    _held: Option<Arc<Held>>,
    _copy: Option<Vec<u64>>,
    shape: Vec<i64>,
    strides: Vec<i64>,
}

unsafe extern "C" fn delete_legacy(managed: *mut DLManagedTensor) {
    if managed.is_null() {
        return;
    }
    // SAFETY: made by `Box::into_raw` in `export`, deleted once (by the
    // consumer, or by the capsule's destructor if never consumed).
    let managed = unsafe { Box::from_raw(managed) };
    // SAFETY: `manager_ctx` is the `Box<Context>` made with it.
    drop(unsafe { Box::from_raw(managed.manager_ctx.cast::<Context>()) });
}

unsafe extern "C" fn delete_versioned(managed: *mut DLManagedTensorVersioned) {
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
unsafe extern "C" fn capsule_legacy(capsule: *mut pyo3::ffi::PyObject) {
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

unsafe extern "C" fn capsule_versioned(capsule: *mut pyo3::ffi::PyObject) {
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
fn dl_dtype(dtype: DType, bits: bool) -> PyResult<DLDataType> {
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
fn host_bytes(t: &CandleTensor) -> PyResult<(*const u8, usize)> {
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

impl Tensor {
    fn located(&self) -> PyResult<(Arc<Held>, *const u8, usize)> {
        let held = self.cell.get()?;
        let (ptr, len) = host_bytes(tensor(&held, &self.component, &self.name)?)?;
        Ok((held, ptr, len))
    }

    fn export(&self, py: Python<'_>, versioned: bool, copy: bool) -> PyResult<PyObject> {
        let (held, ptr, len) = self.located()?;
        let dtype = dl_dtype(self.dtype, self.bits)?;
        let shape: Vec<i64> = self.shape.iter().map(|&d| d as i64).collect();
        let mut strides = vec![1i64; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * shape[i + 1].max(1);
        }
        let (data, held, copied) = if copy {
            let mut buf = vec![0u64; len.div_ceil(8)];
            // SAFETY: `ptr` is valid for `len` bytes while `held` lives; the
            // buffer holds at least `len` bytes.
            unsafe { std::ptr::copy_nonoverlapping(ptr, buf.as_mut_ptr().cast::<u8>(), len) };
            drop(held);
            (buf.as_mut_ptr().cast::<c_void>(), None, Some(buf))
        } else {
            (ptr as *mut c_void, Some(held), None)
        };
        let mut ctx = Box::new(Context {
            _held: held,
            _copy: copied,
            shape,
            strides,
        });
        let dl_tensor = DLTensor {
            data,
            device: DLDevice {
                device_type: DL_CPU,
                device_id: 0,
            },
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
                    flags: if copy { FLAG_IS_COPIED } else { FLAG_READ_ONLY },
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

#[pymethods]
impl Tensor {
    /// The DLPack capsule. With `max_version` of 1 or more, a versioned
    /// capsule flagged read-only (the manager's memory); else the legacy
    /// capsule. `copy=True` exports a copy; `dl_device` must be this
    /// tensor's device.
    #[pyo3(signature = (*, stream=None, max_version=None, dl_device=None, copy=None))]
    fn __dlpack__(
        &self,
        py: Python<'_>,
        stream: Option<Bound<'_, PyAny>>,
        max_version: Option<(u32, u32)>,
        dl_device: Option<(i32, i32)>,
        copy: Option<bool>,
    ) -> PyResult<PyObject> {
        // Host memory: there is no stream to synchronize with.
        let _ = stream;
        if let Some(device) = dl_device {
            if device != (DL_CPU, 0) {
                return Err(PyBufferError::new_err(format!(
                    "the tensor is in host memory, not on DLPack device {device:?}"
                )));
            }
        }
        let versioned = max_version.is_some_and(|(major, _)| major >= 1);
        self.export(py, versioned, copy == Some(true))
    }

    fn __dlpack_device__(&self) -> (i32, i32) {
        (DL_CPU, 0)
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

    /// The address of the first element in the manager's memory.
    #[getter]
    fn data_ptr(&self) -> PyResult<usize> {
        Ok(self.located()?.1 as usize)
    }

    #[getter]
    fn device(&self) -> &'static str {
        "cpu"
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
