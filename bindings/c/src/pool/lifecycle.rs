//! A pool's life: `mm_pool_new` builds it (its threads start with the first
//! load), `mm_pool_destroy` shuts it down, bounded, and frees it.

use std::time::Duration;

use model_manager::{DeviceSpec, ModelPool};

use super::{mm_pool, mm_pool_options};
use crate::ffi::{
    borrow, boundary, cstr, free_handle, into_handle, refuse_in_callback, Failure, FfiResult, Out,
};
use crate::manager::target_dtype;
use crate::mm_result;
use crate::MM_TIMEOUT_INFINITE;

/// What `MM_TIMEOUT_INFINITE` means for the admission timeout: a wait the
/// core's clock can represent that no caller will see end.
const ADMISSION_FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How much longer than the drain timeout destroy lets the pool's shutdown
/// take (the pool promises the drain timeout plus a few seconds).
const SHUTDOWN_SLACK: Duration = Duration::from_secs(5);

/// Create a pool; `*pool_out` receives it. No model is known yet
/// (`mm_pool_add`) and nothing is loaded. `MM_RESULT_INVALID_ARGUMENT` for an
/// unknown device, a dtype other than F32, F16, BF16 or KEEP, `max_queue` or
/// `concurrent_loads` 0, or a budget of 0 where the free memory is unknown
/// (Metal).
///
/// Threads: any, concurrently. Callbacks: must not be called from them.
/// Ownership: `options` is read during the call only; the caller owns the
/// new pool and must free it with `mm_pool_destroy`.
#[no_mangle]
pub unsafe extern "C" fn mm_pool_new(
    options: *const mm_pool_options,
    pool_out: *mut *mut mm_pool,
) -> mm_result {
    boundary(|| {
        refuse_in_callback("mm_pool_new")?;
        // SAFETY: the caller passes NULL or a valid `mm_pool_options`.
        let options = unsafe { borrow(options, "options") }?;
        let out = Out::new(pool_out, "pool_out")?;
        // SAFETY: the header requires a NUL-terminated string or NULL.
        let device: DeviceSpec = unsafe { cstr(options.device, "options->device") }?.parse()?;
        let dtype = target_dtype(options.dtype)?;
        for (value, name) in [
            (options.max_queue, "options->max_queue"),
            (options.concurrent_loads, "options->concurrent_loads"),
        ] {
            if value == 0 {
                return Err(Failure::new(
                    mm_result::InvalidArgument,
                    format!("{name} must not be 0"),
                ));
            }
        }
        let drain_timeout = Duration::from_millis(u64::from(options.drain_timeout_ms));
        let admission_timeout = match options.admission_timeout_ms {
            MM_TIMEOUT_INFINITE => ADMISSION_FOREVER,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let mut builder = ModelPool::builder()
            .device(device)
            .drain_timeout(drain_timeout)
            .keep_alive(super::keep_alive(options.keep_alive_ms))
            .max_queue(options.max_queue as usize)
            .concurrent_loads(options.concurrent_loads as usize)
            .admission_timeout(admission_timeout)
            .retry_cooldown(Duration::from_millis(u64::from(options.retry_cooldown_ms)))
            .headroom(options.headroom)
            .host_budget(options.host_budget);
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
        let pool = mm_pool {
            inner: builder.build()?,
            drain_timeout,
        };
        // SAFETY: non-NULL; the caller passes a writable `mm_pool *`.
        unsafe { out.write(into_handle(pool)) };
        Ok(())
    })
}

/// Shut the pool down and free it: stops every load, waits for every
/// model's leases (up to the drain timeout), frees the models and joins the
/// pool's threads. `pool` must not be used afterwards. NULL is a no-op.
///
/// Leases still held stay valid (their tensors stay readable) and are
/// released with `mm_lease_release` as usual; their model's memory is freed
/// then.
///
/// Bounded: returns within the drain timeout plus about 7 s; if the
/// shutdown has not finished by the drain timeout plus 5 s, the pool is
/// freed anyway and destroy returns `MM_RESULT_TIMEOUT`. Calls blocked on
/// this pool in other threads must have returned first.
///
/// Threads: must not run concurrently with any other call on this pool.
/// Callbacks: must not be called from any model-manager callback; there it
/// returns `MM_RESULT_CALLED_FROM_CALLBACK` and does nothing.
/// Ownership: takes back the pool.
#[no_mangle]
pub unsafe extern "C" fn mm_pool_destroy(pool: *mut mm_pool) -> mm_result {
    boundary(|| {
        if pool.is_null() {
            return Ok(());
        }
        refuse_in_callback("mm_pool_destroy")?;
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Failure::new(
                mm_result::CalledFromCallback,
                "mm_pool_destroy must not be called on an async runtime thread",
            ));
        }
        // SAFETY: non-NULL; the caller passes a live pool from `mm_pool_new`
        // and does not use it again.
        let Some(pool) = (unsafe { free_handle(pool) }) else {
            return Ok(());
        };
        // On a thread of its own: the shutdown keeps its deadlines with
        // tokio timers, on a runtime of that thread's, and a runtime would
        // make this host thread keep a handle of itself for good.
        let worker = std::thread::Builder::new()
            .name("model-manager-pool-destroy".into())
            .spawn(move || shut_down(*pool));
        match worker {
            Ok(worker) => worker.join().unwrap_or_else(|payload| {
                Err(Failure::new(
                    mm_result::Panic,
                    format!(
                        "panic in model-manager: {}",
                        crate::ffi::panic_message(&*payload)
                    ),
                ))
            }),
            // The closure, and the pool with it, was dropped: that stops it
            // without waiting for leases.
            Err(e) => Err(Failure::new(
                mm_result::Runtime,
                format!("cannot start a thread to shut the pool down: {e}; it was dropped"),
            )),
        }
    })
}

/// Shut `pool` down (bounded by its drain timeout plus
/// [`SHUTDOWN_SLACK`]) and drop it.
fn shut_down(pool: mm_pool) -> FfiResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        // Dropping the pool stops it without waiting for leases.
        Err(e) => {
            drop(pool);
            return Err(Failure::new(
                mm_result::Runtime,
                format!("cannot start a runtime to shut the pool down: {e}; it was dropped"),
            ));
        }
    };
    let bound = pool.drain_timeout.saturating_add(SHUTDOWN_SLACK);
    let finished = runtime.block_on(async {
        tokio::time::timeout(bound, pool.inner.shutdown())
            .await
            .is_ok()
    });
    drop(pool);
    drop(runtime);
    if finished {
        Ok(())
    } else {
        Err(Failure::new(
            mm_result::Timeout,
            format!(
                "the pool's shutdown did not finish within {} ms; it was dropped",
                bound.as_millis()
            ),
        ))
    }
}
