//! The binding's runtime and its one way back into Python.
//!
//! Core futures (a load's outcome, an unload, a pool's acquire) are awaited
//! by tasks of a small tokio runtime the binding owns. When one ends, its
//! outcome is stored in a [`Pending`] and each registered event loop is
//! woken with `loop.call_soon_threadsafe(callback)`: the callback then runs
//! on the loop's thread and takes the outcome. No Rust lock is held while
//! Python runs, and every blocking wait releases the GIL.
//!
//! At interpreter exit the package calls [`quiesce`]: from then on no task
//! enters Python, and it returns once none is inside it, so that no thread
//! of ours takes the GIL while the interpreter finalizes.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use model_manager::Error;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use tokio::runtime::Runtime;
use tokio::sync::Notify;

use crate::errors::exception;

/// The runtime that awaits the core's futures for Python.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("model-manager-py")
            .enable_time()
            .build()
            .expect("cannot start the binding's runtime")
    })
}

static FINALIZING: AtomicBool = AtomicBool::new(false);
static INSIDE: AtomicUsize = AtomicUsize::new(0);

/// Run `f` with the GIL, from one of the runtime's threads, unless the
/// interpreter is exiting (then `f` is skipped).
pub fn call_python(f: impl FnOnce(Python<'_>)) {
    INSIDE.fetch_add(1, Ordering::SeqCst);
    if !FINALIZING.load(Ordering::SeqCst) {
        Python::with_gil(f);
    }
    INSIDE.fetch_sub(1, Ordering::SeqCst);
}

/// Run `f` with the GIL released. Once the interpreter is exiting (after
/// [`quiesce`]), a thread that gets here never takes the GIL back: only
/// daemon threads can still be waiting then, and one that re-takes the GIL
/// while the interpreter finalizes is ended by it inside our frames.
pub fn detached<T: Send>(py: Python<'_>, f: impl Send + FnOnce() -> T) -> T {
    py.allow_threads(move || {
        let value = f();
        while FINALIZING.load(Ordering::SeqCst) {
            std::thread::park_timeout(Duration::from_secs(1));
        }
        value
    })
}

/// `loop.call_soon_threadsafe(callback)`, from a runtime thread. A closed
/// loop is ignored: nobody waits on it any more.
pub fn schedule(event_loop: &Py<PyAny>, callback: &Py<PyAny>) {
    call_python(|py| {
        let _ = event_loop.call_method1(py, "call_soon_threadsafe", (callback.clone_ref(py),));
    });
}

/// Stop entering Python from the runtime's threads, and wait (GIL released,
/// at most `timeout` seconds) until none is inside it. Called at exit.
#[pyfunction]
#[pyo3(signature = (timeout=2.0))]
pub fn quiesce(py: Python<'_>, timeout: f64) -> bool {
    FINALIZING.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs_f64(timeout.clamp(0.0, 60.0));
    py.allow_threads(|| {
        while INSIDE.load(Ordering::SeqCst) != 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    })
}

/// Seconds from Python as a `Duration` (`None` stays `None`).
pub fn seconds(value: Option<f64>) -> PyResult<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Duration::from_secs_f64(s.min(1e9)))),
        Some(s) if s == f64::INFINITY => Ok(Some(Duration::MAX)),
        Some(s) => Err(PyValueError::new_err(format!(
            "a duration must be a non-negative number of seconds, not {s}"
        ))),
    }
}

/// What a finished operation produced, converted to Python on the thread
/// that takes it.
pub enum Outcome {
    Unit,
    /// A value the layer above converts (a finished load, a lease): the
    /// runtime only hands it over.
    Value(Box<dyn ToPython>),
    Version(u64),
}

/// A Rust value made into a Python object once the GIL is held.
pub trait ToPython: Send {
    fn to_python(self: Box<Self>, py: Python<'_>) -> PyResult<PyObject>;
}

impl Outcome {
    fn into_py(self, py: Python<'_>) -> PyResult<PyObject> {
        Ok(match self {
            Outcome::Unit => py.None(),
            Outcome::Value(value) => value.to_python(py)?,
            Outcome::Version(v) => v.into_pyobject(py)?.into_any().unbind(),
        })
    }
}

struct Inner {
    result: Option<Result<Outcome, Error>>,
    finished: bool,
    /// `(loop, callback)` pairs to wake when it finishes.
    waiters: Vec<(Py<PyAny>, Py<PyAny>)>,
}

struct Shared {
    inner: Mutex<Inner>,
    finished: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn finish(&self, result: Result<Outcome, Error>) {
        let waiters = {
            let mut inner = self.lock();
            inner.result = Some(result);
            inner.finished = true;
            self.finished.notify_all();
            std::mem::take(&mut inner.waiters)
        };
        for (event_loop, callback) in &waiters {
            schedule(event_loop, callback);
        }
        if !waiters.is_empty() {
            call_python(|_| drop(waiters));
        }
    }
}

/// What `cancel()` does to an operation in flight.
pub enum Cancel {
    /// Nothing: the operation takes effect when called and goes on (an
    /// unload, a reload).
    Nothing,
    /// The core's `LoadHandle::cancel`.
    Load(model_manager::LoadHandle),
    /// Stop waiting (a pool's acquire: cancel safe in the core); the
    /// outcome is `Cancelled`.
    Stop(Arc<Notify>),
}

/// A core operation in flight: wait for it (blocking, GIL released), or
/// have an event loop woken when it ends; then take its result once.
#[pyclass(frozen, module = "model_manager._model_manager")]
pub struct Pending {
    shared: Arc<Shared>,
    cancel: Cancel,
    /// The load whose progress `progress()` reads.
    load: Option<model_manager::LoadHandle>,
    /// Set while a progress delivery is scheduled and not yet taken.
    progress_scheduled: Arc<AtomicBool>,
}

impl Pending {
    /// Run `work` on the runtime. With `Cancel::Stop`, `cancel()` ends it
    /// with `Cancelled`.
    pub fn spawn<F>(work: F, cancel: Cancel) -> Pending
    where
        F: Future<Output = Result<Outcome, Error>> + Send + 'static,
    {
        Self::spawn_with(work, cancel, None, Arc::new(AtomicBool::new(false)))
    }

