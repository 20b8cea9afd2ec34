//! Leases and their tensors, exported through DLPack without a copy.
//!
//! A `Lease` holds the core's lease until `release()` (or the end of its
//! `with` block). Each tensor exported from it (`__dlpack__`) holds the
//! lease too, until the consumer frees it: an unload waits for every array
//! that shares the model's memory. A `Tensor` object itself holds no
//! memory: it names a tensor of the lease and fails once the lease is
//! released.

use std::sync::{Arc, Mutex, PoisonError};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::convert::json_opt;

mod dlpack;
mod held;
mod tensor;

pub use self::held::Held;
use self::held::{component, tensor, Cell, HeldLease};
pub use self::tensor::Tensor;

/// A lease on the ready model: it stays loaded until the lease (and every
/// array exported from it) is released.
#[pyclass(frozen, module = "model_manager._model_manager")]
pub struct Lease {
    cell: Arc<Cell>,
    id: Option<String>,
    version: Option<u64>,
    working_bytes: u64,
}

/// A lease taken in the background (a pool's acquire) becomes a Python
/// `Lease` once the GIL is held.
impl crate::rt::ToPython for Held {
    fn to_python(self: Box<Self>, py: Python<'_>) -> PyResult<PyObject> {
        Ok(Py::new(py, Lease::new(*self))?.into_any())
    }
}

impl Lease {
    pub fn new(held: Held) -> Self {
        let (id, version, working_bytes) = match &*held.lease {
            HeldLease::Manager(_) => (None, None, 0),
            HeldLease::Pool(lease) => (
                Some(lease.id().to_owned()),
                Some(lease.version()),
                lease.working_bytes(),
            ),
        };
        Lease {
            cell: Arc::new(Cell {
                held: Mutex::new(Some(Arc::new(held))),
            }),
            id,
            version,
            working_bytes,
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
        Ok(Tensor::new(
            self.cell.clone(),
            component,
            name,
            t.dtype(),
            t.dims().to_vec(),
            t.device().location(),
        ))
    }

    /// `{name: torch.Tensor}` for a component, sharing the lease's memory
    /// (`torch.from_dlpack` of every tensor); for `load_state_dict(...,
    /// assign=True)`. Needs torch. torch has no read-only tensors: an
    /// in-place operation on them writes the model every lease shares.
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

    /// Working memory reserved with this lease (a pool's
    /// `acquire(..., working_bytes=...)`), charged until it is released.
    #[getter]
    fn working_bytes(&self) -> u64 {
        self.working_bytes
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
