//! The pool through the exported functions, as C calls them: a lifecycle
//! under a budget for one model, the refusals of the blocking functions
//! inside a callback, a dtype conversion, and the translation helpers.

use std::time::Duration;

use super::*;
use crate::ffi::CallbackGuard;

/// Every model below holds 4 KiB of f32 tensor data.
const MODEL: u64 = 4096;

struct Pool(*mut mm_pool);

impl Pool {
    /// A pool with a budget for `fit` models and a short drain timeout.
    fn new(fit: u64, dtype: u32) -> Self {
        // SAFETY: live locals; the handle is destroyed in Drop.
        unsafe {
            let mut options = std::mem::zeroed::<mm_pool_options>();
            assert_eq!(mm_pool_options_init(&mut options), mm_result::Ok);
            options.memory_budget = fit * MODEL + MODEL / 2;
            options.drain_timeout_ms = 200;
            options.retry_cooldown_ms = 0;
            options.dtype = dtype;
            let mut pool = ptr::null_mut();
            assert_eq!(mm_pool_new(&options, &mut pool), mm_result::Ok);
            Pool(pool)
        }
    }

    fn add(&self, id: &str, path: &Path) {
        let (id, path) = (c(id), path_c(path));
        // SAFETY: a live pool and live strings.
        let r = unsafe { mm_pool_add(self.0, id.as_ptr(), path.as_ptr()) };
        assert_eq!(r, mm_result::Ok);
    }

    fn acquire(&self, id: &str) -> Result<*mut mm_lease, mm_result> {
        let id = c(id);
        let mut lease = ptr::null_mut();
        // SAFETY: a live pool, string and out-param.
        match unsafe { mm_pool_acquire(self.0, id.as_ptr(), 10_000, &mut lease) } {
            mm_result::Ok => Ok(lease),
            r => Err(r),
        }
    }

    fn status(&self, id: &str) -> mm_pool_model_status {
        let id = c(id);
        // SAFETY: a live pool, string and out-param.
        unsafe {
            let mut status = std::mem::zeroed();
            assert_eq!(
                mm_pool_status(self.0, id.as_ptr(), &mut status),
                mm_result::Ok
            );
            status
        }
    }

    fn totals(&self) -> mm_pool_totals {
        // SAFETY: a live pool and out-param.
        unsafe {
            let mut totals = std::mem::zeroed();
            assert_eq!(mm_pool_stats(self.0, &mut totals), mm_result::Ok);
            totals
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: the handle from `mm_pool_new`, destroyed once.
        assert_eq!(unsafe { mm_pool_destroy(self.0) }, mm_result::Ok);
    }
}

/// Tensor count, version, and element 1 of tensor `t1`, of a lease.
fn read(lease: *const mm_lease) -> (usize, u64, f32) {
    // SAFETY: a live lease and live locals.
    unsafe {
        let (mut count, mut version, mut index) = (0, 0, 0);
        assert_eq!(mm_lease_tensor_count(lease, &mut count), mm_result::Ok);
        assert_eq!(mm_lease_version(lease, &mut version), mm_result::Ok);
        let name = c("t1");
        assert_eq!(
            mm_lease_tensor_find(lease, name.as_ptr(), &mut index),
            mm_result::Ok
        );
        let mut tensor = std::mem::zeroed::<mm_tensor>();
        assert_eq!(mm_lease_tensor(lease, index, &mut tensor), mm_result::Ok);
        assert_eq!(tensor.dtype, mm_dtype::F32);
        (count, version, *tensor.data.cast::<f32>().add(1))
    }
}

#[test]
fn pool_lifecycle_through_the_c_api() {
    let dir = tempfile::tempdir().unwrap();
    // Same size, told apart by their tensor counts.
    let (a, b, b2) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("b2"),
    );
    write_model(&a, 4, 256, 8);
    write_model(&b, 2, 512, 8);
    write_model(&b2, 8, 128, 8);
    let pool = Pool::new(1, MM_DTYPE_KEEP);
    pool.add("a", &a);
    pool.add("b", &b);

    let la = pool.acquire("a").unwrap();
    assert_eq!(read(la), (4, 1, 1001.0));
    let s = pool.status("a");
    assert_eq!((s.state, s.version, s.leases), (mm_state::Ready, 1, 1));
    assert!(s.charged_bytes >= MODEL && s.charged_bytes <= pool.totals().budget);
    // SAFETY: a lease from the pool, released once.
    unsafe { mm_lease_release(la) };
    assert_eq!(pool.status("a").leases, 0);

    // b evicts a.
    let lb = pool.acquire("b").unwrap();
    assert_eq!(read(lb), (2, 1, 1001.0));
    assert_eq!(pool.status("a").version, 0);
    let totals = pool.totals();
    assert_eq!((totals.evictions, totals.loads, totals.models), (1, 2, 2));

    // Both versions of b cannot fit: keep serving refuses; b serves on.
    let (id, path) = (c("b"), path_c(&b2));
    let mut version = 0;
    // SAFETY: live pool, strings and out-param.
    let r = unsafe {
        mm_pool_reload(
            pool.0,
            id.as_ptr(),
            path.as_ptr(),
            mm_reload_policy::KeepServing as u32,
            10_000,
            &mut version,
        )
    };
    assert_eq!((r, version), (mm_result::InsufficientMemory, 0));
    let s = pool.status("b");
    assert_eq!(
        (s.version, s.last_error),
        (1, mm_result::InsufficientMemory)
    );

