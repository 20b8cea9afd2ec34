//! `Manager`: the core's `ModelManager`, method for method.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use model_manager::candle_core::DType;
use model_manager::{DeviceSpec, Error, ModelManager, PipelineInfo, Snapshot};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::Value;

use crate::convert::{self, json_opt};
use crate::errors::IntoPy;
use crate::events::Events;
use crate::lease::{Held, Lease};
use crate::rt::{call_python, schedule, seconds, Cancel, Outcome, Pending, ToPython};

/// The target dtype from its name (`"f32"`, `"f16"`, `"bf16"`).
pub fn dtype(name: Option<&str>) -> Result<Option<DType>, Error> {
    name.map(|n| {
        DType::from_str(n)
            .map_err(|_| Error::InvalidArgument(format!("unknown dtype {n:?} (f32, f16 or bf16)")))
    })
    .transpose()
}

/// A finished load: its snapshot and what the model holds, read under a
/// momentary lease.
pub struct Loaded {
    snapshot: Snapshot,
    info: Option<PipelineInfo>,
    /// `(name, config, tensors, bytes)` per component.
    components: Vec<(String, Option<Value>, usize, u64)>,
}

impl ToPython for Loaded {
    fn to_python(self: Box<Self>, py: Python<'_>) -> PyResult<PyObject> {
        Ok(self.to_py(py)?.into_any().unbind())
    }
}

impl Loaded {
    fn read(manager: &ModelManager, snapshot: Snapshot) -> Loaded {
        match manager.acquire() {
            Ok(lease) => Loaded {
                snapshot,
                info: Some(lease.info().clone()),
                components: lease
                    .components()
                    .iter()
                    .map(|c| {
                        let bytes = c
                            .tensors()
                            .map(|(_, t)| (t.elem_count() * t.dtype().size_in_bytes()) as u64)
                            .sum();
                        (
                            c.name().to_owned(),
                            c.config().cloned(),
                            c.tensors().count(),
                            bytes,
                        )
                    })
                    .collect(),
            },
            // Unloaded (or replaced) in the meantime: the snapshot says what was.
            Err(_) => Loaded {
                snapshot,
                info: None,
                components: Vec::new(),
            },
        }
    }

    pub fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("snapshot", convert::snapshot(py, &self.snapshot)?)?;
        pipeline_info(py, &d, self.info.as_ref())?;
        let components = PyDict::new(py);
        for (name, config, tensors, bytes) in &self.components {
            let c = PyDict::new(py);
            c.set_item("config", json_opt(py, config.as_ref())?)?;
            c.set_item("tensors", tensors)?;
            c.set_item("bytes", bytes)?;
            components.set_item(name, c)?;
        }
        d.set_item("components", components)?;
        Ok(d)
    }
}

fn pipeline_info(
    py: Python<'_>,
    d: &Bound<'_, PyDict>,
    info: Option<&PipelineInfo>,
) -> PyResult<()> {
    d.set_item("sample_size", info.and_then(|i| i.sample_size))?;
    d.set_item(
        "config",
        json_opt(py, info.and_then(|i| i.config.as_ref()))?,
    )?;
    d.set_item("bytes", info.map_or(0, |i| i.bytes))?;
    d.set_item("tensors", info.map_or(0, |i| i.tensors))?;
    Ok(())
}

/// The core's `ModelManager`.
#[pyclass(frozen, module = "model_manager._model_manager")]
pub struct Manager {
    inner: Arc<ModelManager>,
}

#[pymethods]
impl Manager {
    #[new]
    #[pyo3(signature = (device="cpu", memory_budget=None, dtype=None, chunk_size=None, read_threads=None, drain_timeout=None, return_memory_to_os=true))]
    fn new(
        device: &str,
        memory_budget: Option<u64>,
        dtype: Option<&str>,
        chunk_size: Option<usize>,
        read_threads: Option<usize>,
        drain_timeout: Option<f64>,
        return_memory_to_os: bool,
    ) -> PyResult<Self> {
        let mut b = ModelManager::builder()
            .device(DeviceSpec::from_str(device).py_err()?)
            .return_memory_to_os(return_memory_to_os);
        if let Some(bytes) = memory_budget {
            b = b.memory_budget(bytes);
        }
        if let Some(dtype) = self::dtype(dtype).py_err()? {
            b = b.dtype(dtype);
        }
        if let Some(bytes) = chunk_size {
            b = b.chunk_size(bytes);
        }
        if let Some(threads) = read_threads {
            b = b.read_threads(threads);
        }
        if let Some(timeout) = seconds(drain_timeout)? {
            b = b.drain_timeout(timeout);
        }
        Ok(Manager {
            inner: Arc::new(b.build().py_err()?),
        })
    }

