//! `mm_manager`: the opaque manager handle and its functions.
//!
//! Each manager owns a small multi-thread tokio runtime (one worker thread,
//! a few blocking threads for reads) and hands its handle to the core with
//! `ModelManager::builder().runtime(..)`. Callbacks run on those threads.

use std::ffi::{c_char, c_void};
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use model_manager::{DeviceSpec, LoadHandle, ModelManager};
use tokio::runtime::{Builder, Runtime};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ffi::{
    borrow, boundary, check_buf, copy_str_out, cstr, free_handle, into_handle, refuse_in_callback,
    set_last_error, CallbackGuard, Failure, FfiResult, Out, UserData,
};
use crate::types::{
    mm_dtype, mm_load_callback, mm_manager_options, mm_progress, mm_snapshot, mm_state,
    MM_DTYPE_KEEP,
};
use crate::{mm_result, MM_TIMEOUT_INFINITE};

/// How long destroy waits for the binding's own tasks (callbacks in flight)
/// and then for the runtime's threads.
const TASK_DRAIN: Duration = Duration::from_secs(5);

/// A model manager: loads one model at a time, hands it out under leases.
///
/// Create with `mm_manager_new`, free with `mm_manager_destroy`. Opaque.
pub struct mm_manager {
    pub(crate) inner: Arc<ModelManager>,
    runtime: Runtime,
    /// The binding's tasks: load callbacks and subscriptions.
    pub(crate) tasks: TaskTracker,
    /// Cancelled by destroy: subscriptions deliver what is queued and stop.
    pub(crate) closing: CancellationToken,
    /// The latest load requested through this handle, for `mm_manager_wait`.
    last_load: Mutex<Option<LastLoad>>,
}

/// A load `mm_manager_wait` waits for: its outcome, then its callback.
#[derive(Clone)]
struct LastLoad {
    handle: LoadHandle,
    /// Becomes `true` once its callback has returned (`None`: no callback).
    callback_done: Option<watch::Receiver<bool>>,
}

impl mm_manager {
    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }
}

/// `None` for `MM_TIMEOUT_INFINITE`.
fn timeout_of(ms: u32) -> Option<Duration> {
    (ms != MM_TIMEOUT_INFINITE).then(|| Duration::from_millis(u64::from(ms)))
}

/// Poll `future` once, without blocking: what it does before its first
/// await happens now; the rest (if any) is dropped, which the core's
/// cancel-safe futures allow.
fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// Fill `*options` with the defaults: device `"cpu"`, the default memory
/// budget, 4 MiB chunks, the default read threads, dtypes kept, 5 s drain
/// timeout, no progress callback.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `options` is the caller's; `options->device` is set to a
/// static string.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_options_init(options: *mut mm_manager_options) -> mm_result {
    boundary(|| {
        let out = Out::new(options, "options")?;
        // SAFETY: non-NULL; the caller passes a writable `mm_manager_options`.
        unsafe {
            out.write(mm_manager_options {
                device: c"cpu".as_ptr(),
                memory_budget: 0,
                chunk_size: 0,
                read_threads: 0,
                dtype: MM_DTYPE_KEEP,
                drain_timeout_ms: 0,
                progress: None,
                progress_userdata: std::ptr::null_mut(),
            })
        };
        Ok(())
    })
}

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

