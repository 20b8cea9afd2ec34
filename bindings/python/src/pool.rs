//! `Pool`: the core's `ModelPool`, method for method.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use model_manager::{DeviceSpec, ModelOptions, ModelPool, ReloadPolicy};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokio::sync::Notify;

use crate::convert;
use crate::errors::IntoPy;
use crate::events::Events;
use crate::lease::{Held, Lease};
use crate::rt::{seconds, Cancel, Outcome, Pending};

/// The core's `ModelPool`.
#[pyclass(frozen, module = "model_manager._model_manager")]
pub struct Pool {
    inner: Arc<ModelPool>,
}

/// `keep_alive` from Python: `None` is forever.
fn keep_alive(value: Option<f64>) -> PyResult<Option<Duration>> {
    seconds(value)
}

/// A model's options from `add`'s arguments: the pool's keep-alive unless
/// `use_default_keep_alive` is false, then `keep_alive` (seconds, `None`:
/// forever).
fn model_options(
    keep_alive: Option<f64>,
    use_default_keep_alive: bool,
    pinned: bool,
) -> PyResult<ModelOptions> {
    let options = ModelOptions::new().pinned(pinned);
    Ok(match use_default_keep_alive {
        true => options,
        false => options.keep_alive(self::keep_alive(keep_alive)?),
    })
}

