//! A manager's life: `mm_manager_new` starts its threads and the core,
//! `mm_manager_destroy` shuts them down and frees it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use model_manager::{DeviceSpec, ModelManager};
use tokio::runtime::{Builder, Runtime};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::mm_manager;
use super::progress::ProgressCalls;
use crate::callbacks::mm_manager_options;
use crate::ffi::{
    block_on, borrow, boundary, cstr, free_handle, into_handle, refuse_in_callback, set_last_error,
    Failure, FfiResult, Out, UserData,
};
use crate::mm_result;
use crate::types::{mm_dtype, MM_DTYPE_KEEP};

/// How long destroy waits for the binding's own tasks (load and event
/// callbacks in flight), and then for the runtime's threads.
const TASK_DRAIN: Duration = Duration::from_secs(5);

/// Create a manager and start its threads; `*manager_out` receives it.
///
/// Threads: any, concurrently. Callbacks: must not be called from them.
/// Ownership: `options` is read during the call only; the caller owns the
/// new manager and must free it with `mm_manager_destroy`. The progress
/// callback and its userdata must stay valid until then (if destroy returns
/// `MM_RESULT_TIMEOUT`, until a progress callback still running returns).
#[no_mangle]
pub unsafe extern "C" fn mm_manager_new(
    options: *const mm_manager_options,
    manager_out: *mut *mut mm_manager,
) -> mm_result {
    boundary(|| {
        refuse_in_callback("mm_manager_new")?;
        // SAFETY: the caller passes NULL or a valid `mm_manager_options`.
        let options = unsafe { borrow(options, "options") }?;
        let out = Out::new(manager_out, "manager_out")?;
        // SAFETY: the header requires a NUL-terminated string or NULL.
        let device: DeviceSpec = unsafe { cstr(options.device, "options->device") }?.parse()?;
        // Check every option before starting any thread.
        let dtype = target_dtype(options.dtype)?;
        // The callbacks' runtime, apart from the core's (which the core
        // owns, starts on the first load and joins on shutdown), so that a
        // callback that blocks its one worker thread cannot hold up the
        // core's tasks and timers, its shutdown included.
        let runtime = new_runtime("model-manager-callbacks", 1)?;
        let mut builder = ModelManager::builder().device(device);
        if options.memory_budget > 0 {
            builder = builder.memory_budget(options.memory_budget);
        }
        if options.chunk_size > 0 {
            builder = builder.chunk_size(options.chunk_size);
        }
        if options.read_threads > 0 {
            builder = builder.read_threads(options.read_threads);
        }
        if let Some(dtype) = dtype {
            builder = builder.dtype(dtype.to_candle());
        }
        if options.drain_timeout_ms > 0 {
            builder =
                builder.drain_timeout(Duration::from_millis(u64::from(options.drain_timeout_ms)));
        }
        let progress = Arc::new(ProgressCalls::default());
        if let Some(callback) = options.progress {
            let userdata = UserData::new(options.progress_userdata);
            builder = builder.on_progress(progress.hook(callback, userdata));
        }
        let inner = builder.build()?;
        let manager = mm_manager {
            inner: Arc::new(inner),
            runtime,
            tasks: TaskTracker::new(),
            closing: CancellationToken::new(),
            last_load: Mutex::new(None),
            progress,
        };
        // SAFETY: non-NULL; the caller passes a writable `mm_manager *`.
        unsafe { out.write(into_handle(manager)) };
        Ok(())
    })
}

/// The dtype of `options->dtype`: `None` for `MM_DTYPE_KEEP`, else one of
/// the three a load may convert to.
pub(crate) fn target_dtype(value: u32) -> FfiResult<Option<mm_dtype>> {
    if value == MM_DTYPE_KEEP {
        return Ok(None);
    }
    [mm_dtype::F32, mm_dtype::F16, mm_dtype::Bf16]
        .into_iter()
        .find(|d| *d as u32 == value)
        .map(Some)
        .ok_or_else(|| {
            Failure::new(
                mm_result::InvalidArgument,
                format!(
                    "options->dtype {value} is not MM_DTYPE_F32, MM_DTYPE_F16, \
                     MM_DTYPE_BF16 or MM_DTYPE_KEEP"
                ),
            )
        })
}

/// A runtime with one worker thread and up to `blocking` blocking threads.
fn new_runtime(name: &str, blocking: usize) -> FfiResult<Runtime> {
    Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(blocking)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| {
            Failure::new(
                mm_result::Runtime,
                format!("cannot start model-manager's threads: {e}"),
            )
        })
}

