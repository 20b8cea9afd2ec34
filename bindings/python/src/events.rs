//! Event streams (a manager's transitions, a pool's events), pumped by a
//! task of the binding's runtime into an event loop, or read blocking.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use model_manager::{PoolEvent, RecvError, StateEvent, Subscription, TryRecvError};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokio::sync::{broadcast, Notify};

use crate::convert;
use crate::rt::{call_python, runtime, seconds};

enum Source {
    State(Subscription),
    Pool(broadcast::Receiver<PoolEvent>),
}

enum Item {
    State(StateEvent, u64),
    Pool(PoolEvent, u64),
}

impl Item {
    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        match self {
            Item::State(e, missed) => convert::state_event(py, e, *missed),
            Item::Pool(e, missed) => convert::pool_event(py, e, *missed),
        }
    }
}

impl Source {
    /// The next event if one is waiting (for the end of a stream: the
    /// events published before it was closed).
    fn try_next(&mut self) -> Option<Item> {
        let mut missed = 0;
        loop {
            match self {
                Source::State(sub) => match sub.try_recv() {
                    Ok(e) => return Some(Item::State(e, missed)),
                    Err(TryRecvError::Lagged(n)) => missed += n,
                    Err(_) => return None,
                },
                Source::Pool(rx) => match rx.try_recv() {
                    Ok(e) => return Some(Item::Pool(e, missed)),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => missed += n,
                    Err(_) => return None,
                },
            }
        }
    }

    /// The next event, with how many were missed before it (a subscriber
    /// that fell behind); `None` once no more can come.
    async fn next(&mut self) -> Option<Item> {
        let mut missed = 0;
        loop {
            match self {
                Source::State(sub) => match sub.recv().await {
                    Ok(e) => return Some(Item::State(e, missed)),
                    Err(RecvError::Lagged(n)) => missed += n,
                    Err(RecvError::Closed) => return None,
                },
                Source::Pool(rx) => match rx.recv().await {
                    Ok(e) => return Some(Item::Pool(e, missed)),
                    Err(broadcast::error::RecvError::Lagged(n)) => missed += n,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    }
}

/// Set by `close()`: the stream ends after the events already published.
struct Closed {
    flag: AtomicBool,
    notify: Notify,
}

impl Closed {
    /// The next event; once closed, only those already published.
    async fn next(&self, source: &mut Source) -> Option<Item> {
        let notified = self.notify.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if self.flag.load(Ordering::SeqCst) {
            return source.try_next();
        }
        tokio::select! {
            biased;
            item = source.next() => item,
            () = notified => source.try_next(),
        }
    }
}

/// Every event from the moment it was made, in order.
#[pyclass(frozen, module = "model_manager._model_manager")]
pub struct Events {
    source: Mutex<Option<Source>>,
    closed: Arc<Closed>,
}

impl Events {
    pub fn manager(sub: Subscription) -> Self {
        Self::new(Source::State(sub))
    }

    pub fn pool(rx: broadcast::Receiver<PoolEvent>) -> Self {
        Self::new(Source::Pool(rx))
    }

    fn new(source: Source) -> Self {
        Events {
            source: Mutex::new(Some(source)),
            closed: Arc::new(Closed {
                flag: AtomicBool::new(false),
                notify: Notify::new(),
            }),
        }
    }
}

#[pymethods]
impl Events {
    /// Deliver every event as `loop.call_soon_threadsafe(put, event)`, and
    /// `put(None)` at the end (the source closed, or `close()`).
    fn start(&self, event_loop: Py<PyAny>, put: Py<PyAny>) -> PyResult<()> {
        let mut source = self
            .source
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("the event stream is already read"))?;
        let closed = self.closed.clone();
        runtime().spawn(async move {
            loop {
                let item = closed.next(&mut source).await;
                let end = item.is_none();
                call_python(|py| {
                    let event = match &item {
                        Some(item) => match item.to_py(py) {
                            Ok(d) => d.into_any(),
                            Err(_) => return,
                        },
                        None => py.None().into_bound(py),
                    };
                    let _ = event_loop.call_method1(
                        py,
                        "call_soon_threadsafe",
                        (put.clone_ref(py), event),
                    );
                });
                if end {
                    break;
                }
            }
            call_python(|_| drop((event_loop, put)));
        });
        Ok(())
    }

    /// The next event (GIL released), waiting at most `timeout` seconds;
    /// `None` when none came or no more can come.
    #[pyo3(signature = (timeout=None))]
    fn next<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let deadline = seconds(timeout)?.and_then(|t| std::time::Instant::now().checked_add(t));
        let closed = self.closed.clone();
        // In slices, so that Ctrl-C (a signal handler's exception) stops
        // the wait between two of them.
        let item = loop {
            let slice = Duration::from_millis(50);
            let slice = match deadline {
                Some(d) => slice.min(d.saturating_duration_since(std::time::Instant::now())),
                None => slice,
            };
            let waited = crate::rt::detached(py, || {
                let mut guard = self.source.lock().unwrap_or_else(PoisonError::into_inner);
                let Some(source) = guard.as_mut() else {
                    return Err("the event stream is read by an event loop");
                };
                Ok(runtime().block_on(async {
                    tokio::time::timeout(slice, closed.next(source)).await.ok()
                }))
            });
            match waited.map_err(PyRuntimeError::new_err)? {
                Some(item) => break Ok::<_, PyErr>(item),
                None => {
                    py.check_signals()?;
                    if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                        break Ok(None);
                    }
                }
            }
        };
        match item? {
            Some(item) => Ok(Some(item.to_py(py)?)),
            None => Ok(None),
        }
    }

    /// End the stream after the events already published (an event loop
    /// reading it gets them, then `None`).
    fn close(&self) {
        self.closed.flag.store(true, Ordering::SeqCst);
        self.closed.notify.notify_waiters();
    }
}