    /// Start loading; returns at once. With `progress=(loop, callback)`,
    /// `loop.call_soon_threadsafe(callback)` is called when progress is
    /// made (at most one call scheduled at a time; the callback reads it
    /// with `Pending.progress()`), and once more, before the outcome, when
    /// the load ends.
    #[pyo3(signature = (source, progress=None))]
    fn load(
        &self,
        source: &Bound<'_, PyAny>,
        progress: Option<(Py<PyAny>, Py<PyAny>)>,
    ) -> PyResult<Pending> {
        let source = convert::source(source)?;
        let handle = self.inner.load(source).py_err()?;
        let scheduled = Arc::new(AtomicBool::new(false));
        let manager = self.inner.clone();
        let (h, flag) = (handle.clone(), scheduled.clone());
        let work = async move {
            let relay = async {
                if let Some((event_loop, callback)) = progress {
                    let mut updates = h.progress_updates();
                    while updates.changed().await.is_ok() {
                        if !flag.swap(true, Ordering::SeqCst) {
                            schedule(&event_loop, &callback);
                        }
                    }
                    if !flag.swap(true, Ordering::SeqCst) {
                        schedule(&event_loop, &callback);
                    }
                    call_python(|_| drop((event_loop, callback)));
                }
            };
            let outcome = async {
                let snapshot = h.wait().await?;
                Ok(Outcome::Value(Box::new(Loaded::read(&manager, snapshot))))
            };
            let ((), outcome) = tokio::join!(relay, outcome);
            outcome
        };
        Ok(Pending::spawn_with(
            work,
            Cancel::Load(handle.clone()),
            Some(handle),
            scheduled,
        ))
    }

    /// Unload: takes effect before this returns; the result comes once
    /// every lease is released and the memory freed (or, with `timeout`,
    /// `LeasesOutstanding` / `Timeout` after it; the unload goes on).
    #[pyo3(signature = (timeout=None))]
    fn unload(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Pending> {
        let timeout = seconds(timeout)?;
        let (started, taken) = std::sync::mpsc::channel();
        let manager = self.inner.clone();
        let work = async move {
            let result = match timeout {
                Some(t) => {
                    let wait = manager.unload_timeout(t);
                    let _ = started.send(());
                    wait.await
                }
                None => {
                    let wait = manager.unload();
                    let _ = started.send(());
                    wait.await
                }
            };
            result.map(|()| Outcome::Unit)
        };
        let pending = Pending::spawn(work, Cancel::Nothing);
        crate::rt::detached(py, move || {
            let _ = taken.recv();
        });
        Ok(pending)
    }

    fn cancel(&self) -> PyResult<()> {
        self.inner.cancel().py_err()
    }

    fn reset(&self) -> PyResult<()> {
        self.inner.reset().py_err()
    }

    fn acquire(&self) -> PyResult<Lease> {
        Ok(Lease::new(Held::manager(self.inner.acquire().py_err()?)))
    }

    fn current_state(&self) -> &'static str {
        self.inner.current_state().name()
    }

    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        convert::snapshot(py, &self.inner.snapshot())
    }

    fn sample_size(&self) -> Option<u64> {
        self.inner.sample_size()
    }

    fn info<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        match self.inner.info() {
            Some(info) => {
                let d = PyDict::new(py);
                pipeline_info(py, &d, Some(&info))?;
                Ok(Some(d))
            }
            None => Ok(None),
        }
    }

    fn resident_bytes(&self) -> u64 {
        self.inner.resident_bytes()
    }

    fn outstanding_leases(&self) -> usize {
        self.inner.outstanding_leases()
    }

    fn device(&self) -> String {
        self.inner.device().to_string()
    }

    fn subscribe(&self) -> Events {
        Events::manager(self.inner.subscribe())
    }

    /// The core's `shutdown()`, awaited by the runtime.
    fn shutdown(&self) -> Pending {
        let manager = self.inner.clone();
        Pending::spawn(
            async move {
                manager.shutdown().await;
                Ok(Outcome::Unit)
            },
            Cancel::Nothing,
        )
    }
}