/// Start loading the model at `path` (a `.safetensors` file or a model
/// folder) and return at once. Latest request wins: loading another model
/// while one loads cancels it (its callback gets `MM_RESULT_SUPERSEDED`);
/// while one is ready, unloads it first (waiting for its leases). Loading the
/// model that is already ready or loading does not reload it.
///
/// `on_done` may be NULL. If given and this returns `MM_RESULT_OK`, it is
/// called exactly once, on the manager's worker thread (never inside this
/// call), with `MM_RESULT_OK` and the Ready snapshot, or with why the load
/// did not finish (`MM_RESULT_CANCELLED`, `MM_RESULT_SUPERSEDED`, a load
/// error: `mm_last_error_message` on that thread, during the callback, gives
/// its text) and the manager's snapshot at that moment. It is called before
/// `mm_manager_destroy` returns.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `path` is read during the call only. `userdata` is passed
/// verbatim to `on_done` on another thread; it must stay valid until then.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_load(
    manager: *const mm_manager,
    path: *const c_char,
    on_done: mm_load_callback,
    userdata: *mut c_void,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or a live manager, per the header.
        let manager = unsafe { borrow(manager, "manager") }?;
        // SAFETY: NULL or a NUL-terminated string, per the header.
        let path = unsafe { cstr(path, "path") }?;
        // Held across the core's load, so that the latest load here is also
        // the latest one the core saw.
        let mut last_load = manager
            .last_load
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let handle = manager.inner.load(path)?;
        let mut last = LastLoad {
            handle: handle.clone(),
            callback_done: None,
        };
        if let Some(callback) = on_done {
            let (done, callback_done) = watch::channel(false);
            last.callback_done = Some(callback_done);
            let userdata = UserData::new(userdata);
            let inner = manager.inner.clone();
            manager.tasks.spawn_on(
                async move {
                    let outcome = handle.wait().await;
                    let _guard = CallbackGuard::enter();
                    let (result, snapshot) = match outcome {
                        Ok(snapshot) => (mm_result::Ok, mm_snapshot::from(&snapshot)),
                        Err(error) => {
                            set_last_error(error.to_string());
                            let snapshot = mm_snapshot::from(&inner.snapshot());
                            (mm_result::from(error.code()), snapshot)
                        }
                    };
                    // SAFETY: the user's callback and userdata, valid until
                    // called (the header's contract); `snapshot` lives across
                    // the call.
                    unsafe { callback(userdata.get(), result, &snapshot) };
                    done.send_replace(true);
                },
                manager.runtime(),
            );
        }
        *last_load = Some(last);
        Ok(())
    })
}

/// Block until no load or unload is in flight (the latest load requested
/// through this handle has ended, its load callback has returned, and the
/// state is Idle, Ready or Failed), or until `timeout_ms` milliseconds have
/// passed (`MM_TIMEOUT_INFINITE`: no limit). On success `*state_out`
/// receives the settled state; on timeout the result is
/// `MM_RESULT_TIMEOUT`. Event callbacks are not waited for: they may still
/// be on their way.
///
/// Threads: any, concurrently. Callbacks: must not be called from them
/// (returns `MM_RESULT_CALLED_FROM_CALLBACK`).
/// Ownership: `manager` is only borrowed for the call; out-params are the
/// caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_wait(
    manager: *const mm_manager,
    timeout_ms: u32,
    state_out: *mut mm_state,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or a live manager, per the header.
        let manager = unsafe { borrow(manager, "manager") }?;
        let out = Out::new(state_out, "state_out")?;
        refuse_in_callback("mm_manager_wait")?;
        let load = manager
            .last_load
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let inner = &manager.inner;
        let settled = async {
            if let Some(LastLoad {
                handle,
                callback_done,
            }) = load
            {
                // A switch publishes Idle between the unload and the next
                // load: wait for the load itself first, then its callback.
                let _ = handle.wait().await;
                if let Some(mut done) = callback_done {
                    // An error means the task is gone (runtime shut down).
                    let _ = done.wait_for(|done| *done).await;
                }
            }
            inner.settled().await
        };
        let state = match timeout_of(timeout_ms) {
            None => manager.runtime.block_on(settled),
            Some(limit) => manager
                .runtime
                .block_on(async { tokio::time::timeout(limit, settled).await })
                .map_err(|_| Failure::from(model_manager::Error::Timeout))?,
        };
        // SAFETY: non-NULL; the caller passes a writable `mm_state`.
        unsafe { out.write(state.into()) };
        Ok(())
    })
}

/// Cancel the load in flight (or the one waiting for an unload); its
/// callback gets `MM_RESULT_CANCELLED`. Other states refuse with
/// `MM_RESULT_INVALID_TRANSITION`. Does not block.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `manager` is only borrowed for the call.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_cancel(manager: *const mm_manager) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or a live manager, per the header.
        let manager = unsafe { borrow(manager, "manager") }?;
        Ok(manager.inner.cancel()?)
    })
}

/// Start unloading and return at once: Ready goes to Unloading, which
/// waits for every lease to be released, frees the memory and goes to Idle.
/// While loading, cancels the load instead. Idle and Failed refuse with
/// `MM_RESULT_INVALID_TRANSITION`. Use `mm_manager_wait` to wait for Idle.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `manager` is only borrowed for the call.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_unload(manager: *const mm_manager) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or a live manager, per the header.
        let manager = unsafe { borrow(manager, "manager") }?;
        let _enter = manager.runtime().enter();
        match poll_once(manager.inner.unload()) {
            Some(Err(error)) => Err(error.into()),
            // Started (or already done); the rest happens on the runtime.
            Some(Ok(())) | None => Ok(()),
        }
    })
}