/// Shut the manager down and free it: cancels any load, waits for leases
/// (up to the drain timeout), unloads, delivers the remaining events and
/// load callbacks, and joins every thread. `manager` must not be used
/// afterwards. NULL is a no-op.
///
/// Leases still held stay valid; their memory is freed when they are
/// released. Callbacks delivered during destroy may still call functions on
/// this manager (reads work, commands fail with `MM_RESULT_SHUT_DOWN`).
///
/// Bounded: destroy waits up to the drain timeout plus at most 1.5 s for the
/// core to shut down, whatever a progress callback does. If a progress
/// callback is still running then, destroy returns `MM_RESULT_TIMEOUT` at
/// once; else it waits up to 5 s more for load and event callbacks still
/// running and, once none is, for the threads to exit. These deadlines hold
/// whatever a callback does. If a callback is still running when destroy
/// gives up, it returns `MM_RESULT_TIMEOUT` and leaves behind, until that
/// callback returns: the thread running it (for a progress callback, a
/// loader thread, which also keeps the memory of the load in progress; when
/// the callback returns, that load frees it and its load callback, if any,
/// is called then, after destroy returned), the manager's own memory and
/// threads, and one thread that frees them when the last such callback has
/// returned. Until then callbacks may still call functions on this manager
/// (reads work, commands fail with `MM_RESULT_SHUT_DOWN`), and their
/// userdata must stay valid. No progress callback starts once destroy has
/// shut the core down.
///
/// Threads: must not run concurrently with any other call on this manager.
/// Callbacks: must not be called from any model-manager callback; there it
/// returns `MM_RESULT_CALLED_FROM_CALLBACK` and does nothing.
/// Ownership: takes back the manager.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_destroy(manager: *mut mm_manager) -> mm_result {
    boundary(|| {
        if manager.is_null() {
            return Ok(());
        }
        refuse_in_callback("mm_manager_destroy")?;
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Failure::new(
                mm_result::CalledFromCallback,
                "mm_manager_destroy must not be called on an async runtime thread",
            ));
        }
        // SAFETY: non-NULL; the caller passes a live manager from
        // `mm_manager_new` and does not use it again. Callbacks still running
        // may use it through shared references too, so until they are done
        // it is only borrowed shared, and freed below.
        let shared = unsafe { &*manager };
        // Cannot fail here: we are not on a runtime thread (checked above).
        if let Err(error) = shared.inner.shutdown_blocking() {
            set_last_error(error.to_string());
        }
        // No progress callback starts from now on. One still running now
        // is one the core's shutdown gave up on (a settled core runs none):
        // its load ends only when it returns, so its load callback cannot
        // run before then, and waiting for the binding's tasks is pointless.
        let progress_running = shared.progress.close();
        // No transition can happen any more (unless that load ends):
        // subscriptions deliver what is queued and end; load callbacks have
        // their outcomes.
        shared.closing.cancel();
        shared.tasks.close();
        // On this thread's clock: a tokio timer would not fire while a
        // callback blocks the runtime's one worker thread.
        let drained =
            !progress_running && block_on(shared.tasks.wait(), Some(TASK_DRAIN)).is_some();
        let destroyed = Destroyed(manager);
        if drained {
            // SAFETY: every task and callback that could use the manager has
            // finished, no progress callback can start or is running, and
            // the caller gave it up: this is the only reference left.
            unsafe { destroyed.free() };
            return Ok(());
        }
        let running = if progress_running {
            "a progress callback"
        } else {
            "a load or event callback"
        };
        let freer = std::thread::Builder::new()
            .name("model-manager-destroy".into())
            // SAFETY: shut down, its tasks and progress calls closed, and
            // given up by the caller: only callbacks still running use it.
            .spawn(move || unsafe { destroyed.free_when_idle() });
        let left = match freer {
            Ok(_) => "it is freed when the callback returns",
            // The manager stays allocated for good rather than be freed
            // under the callback.
            Err(_) => "it stays allocated",
        };
        Err(Failure::new(
            mm_result::Timeout,
            format!("{running} is still running: the manager was shut down; {left}"),
        ))
    })
}

/// A manager given back to `mm_manager_destroy`, to be freed once nothing
/// uses it.
struct Destroyed(*mut mm_manager);

// SAFETY: `mm_manager` is `Send + Sync` (asserted below); the pointer moves
// to the thread that frees it, and callbacks on other threads only borrow
// the manager shared until then.
unsafe impl Send for Destroyed {}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<mm_manager>();
};

impl Destroyed {
    /// Free the manager and join the callbacks' thread (up to
    /// [`TASK_DRAIN`]; the core joined its own on shutdown).
    ///
    /// # Safety
    ///
    /// The pointer came from `mm_manager_new` and nothing uses the manager
    /// any more.
    unsafe fn free(self) {
        // SAFETY: per this function's contract.
        let Some(manager) = (unsafe { free_handle(self.0) }) else {
            return; // NULL was refused before a `Destroyed` is made.
        };
        let mm_manager {
            inner,
            runtime,
            last_load,
            ..
        } = *manager;
        drop(last_load);
        drop(inner);
        runtime.shutdown_timeout(TASK_DRAIN);
    }

    /// Wait, without a limit, until no task or callback uses the manager,
    /// then free it. Runs on a thread of its own, so that destroy's caller
    /// does not wait.
    ///
    /// # Safety
    ///
    /// The pointer came from `mm_manager_new`; the manager is shut down, its
    /// tasks and progress calls closed (no new ones start), and its caller
    /// has given it up.
    unsafe fn free_when_idle(self) {
        // SAFETY: live until freed below; only borrowed shared meanwhile.
        let shared = unsafe { &*self.0 };
        block_on(shared.tasks.wait(), None);
        shared.progress.wait_idle();
        // SAFETY: no task and no callback uses it now, and none can start.
        unsafe { self.free() }
    }
}
