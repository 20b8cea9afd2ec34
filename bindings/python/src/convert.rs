//! The core's values as plain Python values (dicts, lists, numbers,
//! strings); the package turns them into its dataclasses and enums.

use std::sync::Arc;
use std::time::Duration;

use model_manager::{
    ModelSource, ModelStatus, PoolEvent, PoolEventKind, PoolSnapshot, Progress, Snapshot,
    StateEvent, UnloadReason,
};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyList, PyString};
use serde_json::Value;

use crate::errors::exception;

/// A JSON value as Python's `json.loads` would give it.
pub fn json<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, json(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

/// `Option<&Value>` as JSON or `None`.
pub fn json_opt<'py>(py: Python<'py>, value: Option<&Value>) -> PyResult<Bound<'py, PyAny>> {
    match value {
        Some(v) => json(py, v),
        None => Ok(py.None().into_bound(py)),
    }
}

pub fn progress<'py>(py: Python<'py>, p: &Progress) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("bytes_done", p.bytes_done)?;
    d.set_item("bytes_total", p.bytes_total)?;
    d.set_item("tensors_done", p.tensors_done)?;
    d.set_item("tensors_total", p.tensors_total)?;
    d.set_item("current", p.current.as_deref())?;
    Ok(d)
}

pub fn snapshot<'py>(py: Python<'py>, s: &Snapshot) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("state", s.state.name())?;
    d.set_item("generation", s.generation)?;
    d.set_item("model", s.model.as_ref().map(|m| m.to_string()))?;
    d.set_item("progress", progress(py, &s.progress)?)?;
    match &s.error {
        Some(err) => d.set_item("error", exception(py, err)?)?,
        None => d.set_item("error", py.None())?,
    }
    d.set_item("resident_bytes", s.resident_bytes)?;
    d.set_item("unreclaimed_bytes", s.unreclaimed_bytes)?;
    Ok(d)
}

pub fn state_event<'py>(
    py: Python<'py>,
    e: &StateEvent,
    missed: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("from_state", e.from.name())?;
    d.set_item("to_state", e.to.name())?;
    d.set_item("command", e.command.name())?;
    d.set_item("snapshot", snapshot(py, &e.snapshot)?)?;
    d.set_item("missed", missed)?;
    Ok(d)
}

fn secs(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}

pub fn model_status<'py>(py: Python<'py>, m: &ModelStatus) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", &m.id)?;
    d.set_item("state", m.state.name())?;
    d.set_item("version", m.version)?;
    d.set_item("loading_version", m.loading_version)?;
    d.set_item("source", m.source.to_string())?;
    d.set_item("charged_bytes", m.charged_bytes)?;
    d.set_item("resident_bytes", m.resident_bytes)?;
    d.set_item("leases", m.leases)?;
    d.set_item("waiters", m.waiters)?;
    d.set_item("idle_for", secs(m.idle_for))?;
    d.set_item("keep_alive", secs(m.keep_alive))?;
    d.set_item("expires_in", secs(m.expires_in))?;
    d.set_item("pinned", m.pinned)?;
    d.set_item("parked", m.parked)?;
    d.set_item("parked_bytes", m.parked_bytes)?;
    match &m.last_error {
        Some(err) => d.set_item("last_error", exception(py, err)?)?,
        None => d.set_item("last_error", py.None())?,
    }
    Ok(d)
}

pub fn pool_snapshot<'py>(py: Python<'py>, s: &PoolSnapshot) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("budget", s.budget)?;
    d.set_item("charged", s.charged)?;
    d.set_item("queued", s.queued.clone())?;
    d.set_item("unreclaimed_bytes", s.unreclaimed_bytes)?;
    d.set_item("retained_bytes", s.retained_bytes)?;
    d.set_item("host_budget", s.host_budget)?;
    d.set_item("parked", s.parked)?;
    let models = PyList::empty(py);
    for m in &s.models {
        models.append(model_status(py, m)?)?;
    }
    d.set_item("models", models)?;
    let c = PyDict::new(py);
    c.set_item("loads", s.counters.loads)?;
    c.set_item("hits", s.counters.hits)?;
    c.set_item("misses", s.counters.misses)?;
    c.set_item("evictions", s.counters.evictions)?;
    c.set_item("expirations", s.counters.expirations)?;
    c.set_item("parks", s.counters.parks)?;
    c.set_item("resumes", s.counters.resumes)?;
    c.set_item("failures", s.counters.failures)?;
    d.set_item("counters", c)?;
    Ok(d)
}