    pub fn spawn_with<F>(
        work: F,
        cancel: Cancel,
        load: Option<model_manager::LoadHandle>,
        progress_scheduled: Arc<AtomicBool>,
    ) -> Pending
    where
        F: Future<Output = Result<Outcome, Error>> + Send + 'static,
    {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                result: None,
                finished: false,
                waiters: Vec::new(),
            }),
            finished: Condvar::new(),
        });
        let stop = match &cancel {
            Cancel::Stop(stop) => Some(stop.clone()),
            _ => None,
        };
        let task_shared = shared.clone();
        runtime().spawn(async move {
            let result = match stop {
                Some(stop) => tokio::select! {
                    result = work => result,
                    () = stop.notified() => Err(Error::Cancelled),
                },
                None => work.await,
            };
            task_shared.finish(result);
        });
        Pending {
            shared,
            cancel,
            load,
            progress_scheduled,
        }
    }

    /// An operation that has already ended.
    pub fn ready(result: Result<Outcome, Error>) -> Pending {
        let pending = Pending {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    result: None,
                    finished: false,
                    waiters: Vec::new(),
                }),
                finished: Condvar::new(),
            }),
            cancel: Cancel::Nothing,
            load: None,
            progress_scheduled: Arc::new(AtomicBool::new(false)),
        };
        pending.shared.finish(result);
        pending
    }
}

#[pymethods]
impl Pending {
    /// Whether the outcome is known.
    fn done(&self) -> bool {
        self.shared.lock().finished
    }

    /// Wait until it has ended, at most `timeout` seconds (`None`: no
    /// bound), with the GIL released; whether it has ended. Signals (Ctrl-C)
    /// are checked every 50 ms and raised.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let deadline = seconds(timeout)?.and_then(|t| Instant::now().checked_add(t));
        loop {
            let slice = Duration::from_millis(50);
            let slice = match deadline {
                Some(d) => slice.min(d.saturating_duration_since(Instant::now())),
                None => slice,
            };
            let finished = detached(py, || {
                let inner = self.shared.lock();
                let (inner, _) = self
                    .shared
                    .finished
                    .wait_timeout_while(inner, slice, |i| !i.finished)
                    .unwrap_or_else(PoisonError::into_inner);
                inner.finished
            });
            if finished {
                return Ok(true);
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
        }
    }

    /// Have `loop.call_soon_threadsafe(callback)` called when it ends (at
    /// once if it has).
    fn notify(&self, py: Python<'_>, event_loop: Py<PyAny>, callback: Py<PyAny>) -> PyResult<()> {
        let now = {
            let mut inner = self.shared.lock();
            if inner.finished {
                true
            } else {
                inner
                    .waiters
                    .push((event_loop.clone_ref(py), callback.clone_ref(py)));
                false
            }
        };
        if now {
            event_loop.call_method1(py, "call_soon_threadsafe", (callback,))?;
        }
        Ok(())
    }

    /// The result: the value, or the core's error raised as its exception.
    /// Taken once.
    fn result(&self, py: Python<'_>) -> PyResult<PyObject> {
        let result = {
            let mut inner = self.shared.lock();
            if !inner.finished {
                return Err(PyRuntimeError::new_err("the operation has not finished"));
            }
            inner.result.take()
        };
        match result {
            Some(Ok(outcome)) => outcome.into_py(py),
            Some(Err(err)) => Err(PyErr::from_value(exception(py, &err)?)),
            None => Err(PyRuntimeError::new_err("the result was already taken")),
        }
    }

    /// Cancel the operation, as the core defines it: a load is cancelled
    /// (`LoadHandle::cancel`), a wait stops; an unload or a reload goes on.
    fn cancel(&self) {
        match &self.cancel {
            Cancel::Nothing => {}
            Cancel::Load(handle) => handle.cancel(),
            Cancel::Stop(stop) => stop.notify_one(),
        }
    }

    /// The load's progress now (a dict), and clear the mark that a delivery
    /// is scheduled; `None` for operations other than loads.
    fn progress<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.progress_scheduled.store(false, Ordering::SeqCst);
        match &self.load {
            Some(handle) => Ok(Some(
                crate::convert::progress(py, &handle.progress())?.into_any(),
            )),
            None => Ok(None),
        }
    }
}