/// Unload and block until Idle, or until `timeout_ms` milliseconds have
/// passed (`MM_TIMEOUT_INFINITE`: no limit). If leases are still held then,
/// returns `MM_RESULT_LEASES_OUTSTANDING` and writes their number to
/// `*leases_out` (the one failure that writes an out-param); the unload goes
/// on and completes when the last is released. On success `*leases_out`
/// receives 0. While loading, cancels the load.
///
/// Threads: any, concurrently. Callbacks: must not be called from them
/// (returns `MM_RESULT_CALLED_FROM_CALLBACK`).
/// Ownership: `manager` is only borrowed for the call; out-params are the
/// caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_unload_timeout(
    manager: *const mm_manager,
    timeout_ms: u32,
    leases_out: *mut usize,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or a live manager, per the header.
        let manager = unsafe { borrow(manager, "manager") }?;
        let out = Out::new(leases_out, "leases_out")?;
        refuse_in_callback("mm_manager_unload_timeout")?;
        let inner = &manager.inner;
        let outcome = match timeout_of(timeout_ms) {
            None => manager.runtime.block_on(inner.unload()),
            Some(limit) => manager.runtime.block_on(inner.unload_timeout(limit)),
        };
        match outcome {
            Ok(()) => {
                // SAFETY: non-NULL; the caller passes a writable `size_t`.
                unsafe { out.write(0) };
                Ok(())
            }
            Err(model_manager::Error::LeasesOutstanding { count }) => {
                // SAFETY: as above; the documented exception to "written
                // only on success".
                unsafe { out.write(count) };
                Err(model_manager::Error::LeasesOutstanding { count }.into())
            }
            Err(error) => Err(error.into()),
        }
    })
}

/// Acknowledge a failure: Failed goes to Idle. Other states refuse with
/// `MM_RESULT_INVALID_TRANSITION`. (A new load from Failed needs no reset.)
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `manager` is only borrowed for the call.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_reset(manager: *const mm_manager) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or a live manager, per the header.
        let manager = unsafe { borrow(manager, "manager") }?;
        Ok(manager.inner.reset()?)
    })
}

/// The current state, into `*state_out`. Lock-free, never stale.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `manager` is only borrowed for the call; out-params are the
/// caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_state(
    manager: *const mm_manager,
    state_out: *mut mm_state,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or a live manager, per the header.
        let manager = unsafe { borrow(manager, "manager") }?;
        let out = Out::new(state_out, "state_out")?;
        let state = manager.inner.current_state();
        // SAFETY: non-NULL; the caller passes a writable `mm_state`.
        unsafe { out.write(state.into()) };
        Ok(())
    })
}

/// The current snapshot (state, generation, live progress, error code), into
/// `*snapshot_out`. Lock-free.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `manager` is only borrowed for the call; out-params are the
/// caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_snapshot(
    manager: *const mm_manager,
    snapshot_out: *mut mm_snapshot,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or a live manager, per the header.
        let manager = unsafe { borrow(manager, "manager") }?;
        let out = Out::new(snapshot_out, "snapshot_out")?;
        let snapshot = mm_snapshot::from(&manager.inner.snapshot());
        // SAFETY: non-NULL; the caller passes a writable `mm_snapshot`.
        unsafe { out.write(snapshot) };
        Ok(())
    })
}

/// In Failed, copy the text of why the last load failed (it names the file
/// and the problem) into `buf`, NUL-terminated, and its length (without the
/// NUL) into `*len_out`. Outside Failed: `MM_RESULT_NOT_FOUND`. If `len` is
/// too small: `MM_RESULT_BUFFER_TOO_SMALL`, nothing copied, and `*len_out`
/// receives the length needed (allocate `*len_out + 1`). `buf` may be NULL
/// when `len` is 0.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `manager` is only borrowed for the call; `buf` and `len_out`
/// are the caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_error_message(
    manager: *const mm_manager,
    buf: *mut c_char,
    len: usize,
    len_out: *mut usize,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or a live manager, per the header.
        let manager = unsafe { borrow(manager, "manager") }?;
        check_buf(buf, len, len_out)?;
        let message = manager
            .inner
            .snapshot()
            .error
            .map(|e| e.to_string())
            .ok_or_else(|| Failure::new(mm_result::NotFound, "no load has failed"))?;
        // SAFETY: `buf` is NULL or writable for `len` bytes and `len_out`
        // writable, per the header.
        unsafe { copy_str_out(&message, buf, len, len_out) }
    })
}