pub fn pool_event<'py>(
    py: Python<'py>,
    e: &PoolEvent,
    missed: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", &e.id)?;
    d.set_item("version", e.version)?;
    d.set_item("kind", e.kind.name())?;
    d.set_item("bytes", py.None())?;
    d.set_item("error", py.None())?;
    d.set_item("reason", py.None())?;
    d.set_item("for_id", py.None())?;
    match &e.kind {
        PoolEventKind::Loading { charged } => d.set_item("bytes", charged)?,
        PoolEventKind::Ready { bytes }
        | PoolEventKind::Freed { bytes }
        | PoolEventKind::Parked { bytes }
        | PoolEventKind::Unparked { bytes } => d.set_item("bytes", bytes)?,
        PoolEventKind::Failed { error } => d.set_item("error", exception(py, error)?)?,
        PoolEventKind::Unloading { reason } => {
            d.set_item("reason", reason.name())?;
            if let UnloadReason::Evicted { for_id } = reason {
                d.set_item("for_id", for_id)?;
            }
        }
        _ => {}
    }
    d.set_item("missed", missed)?;
    Ok(d)
}

/// A hub cache entry, resolved offline: `Hub("org/name", revision=None)`.
#[pyclass(frozen, module = "model_manager._model_manager")]
pub struct Hub {
    #[pyo3(get)]
    repo: String,
    #[pyo3(get)]
    revision: Option<String>,
}

#[pymethods]
impl Hub {
    #[new]
    #[pyo3(signature = (repo, revision=None))]
    fn new(repo: String, revision: Option<String>) -> Self {
        Hub { repo, revision }
    }

    fn __repr__(&self) -> String {
        match &self.revision {
            Some(r) => format!("Hub({:?}, revision={:?})", self.repo, r),
            None => format!("Hub({:?})", self.repo),
        }
    }
}

/// What to load, from what Python gives: a `Hub`, bytes (one safetensors
/// file), a dict of relative names to bytes (a folder in memory), an
/// `os.PathLike` (a path), or a string (an existing path, else a hub repo
/// id `org/name[@rev]`, else a path that the load reports missing).
pub fn source(value: &Bound<'_, PyAny>) -> PyResult<ModelSource> {
    if let Ok(hub) = value.downcast::<Hub>() {
        let hub = hub.get();
        return Ok(match &hub.revision {
            Some(r) => ModelSource::hub_revision(hub.repo.clone(), r.clone()),
            None => ModelSource::hub(hub.repo.clone()),
        });
    }
    if let Ok(bytes) = value.downcast::<PyBytes>() {
        return Ok(ModelSource::bytes(Arc::<[u8]>::from(bytes.as_bytes())));
    }
    if let Ok(bytes) = value.downcast::<PyByteArray>() {
        return Ok(ModelSource::bytes(Arc::<[u8]>::from(bytes.to_vec())));
    }
    if let Ok(files) = value.downcast::<PyDict>() {
        let mut list: Vec<(String, Arc<[u8]>)> = Vec::with_capacity(files.len());
        for (k, v) in files.iter() {
            let name: String = k.extract()?;
            let data: Vec<u8> = if let Ok(b) = v.downcast::<PyBytes>() {
                b.as_bytes().to_vec()
            } else if let Ok(b) = v.downcast::<PyByteArray>() {
                b.to_vec()
            } else {
                return Err(PyTypeError::new_err(format!(
                    "file {name:?}: contents must be bytes"
                )));
            };
            list.push((name, Arc::from(data)));
        }
        return Ok(ModelSource::files(list));
    }
    if let Ok(s) = value.downcast::<PyString>() {
        return Ok(ModelSource::guess(s.to_str()?));
    }
    if value.hasattr("__fspath__")? {
        let path: std::path::PathBuf = value.extract()?;
        return Ok(ModelSource::path(path));
    }
    Err(PyTypeError::new_err(format!(
        "cannot load a {}: give a path, a hub repo id, Hub(...), bytes, or a dict of file names to bytes",
        value.get_type().name()?
    )))
}
