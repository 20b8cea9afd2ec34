//! The commands: `mm_manager_load` and `mm_manager_wait` for its outcome,
//! `mm_manager_cancel`, `mm_manager_unload` (and its blocking variant with a
//! timeout), `mm_manager_reset`.

use std::ffi::{c_char, c_void};
use std::sync::PoisonError;
use std::time::Duration;

use tokio::sync::watch;

use super::{mm_manager, LastLoad};
use crate::callbacks::mm_load_callback;
use crate::ffi::{
    block_on, borrow, boundary, cstr, refuse_in_callback, set_last_error, CallbackGuard, Failure,
    Out, UserData,
};
use crate::types::{mm_snapshot, mm_state};
use crate::{mm_result, MM_TIMEOUT_INFINITE};

/// `None` for `MM_TIMEOUT_INFINITE`.
fn timeout_of(ms: u32) -> Option<Duration> {
    (ms != MM_TIMEOUT_INFINITE).then(|| Duration::from_millis(u64::from(ms)))
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
/// passed, whatever the callbacks are doing. On success `*state_out`
/// receives the settled state; on timeout the result is
/// `MM_RESULT_TIMEOUT`. Event callbacks are not waited for: they may still
/// be on their way. With `MM_TIMEOUT_INFINITE` it waits without a limit, by
/// design: also for a load callback that never returns.
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
        // On this thread's clock: a tokio timer would not fire while a
        // callback blocks the runtime's one worker thread.
        let state = block_on(settled, timeout_of(timeout_ms))
            .ok_or_else(|| Failure::from(model_manager::Error::Timeout))?;
        // SAFETY: non-NULL; the caller passes a writable `mm_state`.
        unsafe { out.write(state.into()) };
        Ok(())
    })
}

/// Cancel the load in flight (or the one waiting for an unload); its
/// callback gets `MM_RESULT_CANCELLED`. The state stays Loading until the
/// load has freed what it read, then goes to Idle (with 0 resident bytes):
/// `mm_manager_wait` waits for that. Other states refuse with
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
/// While loading, cancels the load instead: the state stays Loading until
/// the load has freed what it read, then goes to Idle. Idle and Failed
/// refuse with `MM_RESULT_INVALID_TRANSITION`. Use `mm_manager_wait` to wait
/// for Idle.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: `manager` is only borrowed for the call.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_unload(manager: *const mm_manager) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or a live manager, per the header.
        let manager = unsafe { borrow(manager, "manager") }?;
        // The unload takes effect in this call; the future only waits for
        // Idle, and reports a refusal (decided in the call too) when first
        // polled. Poll it once here, without waiting, for that refusal;
        // dropping the rest does not stop the unload.
        match block_on(manager.inner.unload(), Some(Duration::ZERO)) {
            Some(Err(error)) => Err(error.into()),
            Some(Ok(())) | None => Ok(()),
        }
    })
}

/// Unload and block until Idle, or until `timeout_ms` milliseconds have
/// passed, whatever the callbacks are doing (`MM_TIMEOUT_INFINITE`: no
/// limit, by design: until the last lease is released). If leases are still
/// held then, returns `MM_RESULT_LEASES_OUTSTANDING` and writes their number
/// to `*leases_out` (the one failure that writes an out-param); if none is
/// held but the memory is still being freed, returns `MM_RESULT_TIMEOUT`.
/// Either way the unload goes on and completes by itself. On success
/// `*leases_out` receives 0. While loading, cancels the load and waits
/// until it has freed what it read.
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
        // The unload takes effect in `unload()`; the wait runs on this
        // thread's clock (a tokio timer would not fire while a callback
        // blocks a runtime's one worker thread). Giving up leaves the unload
        // going, as the core's `unload_timeout` does, and says why as it
        // does.
        let outcome =
            block_on(inner.unload(), timeout_of(timeout_ms)).unwrap_or_else(|| {
                match inner.outstanding_leases() {
                    0 => Err(model_manager::Error::Timeout),
                    count => Err(model_manager::Error::LeasesOutstanding { count }),
                }
            });
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
