//! Where the manager's tasks run: a runtime the manager owns, started on
//! first use and shut down (threads joined, bounded) by the manager; or the
//! runtime the user passed with `builder().runtime(handle)`. The manager
//! never adopts an ambient runtime it does not own: that runtime could be
//! shut down under a load, leaving it unresolved. On wasm32 there is no
//! runtime to own: tasks run on the JS event loop.

#[cfg(not(target_arch = "wasm32"))]
use {
    crate::error::{Error, Result},
    once_cell::sync::OnceCell,
    std::sync::{Mutex, PoisonError},
    std::time::Duration,
    tokio::runtime::{Builder, Handle, Runtime as TokioRuntime},
};

#[cfg(not(target_arch = "wasm32"))]
pub(crate) struct Runtime {
    given: Option<Handle>,
    /// Started by the first load, with `OnceCell::get_or_try_init`: a failed
    /// start is reported to that load and tried again by the next.
    owned: OnceCell<Owned>,
}

#[cfg(not(target_arch = "wasm32"))]
struct Owned {
    handle: Handle,
    runtime: Mutex<Option<TokioRuntime>>,
}

/// A runtime dropped without a shutdown (a manager dropped in an odd
/// order) must neither panic in async code nor block on a thread stuck in
/// user code.
#[cfg(not(target_arch = "wasm32"))]
impl Drop for Owned {
    fn drop(&mut self) {
        let runtime = self
            .runtime
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(rt) = runtime {
            if Handle::try_current().is_ok() {
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(super::SHUTDOWN_GRACE);
            }
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Runtime {
    /// Use `handle` if given, else a runtime of the manager's own.
    pub(crate) fn new(given: Option<Handle>) -> Self {
        Runtime {
            given,
            owned: OnceCell::new(),
        }
    }

    /// The runtime to spawn on, started if need be.
    pub(crate) fn handle(&self) -> Result<Handle> {
        if let Some(handle) = &self.given {
            return Ok(handle.clone());
        }
        self.owned
            .get_or_try_init(|| {
                let runtime = Builder::new_multi_thread()
                    .worker_threads(1)
                    .max_blocking_threads(8)
                    .thread_name("model-manager")
                    .enable_all()
                    .build()
                    .map_err(|e| Error::Device(format!("cannot start the loader runtime: {e}")))?;
                Ok(Owned {
                    handle: runtime.handle().clone(),
                    runtime: Mutex::new(Some(runtime)),
                })
            })
            .map(|owned| owned.handle.clone())
    }

    fn take(&self) -> Option<TokioRuntime> {
        self.owned.get().and_then(|owned| {
            owned
                .runtime
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
        })
    }

    /// Shut an owned runtime down, joining its threads for at most
    /// `timeout`: a thread still running user code (a progress hook that
    /// blocks, an `assemble` that never returns) is left to finish on its own.
    pub(crate) async fn shutdown(&self, timeout: Duration) {
        let Some(rt) = self.take() else { return };
        if Handle::try_current().is_err() {
            // Not on a tokio runtime: blocking here is allowed.
            rt.shutdown_timeout(timeout);
            return;
        }
        // Shutting a runtime down blocks, which tokio forbids on a runtime
        // thread. Do it on a thread of our own and wait for it, bounded.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut rt = Some(rt);
        let reaper = std::thread::Builder::new()
            .name("model-manager-reaper".into())
            .spawn({
                let rt = rt.take();
                move || {
                    if let Some(rt) = rt {
                        rt.shutdown_timeout(timeout);
                    }
                    let _ = tx.send(());
                }
            });
        match reaper {
            Ok(reaper) => {
                if rx.await.is_ok() {
                    let _ = reaper.join();
                }
            }
            // The closure (and the runtime in it) was dropped here, inside
            // async code: `Owned`'s drop is not involved, so shut it down
            // without blocking.
            Err(e) => tracing::warn!("could not join the loader runtime: {e}"),
        }
    }

    /// Shutdown from `Drop` or a blocking caller: joins the threads (bounded)
    /// when blocking is allowed here, else lets them exit on their own.
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
    pub(crate) fn new(_given: Option<tokio::runtime::Handle>) -> Self {
        Runtime
    }

    pub(crate) async fn shutdown(&self, _timeout: std::time::Duration) {}

    pub(crate) fn shutdown_now(&self, _timeout: std::time::Duration) {}
}