/// `sample_size` from the ready model's config (for a diffusers pipeline,
/// the denoiser's), into `*sample_size_out`. `MM_RESULT_NOT_READY` unless
/// Ready; `MM_RESULT_NOT_FOUND` if the config has none.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `manager` is only borrowed for the call; out-params are the
/// caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_sample_size(
    manager: *const mm_manager,
    sample_size_out: *mut u64,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or a live manager, per the header.
        let manager = unsafe { borrow(manager, "manager") }?;
        let out = Out::new(sample_size_out, "sample_size_out")?;
        let info = ready_info(manager)?;
        let size = info
            .sample_size
            .ok_or_else(|| Failure::new(mm_result::NotFound, "the config has no sample_size"))?;
        // SAFETY: non-NULL; the caller passes a writable `uint64_t`.
        unsafe { out.write(size) };
        Ok(())
    })
}

fn ready_info(manager: &mm_manager) -> FfiResult<model_manager::PipelineInfo> {
    manager
        .inner
        .info()
        .ok_or_else(|| model_manager::Error::NotReady(manager.inner.current_state()).into())
}

/// Copy the value of the top-level `key` of the ready model's config
/// (`config.json`, or `model_index.json` for a pipeline) as compact JSON
/// (e.g. `64`, `"DDIM"`, `[1,2]`) into `buf`, NUL-terminated, and its
/// length (without the NUL) into `*len_out`. `MM_RESULT_NOT_READY` unless
/// Ready; `MM_RESULT_NOT_FOUND` without such a key. If `len` is too small:
/// `MM_RESULT_BUFFER_TOO_SMALL`, nothing copied, and `*len_out` receives the
/// length needed (allocate `*len_out + 1`). `buf` may be NULL when `len` is
/// 0.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `manager` is only borrowed for the call; `key` is read during
/// the call only; `buf` and `len_out` are the caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_config(
    manager: *const mm_manager,
    key: *const c_char,
    buf: *mut c_char,
    len: usize,
    len_out: *mut usize,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or a live manager, per the header.
        let manager = unsafe { borrow(manager, "manager") }?;
        // SAFETY: NULL or a NUL-terminated string, per the header.
        let key = unsafe { cstr(key, "key") }?;
        check_buf(buf, len, len_out)?;
        let info = ready_info(manager)?;
        let value = info
            .config
            .as_ref()
            .and_then(|config| config.get(key))
            .ok_or_else(|| {
                Failure::new(
                    mm_result::NotFound,
                    format!("the config has no key {key:?}"),
                )
            })?;
        let json = serde_json::to_string(value)
            .map_err(|e| Failure::new(mm_result::InvalidConfig, e.to_string()))?;
        // SAFETY: `buf` is NULL or writable for `len` bytes and `len_out`
        // writable, per the header.
        unsafe { copy_str_out(&json, buf, len, len_out) }
    })
}

/// Bytes of model memory resident on the device right now, into
/// `*bytes_out`.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `manager` is only borrowed for the call; out-params are the
/// caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_resident_bytes(
    manager: *const mm_manager,
    bytes_out: *mut u64,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or a live manager, per the header.
        let manager = unsafe { borrow(manager, "manager") }?;
        let out = Out::new(bytes_out, "bytes_out")?;
        let bytes = manager.inner.resident_bytes();
        // SAFETY: non-NULL; the caller passes a writable `uint64_t`.
        unsafe { out.write(bytes) };
        Ok(())
    })
}

/// Leases held (on the ready model, or on the one unloading), into
/// `*leases_out`.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `manager` is only borrowed for the call; out-params are the
/// caller's memory.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_outstanding_leases(
    manager: *const mm_manager,
    leases_out: *mut usize,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or a live manager, per the header.
        let manager = unsafe { borrow(manager, "manager") }?;
        let out = Out::new(leases_out, "leases_out")?;
        let leases = manager.inner.outstanding_leases();
        // SAFETY: non-NULL; the caller passes a writable `size_t`.
        unsafe { out.write(leases) };
        Ok(())
    })
}
