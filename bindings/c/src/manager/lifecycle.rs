//! A manager's life: `mm_manager_new` starts its threads and the core,
//! `mm_manager_destroy` shuts them down and frees it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use model_manager::{DeviceSpec, ModelManager};
use tokio::runtime::Builder;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::mm_manager;
use crate::ffi::{
    borrow, boundary, cstr, free_handle, into_handle, refuse_in_callback, set_last_error,
    CallbackGuard, Failure, Out, UserData,
};
use crate::mm_result;
use crate::types::{mm_dtype, mm_manager_options, mm_progress, MM_DTYPE_KEEP};

/// How long destroy waits for the binding's own tasks (callbacks in flight)
/// and then for the runtime's threads.
const TASK_DRAIN: Duration = Duration::from_secs(5);
/// Create a manager and start its threads; `*manager_out` receives it.
///
/// Threads: any, concurrently. Callbacks: must not be called from them.
/// Ownership: `options` is read during the call only; the caller owns the
/// new manager and must free it with `mm_manager_destroy`. The progress
/// callback and its userdata must stay valid until then.
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
        let dtype = match options.dtype {
            MM_DTYPE_KEEP => None,
            value => Some(
                [mm_dtype::F32, mm_dtype::F16, mm_dtype::Bf16]
                    .into_iter()
                    .find(|d| *d as u32 == value)
                    .ok_or_else(|| {
                        Failure::new(
                            mm_result::InvalidArgument,
                            format!(
                                "options->dtype {value} is not MM_DTYPE_F32, MM_DTYPE_F16, \
                                 MM_DTYPE_BF16 or MM_DTYPE_KEEP"
                            ),
                        )
                    })?,
            ),
        };
        let runtime = Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(4)
            .thread_name("model-manager")
            .enable_all()
            .build()
            .map_err(|e| {
                Failure::new(
                    mm_result::Runtime,
                    format!("cannot start model-manager's threads: {e}"),
                )
            })?;
        let mut builder = ModelManager::builder()
            .device(device)
            .runtime(runtime.handle().clone());
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
        if let Some(callback) = options.progress {
            let userdata = UserData::new(options.progress_userdata);
            builder = builder.on_progress(move |progress| {
                let _guard = CallbackGuard::enter();
                let progress = mm_progress::from(progress);
                // SAFETY: the user gave this callback for this purpose and
                // promised that it and its userdata stay valid until destroy,
                // which joins the loader threads before returning.
                unsafe { callback(userdata.get(), &progress) };
            });
        }
        let inner = builder.build()?;
        let manager = mm_manager {
            inner: Arc::new(inner),
            runtime,
            tasks: TaskTracker::new(),
            closing: CancellationToken::new(),
            last_load: Mutex::new(None),
        };
        // SAFETY: non-NULL; the caller passes a writable `mm_manager *`.
        unsafe { out.write(into_handle(manager)) };
        Ok(())
    })
}

/// Shut the manager down and free it: cancels any load, waits for leases
/// (up to the drain timeout), unloads, delivers the remaining events and
/// load callbacks, and joins every thread. `manager` must not be used
/// afterwards. NULL is a no-op.
///
/// Leases still held stay valid; their memory is freed when they are
/// released. Callbacks delivered during destroy may still call functions on
/// this manager (reads work, commands fail with `MM_RESULT_SHUT_DOWN`). If a
/// callback does not return within 5 s, destroy returns `MM_RESULT_TIMEOUT`
/// and leaves the manager's bookkeeping allocated (the model itself is
/// unloaded) rather than free memory the callback may still use.
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
        // No transition can happen any more: subscriptions deliver what is
        // queued and end; load callbacks have their outcomes.
        shared.closing.cancel();
        shared.tasks.close();
        // The timer must be created inside the runtime.
        let drained = shared
            .runtime
            .block_on(async { tokio::time::timeout(TASK_DRAIN, shared.tasks.wait()).await });
        if drained.is_err() {
            // A callback is stuck and may still use the manager: leave it
            // allocated, with its runtime (whose thread runs the callback).
            return Err(Failure::new(
                mm_result::Timeout,
                "a callback did not return within 5 s; the manager was shut down but not freed",
            ));
        }
        // SAFETY: every task that could use the manager has finished and the
        // caller gave it up: this is the only reference left.
        let manager = unsafe { free_handle(manager) }.expect("checked non-NULL");
        let mm_manager {
            inner,
            runtime,
            last_load,
            ..
        } = *manager;
        drop(last_load);
        drop(inner);
        runtime.shutdown_timeout(TASK_DRAIN);
        Ok(())
    })
}