#[pymethods]
impl Pool {
    #[new]
    #[pyo3(signature = (budget=None, device="cpu", dtype=None, keep_alive=None, max_queue=None, concurrent_loads=None, admission_timeout=None, retry_cooldown=None, drain_timeout=None, chunk_size=None, read_threads=None, return_memory_to_os=true, headroom=0, host_budget=0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        budget: Option<u64>,
        device: &str,
        dtype: Option<&str>,
        keep_alive: Option<f64>,
        max_queue: Option<usize>,
        concurrent_loads: Option<usize>,
        admission_timeout: Option<f64>,
        retry_cooldown: Option<f64>,
        drain_timeout: Option<f64>,
        chunk_size: Option<usize>,
        read_threads: Option<usize>,
        return_memory_to_os: bool,
        headroom: u64,
        host_budget: u64,
    ) -> PyResult<Self> {
        let mut b = ModelPool::builder()
            .device(DeviceSpec::from_str(device).py_err()?)
            .headroom(headroom)
            .host_budget(host_budget)
            .keep_alive(self::keep_alive(keep_alive)?)
            .return_memory_to_os(return_memory_to_os);
        if let Some(bytes) = budget {
            b = b.memory_budget(bytes);
        }
        if let Some(dtype) = crate::manager::dtype(dtype).py_err()? {
            b = b.dtype(dtype);
        }
        if let Some(n) = max_queue {
            b = b.max_queue(n);
        }
        if let Some(n) = concurrent_loads {
            b = b.concurrent_loads(n);
        }
        if let Some(t) = seconds(admission_timeout)? {
            b = b.admission_timeout(t);
        }
        if let Some(t) = seconds(retry_cooldown)? {
            b = b.retry_cooldown(t);
        }
        if let Some(t) = seconds(drain_timeout)? {
            b = b.drain_timeout(t);
        }
        if let Some(bytes) = chunk_size {
            b = b.chunk_size(bytes);
        }
        if let Some(n) = read_threads {
            b = b.read_threads(n);
        }
        Ok(Pool {
            inner: Arc::new(b.build().py_err()?),
        })
    }

    /// Make `source` known as `id`. `keep_alive`: `("default",)` for the
    /// pool's, else seconds or `None` (forever).
    #[pyo3(signature = (id, source, keep_alive=None, use_default_keep_alive=true, pinned=false))]
    fn add(
        &self,
        id: &str,
        source: &Bound<'_, PyAny>,
        keep_alive: Option<f64>,
        use_default_keep_alive: bool,
        pinned: bool,
    ) -> PyResult<()> {
        let options = model_options(keep_alive, use_default_keep_alive, pinned)?;
        self.inner
            .add_with(id, convert::source(source)?, options)
            .py_err()
    }

    /// Add the pipeline `source` as one model per component with weights
    /// (`id/component`); their ids.
    #[pyo3(signature = (id, source, keep_alive=None, use_default_keep_alive=true, pinned=false))]
    fn add_pipeline(
        &self,
        id: &str,
        source: &Bound<'_, PyAny>,
        keep_alive: Option<f64>,
        use_default_keep_alive: bool,
        pinned: bool,
    ) -> PyResult<Vec<String>> {
        let options = model_options(keep_alive, use_default_keep_alive, pinned)?;
        self.inner
            .add_pipeline_with(id, convert::source(source)?, options)
            .py_err()
    }

    /// A lease on `id` (loading it if needed), with `working_bytes`
    /// reserved beside it; with `timeout`, `Timeout` after it (the load
    /// goes on, nothing stays reserved). `cancel()` stops the wait only.
    #[pyo3(signature = (id, timeout=None, working_bytes=0))]
    fn acquire(&self, id: String, timeout: Option<f64>, working_bytes: u64) -> PyResult<Pending> {
        let timeout = seconds(timeout)?;
        let pool = self.inner.clone();
        Ok(Pending::spawn(
            async move {
                let acquire = pool.acquire_with(&id, working_bytes);
                let lease = match timeout {
                    Some(t) => tokio::time::timeout(t, acquire)
                        .await
                        .map_err(|_| model_manager::Error::Timeout)??,
                    None => acquire.await?,
                };
                Ok(Outcome::Value(Box::new(Held::pool(lease))))
            },
            Cancel::Stop(Arc::new(Notify::new())),
        ))
    }

    fn try_acquire(&self, id: &str) -> PyResult<Lease> {
        Ok(Lease::new(Held::pool(self.inner.try_acquire(id).py_err()?)))
    }

    /// Load `id` now and wait until it is ready; its version.
    fn load(&self, id: String) -> Pending {
        let pool = self.inner.clone();
        Pending::spawn(
            async move { Ok(Outcome::Version(pool.load(&id).await?)) },
            Cancel::Stop(Arc::new(Notify::new())),
        )
    }

    /// Load `source` as the next version of `id`; takes effect when called.
    #[pyo3(signature = (id, source, unload_first=false))]
    fn reload(&self, id: &str, source: &Bound<'_, PyAny>, unload_first: bool) -> PyResult<Pending> {
        let policy = if unload_first {
            ReloadPolicy::UnloadFirst
        } else {
            ReloadPolicy::KeepServing
        };
        let wait = self.inner.reload_with(id, convert::source(source)?, policy);
        Ok(Pending::spawn(
            async move { Ok(Outcome::Version(wait.await?)) },
            Cancel::Nothing,
        ))
    }

    fn cancel(&self, id: &str) -> PyResult<bool> {
        self.inner.cancel(id).py_err()
    }

    fn unload(&self, py: Python<'_>, id: String) -> Pending {
        self.eager(py, id, false)
    }

    fn remove(&self, py: Python<'_>, id: String) -> Pending {
        self.eager(py, id, true)
    }

    fn pin(&self, id: &str) -> PyResult<()> {
        self.inner.pin(id).py_err()
    }

    fn unpin(&self, id: &str) -> PyResult<()> {
        self.inner.unpin(id).py_err()
    }

    #[pyo3(signature = (id, seconds))]
    fn set_keep_alive(&self, id: &str, seconds: Option<f64>) -> PyResult<()> {
        self.inner.set_keep_alive(id, keep_alive(seconds)?).py_err()
    }

    fn status<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.inner
            .status(id)
            .map(|s| convert::model_status(py, &s))
            .transpose()
    }

    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        convert::pool_snapshot(py, &self.inner.snapshot())
    }

    fn metrics_text(&self) -> String {
        self.inner.metrics_text()
    }

    fn budget(&self) -> u64 {
        self.inner.budget()
    }

    fn charged(&self) -> u64 {
        self.inner.charged()
    }

    fn subscribe(&self) -> Events {
        Events::pool(self.inner.subscribe())
    }

    fn shutdown(&self) -> Pending {
        let pool = self.inner.clone();
        Pending::spawn(
            async move {
                pool.shutdown().await;
                Ok(Outcome::Unit)
            },
            Cancel::Nothing,
        )
    }
}

impl Pool {
    /// `unload` / `remove`: the core's async fns take effect at their first
    /// poll, which happens on the runtime before this returns.
    fn eager(&self, py: Python<'_>, id: String, remove: bool) -> Pending {
        let (started, taken) = std::sync::mpsc::channel();
        let pool = self.inner.clone();
        let pending = Pending::spawn(
            async move {
                let wait = async {
                    if remove {
                        pool.remove(&id).await
                    } else {
                        pool.unload(&id).await
                    }
                };
                let mut wait = std::pin::pin!(wait);
                // One poll: the command is given to the pool.
                let first =
                    std::future::poll_fn(|cx| std::task::Poll::Ready(wait.as_mut().poll(cx))).await;
                let _ = started.send(());
                match first {
                    std::task::Poll::Ready(r) => r?,
                    std::task::Poll::Pending => wait.await?,
                }
                Ok(Outcome::Unit)
            },
            Cancel::Nothing,
        );
        crate::rt::detached(py, move || {
            let _ = taken.recv();
        });
        pending
    }
}
