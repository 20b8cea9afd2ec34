//! Where the manager's tasks run: the caller's tokio runtime, or one the
//! manager owns and shuts down (joining its threads). On wasm32 there is no
//! runtime to own: tasks run on the JS event loop.

use std::time::Duration;

use tokio::runtime::Handle;

use crate::Result;
#[cfg(not(target_arch = "wasm32"))]
use {
    crate::Error,
    std::sync::{Mutex, PoisonError},
    tokio::runtime::{Builder, Runtime as TokioRuntime},
};

#[cfg(not(target_arch = "wasm32"))]
pub(crate) struct Runtime {
    handle: Handle,
    owned: Mutex<Option<TokioRuntime>>,
}

#[cfg(not(target_arch = "wasm32"))]
impl Runtime {
    /// Use `handle`, else the runtime this is called from, else a new one.
    pub(crate) fn new(handle: Option<Handle>) -> Result<Self> {
        if let Some(handle) = handle.or_else(|| Handle::try_current().ok()) {
            return Ok(Runtime {
                handle,
                owned: Mutex::new(None),
            });
        }
        let rt = Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(8)
            .thread_name("model-manager")
            .enable_all()
            .build()
            .map_err(|e| Error::Device(format!("cannot start the loader runtime: {e}")))?;
        Ok(Runtime {
            handle: rt.handle().clone(),
            owned: Mutex::new(Some(rt)),
        })
    }

    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    fn take(&self) -> Option<TokioRuntime> {
        self.owned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Shut an owned runtime down and join its threads. Called once every
    /// task of the manager has finished, so this does not wait on any work.
    pub(crate) async fn shutdown(&self) {
        let Some(rt) = self.take() else { return };
        if Handle::try_current().is_err() {
            // Not on a tokio runtime: blocking here is allowed.
            drop(rt);
            return;
        }
        // Dropping a runtime blocks until its threads exit, which tokio
        // forbids on a runtime thread. Do it on a thread of our own, wait for
        // it without blocking, then join it (it has finished by then).
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reaper = std::thread::Builder::new()
            .name("model-manager-reaper".into())
            .spawn(move || {
                drop(rt);
                let _ = tx.send(());
            });
        match reaper {
            Ok(reaper) => {
                let _ = rx.await;
                let _ = reaper.join();
            }
            Err(e) => tracing::warn!("could not join the loader runtime: {e}"),
        }
    }

    /// Best-effort shutdown from `Drop`: joins the threads when blocking is
    /// allowed here, else lets them exit on their own.
    pub(crate) fn shutdown_now(&self, timeout: Duration) {
        if let Some(rt) = self.take() {
            if Handle::try_current().is_err() {
                rt.shutdown_timeout(timeout);
            } else {
                rt.shutdown_background();
            }
        }
    }
}

/// On wasm32, tasks are spawned on the JS event loop; nothing to own or join.
#[cfg(target_arch = "wasm32")]
pub(crate) struct Runtime;

#[cfg(target_arch = "wasm32")]
impl Runtime {
    pub(crate) fn new(_handle: Option<Handle>) -> Result<Self> {
        Ok(Runtime)
    }

    pub(crate) async fn shutdown(&self) {}

    pub(crate) fn shutdown_now(&self, _timeout: Duration) {}
}
