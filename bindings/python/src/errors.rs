//! Errors as Python exceptions: one `ModelManagerError` base and a subclass
//! per code of the core's table (`ErrorCode::ALL`), built when the module is
//! imported, so that no name or number is written twice.

use std::collections::HashMap;
use std::ffi::CString;

use model_manager::{Error, ErrorCode};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyDict, PyList, PyType};

pyo3::create_exception!(
    model_manager,
    ModelManagerError,
    PyException,
    "Base of every model-manager error; `.code` is the core's stable number."
);

/// The subclass of each code, by number.
static CLASSES: GILOnceCell<HashMap<u32, Py<PyType>>> = GILOnceCell::new();

/// Build the subclasses from the core's table; `{number: class}`.
pub fn build_classes(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let base = py.get_type::<ModelManagerError>();
    let mut classes = HashMap::new();
    for code in ErrorCode::ALL {
        let name = CString::new(format!("model_manager.{}", code.name()))
            .map_err(|e| PyErr::new::<PyException, _>(e.to_string()))?;
        let class = PyErr::new_type(py, &name, None, Some(&base), None)?;
        class.bind(py).setattr("code", *code as u32)?;
        classes.insert(*code as u32, class);
    }
    let classes = CLASSES.get_or_init(py, || classes);
    let out = PyDict::new(py);
    for (number, class) in classes {
        out.set_item(number, class.bind(py))?;
    }
    Ok(out)
}

/// The details an error carries beside its message, as a dict.
fn details<'py>(py: Python<'py>, err: &Error) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    match err {
        Error::InvalidTransition { from, event } => {
            d.set_item("state", from.name())?;
            d.set_item("command", event.name())?;
        }
        Error::NotReady(state) => d.set_item("state", state.name())?,
        Error::LeasesOutstanding { count } => d.set_item("count", count)?,
        Error::Io { path, kind, .. } => {
            d.set_item("path", path.to_string_lossy())?;
            d.set_item("kind", format!("{kind:?}"))?;
        }
        Error::InvalidModel { path, .. }
        | Error::InvalidConfig { path, .. }
        | Error::MissingFile { path }
        | Error::NotFound { path, .. }
        | Error::PathEscape { path } => d.set_item("path", path.to_string_lossy())?,
        Error::InsufficientMemory {
            needed,
            available,
            pinned,
        } => {
            d.set_item("needed", needed)?;
            d.set_item("available", available)?;
            d.set_item("pinned", pinned)?;
        }
        Error::UnsupportedDtype {
            path,
            tensor,
            dtype,
        } => {
            d.set_item("path", path.to_string_lossy())?;
            d.set_item("tensor", tensor)?;
            d.set_item("dtype", dtype)?;
        }
        Error::MemoryBusy { needed, blocked_by } => {
            d.set_item("needed", needed)?;
            let list = PyList::empty(py);
            for b in blocked_by {
                let item = PyDict::new(py);
                item.set_item("id", &b.id)?;
                item.set_item("bytes", b.bytes)?;
                item.set_item("leases", b.leases)?;
                item.set_item("state", b.state.name())?;
                list.append(item)?;
            }
            d.set_item("blocked_by", list)?;
        }
        Error::QueueFull { limit } => d.set_item("limit", limit)?,
        Error::UnknownModel(id) => d.set_item("id", id)?,
        _ => {}
    }
    Ok(d)
}

/// The exception instance for `err`.
pub fn exception<'py>(py: Python<'py>, err: &Error) -> PyResult<Bound<'py, PyAny>> {
    let code = err.code() as u32;
    let class = CLASSES
        .get(py)
        .and_then(|classes| classes.get(&code))
        .map(|c| c.bind(py).clone())
        .unwrap_or_else(|| py.get_type::<ModelManagerError>());
    let value = class.call1((err.to_string(),))?;
    value.setattr("code", code)?;
    value.setattr("details", details(py, err)?)?;
    Ok(value)
}

/// `err` as a Python exception to raise.
pub fn to_pyerr(err: Error) -> PyErr {
    Python::with_gil(|py| match exception(py, &err) {
        Ok(value) => PyErr::from_value(value),
        Err(e) => e,
    })
}

/// `Result<T, Error>` to `PyResult<T>`.
pub trait IntoPy<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for Result<T, Error> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_pyerr)
    }
}