    // Unload first: waits for b's lease, which stays readable.
    // SAFETY: as above.
    let r = unsafe {
        mm_pool_reload(
            pool.0,
            id.as_ptr(),
            path.as_ptr(),
            mm_reload_policy::UnloadFirst as u32,
            50,
            &mut version,
        )
    };
    assert_eq!((r, version), (mm_result::Timeout, 0));
    assert_eq!(read(lb), (2, 1, 1001.0));
    // SAFETY: a lease from the pool, released once.
    unsafe { mm_lease_release(lb) };
    let lb = pool.acquire("b").unwrap();
    assert_eq!(read(lb), (8, 3, 1001.0));

    // Unknown ids.
    assert_eq!(pool.acquire("c"), Err(mm_result::UnknownModel));
    assert!(last_message().contains("\"c\""));

    // The lease outlives the pool.
    drop(pool);
    assert_eq!(read(lb), (8, 3, 1001.0));
    // SAFETY: a lease from the pool, released once.
    unsafe { mm_lease_release(lb) };
}

#[test]
fn blocking_functions_refuse_inside_a_callback() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    write_model(&a, 4, 256, 8);
    let pool = Pool::new(1, MM_DTYPE_KEEP);
    pool.add("a", &a);
    let (id, path) = (c("a"), path_c(&a));
    {
        let _callback = CallbackGuard::enter();
        assert_eq!(pool.acquire("a"), Err(mm_result::CalledFromCallback));
        let mut version = 0;
        // SAFETY: live pool, strings and out-params throughout.
        unsafe {
            assert_eq!(
                mm_pool_load(pool.0, id.as_ptr(), 0),
                mm_result::CalledFromCallback
            );
            assert_eq!(
                mm_pool_unload(pool.0, id.as_ptr(), 0),
                mm_result::CalledFromCallback
            );
            assert_eq!(
                mm_pool_remove(pool.0, id.as_ptr(), 0),
                mm_result::CalledFromCallback
            );
            assert_eq!(
                mm_pool_reload(pool.0, id.as_ptr(), path.as_ptr(), 0, 0, &mut version),
                mm_result::CalledFromCallback
            );
            assert_eq!(mm_pool_destroy(pool.0), mm_result::CalledFromCallback);
            let mut options = std::mem::zeroed::<mm_pool_options>();
            assert_eq!(mm_pool_options_init(&mut options), mm_result::Ok);
            let mut other = ptr::null_mut();
            assert_eq!(
                mm_pool_new(&options, &mut other),
                mm_result::CalledFromCallback
            );
            // The non-blocking ones work.
            let mut lease = ptr::null_mut();
            assert_eq!(
                mm_pool_try_acquire(pool.0, id.as_ptr(), &mut lease),
                mm_result::NotReady
            );
            assert_eq!(mm_pool_pin(pool.0, id.as_ptr()), mm_result::Ok);
        }
    }
    // Nothing was started: no load, no reload, still known, still pinned.
    let s = pool.status("a");
    assert_eq!(
        (s.state, s.loading_version, s.waiters),
        (mm_state::Idle, 0, 0)
    );
    assert!(s.pinned);
    assert_eq!(pool.totals().loads, 0);
}

#[test]
fn dtype_conversion_in_a_pool() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    write_model(&a, 2, 8, 8);
    // SAFETY: live locals.
    unsafe {
        let mut options = std::mem::zeroed::<mm_pool_options>();
        mm_pool_options_init(&mut options);
        options.dtype = mm_dtype::I64 as u32;
        let mut pool = ptr::null_mut();
        assert_eq!(mm_pool_new(&options, &mut pool), mm_result::InvalidArgument);
        assert!(last_message().contains("options->dtype"));
    }
    let pool = Pool::new(4, mm_dtype::F16 as u32);
    pool.add("a", &a);
    let lease = pool.acquire("a").unwrap();
    // SAFETY: a live lease and locals.
    unsafe {
        let mut tensor = std::mem::zeroed::<mm_tensor>();
        assert_eq!(mm_lease_tensor(lease, 1, &mut tensor), mm_result::Ok);
        assert_eq!((tensor.dtype, tensor.data_len), (mm_dtype::F16, 16));
        // 1003.0 in IEEE half precision.
        assert_eq!(*tensor.data.cast::<u16>().add(3), 0x63d6);
    }
    // SAFETY: a lease from the pool, released once.
    unsafe { mm_lease_release(lease) };
}

#[test]
fn pool_errors_have_their_codes() {
    use model_manager::Error;
    let busy = Error::MemoryBusy {
        needed: 1,
        blocked_by: Vec::new(),
    };
    let cases = [
        (busy, mm_result::MemoryBusy, 18),
        (Error::QueueFull { limit: 2 }, mm_result::QueueFull, 19),
        (Error::UnknownModel("x".into()), mm_result::UnknownModel, 20),
    ];
    for (error, code, value) in cases {
        let failure = crate::ffi::Failure::from(error.clone());
        assert_eq!((failure.code, failure.code as u32), (code, value));
        assert_eq!(failure.message, error.to_string());
    }
}

#[test]
fn times_for_c() {
    assert_eq!(crate::pool::limit(MM_TIMEOUT_INFINITE), None);
    assert_eq!(crate::pool::limit(0), Some(Duration::ZERO));
    assert_eq!(crate::pool::keep_alive(MM_KEEP_ALIVE_FOREVER), None);
    assert_eq!(crate::pool::keep_alive(5), Some(Duration::from_millis(5)));
    assert_eq!(crate::pool::millis(Duration::from_millis(7)), 7);
    // A duration never reads as the "no time" value.
    assert_eq!(crate::pool::millis(Duration::MAX), MM_POOL_NO_TIME - 1);
}
