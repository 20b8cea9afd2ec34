//! The translation exercised through the exported functions, as C calls
//! them, on small models written by the tests.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::*;

/// Write a model folder: `model.safetensors` with `tensors` f32 tensors of
/// `elems` elements each (tensor `t` holds `t*1000 + i`), and a config.
fn write_model(dir: &Path, tensors: usize, elems: usize, sample_size: u64) {
    let mut header = String::from("{");
    let mut data = Vec::new();
    for t in 0..tensors {
        let start = data.len();
        for i in 0..elems {
            data.extend_from_slice(&((t * 1000 + i) as f32).to_le_bytes());
        }
        if t > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"t{t}\":{{\"dtype\":\"F32\",\"shape\":[{elems}],\"data_offsets\":[{start},{}]}}",
            data.len()
        ));
    }
    header.push('}');
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&data);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("model.safetensors"), file).unwrap();
    std::fs::write(
        dir.join("config.json"),
        format!("{{\"sample_size\":{sample_size},\"scheduler\":\"DDIM\",\"dims\":[1,2]}}"),
    )
    .unwrap();
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn path_c(p: &Path) -> CString {
    c(p.to_str().unwrap())
}

fn last_message() -> String {
    let mut buf = [0 as c_char; 512];
    let mut len = 0;
    // SAFETY: a live buffer and a live usize.
    let r = unsafe { mm_last_error_message(buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!(r, mm_result::Ok);
    // SAFETY: NUL-terminated by the call.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

struct Manager(*mut mm_manager);

impl Manager {
    fn new(chunk_size: usize) -> Self {
        // SAFETY: live locals; the handle is destroyed in Drop.
        unsafe {
            let mut options = std::mem::zeroed();
            assert_eq!(mm_manager_options_init(&mut options), mm_result::Ok);
            options.chunk_size = chunk_size;
            options.drain_timeout_ms = 200;
            let mut manager = ptr::null_mut();
            assert_eq!(mm_manager_new(&options, &mut manager), mm_result::Ok);
            Manager(manager)
        }
    }

    fn wait(&self) -> mm_state {
        let mut state = mm_state::Failed;
        // SAFETY: a live manager and a live local.
        let r = unsafe { mm_manager_wait(self.0, 10_000, &mut state) };
        assert_eq!(r, mm_result::Ok);
        state
    }

    fn load(&self, path: &Path) {
        let path = path_c(path);
        // SAFETY: a live manager and a live string.
        let r = unsafe { mm_manager_load(self.0, path.as_ptr(), None, ptr::null_mut()) };
        assert_eq!(r, mm_result::Ok);
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        // SAFETY: the handle from `mm_manager_new`, destroyed once.
        assert_eq!(unsafe { mm_manager_destroy(self.0) }, mm_result::Ok);
    }
}

type Outcomes = Mutex<Vec<(mm_result, mm_state, String)>>;

unsafe extern "C" fn on_done(
    userdata: *mut c_void,
    result: mm_result,
    snapshot: *const mm_snapshot,
) {
    // SAFETY: the test passes a live `Arc<Outcomes>` pointer and the library a
    // live snapshot.
    let (outcomes, snapshot) = unsafe { (&*(userdata as *const Outcomes), &*snapshot) };
    let message = if result == mm_result::Ok {
        String::new()
    } else {
        last_message()
    };
    outcomes
        .lock()
        .unwrap()
        .push((result, snapshot.state, message));
}

unsafe extern "C" fn on_event(userdata: *mut c_void, event: *const mm_event) {
    // SAFETY: the test passes a live `Mutex<Vec<_>>` and the library a live
    // event.
    let (events, event) = unsafe {
        (
            &*(userdata as *const Mutex<Vec<(mm_state, mm_state)>>),
            &*event,
        )
    };
    events.lock().unwrap().push((event.from, event.to));
    // Blocking functions refuse to run inside a callback.
    let mut state = mm_state::Idle;
    // SAFETY: NULL manager; refused before use.
    let r = unsafe { mm_manager_wait(ptr::null(), 0, &mut state) };
    assert_eq!(r, mm_result::NullArgument);
}

#[test]
fn lifecycle_through_the_c_api() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    write_model(&model, 3, 16, 64);
    let manager = Manager::new(0);

    let events: Arc<Mutex<Vec<(mm_state, mm_state)>>> = Arc::default();
    let mut sub = ptr::null_mut();
    // SAFETY: live manager, callback, userdata (outlives the subscription).
    let r = unsafe {
        mm_manager_subscribe(
            manager.0,
            Some(on_event),
            Arc::as_ptr(&events) as *mut c_void,
            &mut sub,
        )
    };
    assert_eq!(r, mm_result::Ok);

    let outcomes: Arc<Outcomes> = Arc::default();
    let path = path_c(&model);
    // SAFETY: live manager, string, callback and userdata.
    let r = unsafe {
        mm_manager_load(
            manager.0,
            path.as_ptr(),
            Some(on_done),
            Arc::as_ptr(&outcomes) as *mut c_void,
        )
    };
    assert_eq!(r, mm_result::Ok);
    assert_eq!(manager.wait(), mm_state::Ready);

    // SAFETY: live manager and locals throughout.
    unsafe {
        let mut snapshot = std::mem::zeroed::<mm_snapshot>();
        assert_eq!(mm_manager_snapshot(manager.0, &mut snapshot), mm_result::Ok);
        assert_eq!(snapshot.state, mm_state::Ready);
        assert_eq!(snapshot.progress.bytes_total, 3 * 16 * 4);
        assert_eq!(snapshot.progress.tensors_done, 3);
        assert_eq!(snapshot.error, mm_result::Ok);

        let mut size = 0;
        assert_eq!(mm_manager_sample_size(manager.0, &mut size), mm_result::Ok);
        assert_eq!(size, 64);

        let key = c("scheduler");
        let mut len = 0;
        let r = mm_manager_config(manager.0, key.as_ptr(), ptr::null_mut(), 0, &mut len);
        assert_eq!((r, len), (mm_result::BufferTooSmall, 6));
        let mut buf = vec![0 as c_char; len + 1];
        let r = mm_manager_config(
            manager.0,
            key.as_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut len,
        );
        assert_eq!(r, mm_result::Ok);
        assert_eq!(CStr::from_ptr(buf.as_ptr()).to_str(), Ok("\"DDIM\""));
        let key = c("nope");
        let r = mm_manager_config(
            manager.0,
            key.as_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut len,
        );
        assert_eq!(r, mm_result::NotFound);

        let mut lease = ptr::null_mut();
        assert_eq!(mm_manager_acquire(manager.0, &mut lease), mm_result::Ok);
        let mut count = 0;
        assert_eq!(mm_lease_tensor_count(lease, &mut count), mm_result::Ok);
        assert_eq!(count, 3);
        let name = c("t1");
        let mut index = 99;
        assert_eq!(
            mm_lease_tensor_find(lease, name.as_ptr(), &mut index),
            mm_result::Ok
        );
        let mut tensor = std::mem::zeroed::<mm_tensor>();
        assert_eq!(mm_lease_tensor(lease, index, &mut tensor), mm_result::Ok);
        assert_eq!(CStr::from_ptr(tensor.name).to_str(), Ok("t1"));
        assert_eq!(tensor.dtype, mm_dtype::F32);
        assert_eq!(std::slice::from_raw_parts(tensor.shape, tensor.rank), &[16]);
        assert_eq!(tensor.data_len, 64);
        let data = std::slice::from_raw_parts(tensor.data.cast::<f32>(), 16);
        assert_eq!(data[5], 1005.0);
        assert_eq!(mm_lease_tensor(lease, 3, &mut tensor), mm_result::NotFound);

        // A lease held across an unload.
        let mut leases = 0;
        let r = mm_manager_unload_timeout(manager.0, 50, &mut leases);
        assert_eq!((r, leases), (mm_result::LeasesOutstanding, 1));
        let mut state = mm_state::Idle;
        assert_eq!(mm_manager_state(manager.0, &mut state), mm_result::Ok);
        assert_eq!(state, mm_state::Unloading);
        // Still readable while held.
        assert_eq!(data[15], 1015.0);
        mm_lease_release(lease);
        assert_eq!(manager.wait(), mm_state::Idle);
        let mut bytes = 1;
        assert_eq!(
            mm_manager_resident_bytes(manager.0, &mut bytes),
            mm_result::Ok
        );
        assert_eq!(bytes, 0);

        let mut size = 0;
        assert_eq!(
            mm_manager_sample_size(manager.0, &mut size),
            mm_result::NotReady
        );
        assert_eq!(size, 0, "out-param untouched on failure");
        assert_eq!(mm_manager_cancel(manager.0), mm_result::InvalidTransition);
        assert!(last_message().contains("cannot cancel while idle"));
    }
    // Destroy delivers every queued event before it returns.
    drop(manager);
    // SAFETY: the subscription from above, ended once (after destroy is fine).
    unsafe { mm_subscription_unsubscribe(sub) };
    let outcomes = outcomes.lock().unwrap().clone();
    assert_eq!(
        outcomes,
        vec![(mm_result::Ok, mm_state::Ready, String::new())]
    );
    let events = events.lock().unwrap().clone();
    assert_eq!(
        events,
        vec![
            (mm_state::Idle, mm_state::Loading),
            (mm_state::Loading, mm_state::Ready),
            (mm_state::Ready, mm_state::Unloading),
            (mm_state::Unloading, mm_state::Idle),
        ]
    );
}

#[test]
fn corrupt_model_fails_with_code_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.safetensors");
    let mut bytes = 1000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"t\":");
    std::fs::write(&bad, bytes).unwrap();
    let manager = Manager::new(0);
    let outcomes: Arc<Outcomes> = Arc::default();
    let path = path_c(&bad);
    // SAFETY: live manager, string, callback and userdata.
    let r = unsafe {
        mm_manager_load(
            manager.0,
            path.as_ptr(),
            Some(on_done),
            Arc::as_ptr(&outcomes) as *mut c_void,
        )
    };
    assert_eq!(r, mm_result::Ok);
    assert_eq!(manager.wait(), mm_state::Failed);
    let outcomes = outcomes.lock().unwrap().clone();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].0, mm_result::InvalidModel);
    assert_eq!(outcomes[0].1, mm_state::Failed);
    assert!(
        outcomes[0].2.contains("bad.safetensors"),
        "{}",
        outcomes[0].2
    );
    // SAFETY: live manager and locals.
    unsafe {
        let mut snapshot = std::mem::zeroed::<mm_snapshot>();
        assert_eq!(mm_manager_snapshot(manager.0, &mut snapshot), mm_result::Ok);
        assert_eq!(snapshot.error, mm_result::InvalidModel);
        let mut len = 0;
        let r = mm_manager_error_message(manager.0, ptr::null_mut(), 0, &mut len);
        assert_eq!(r, mm_result::BufferTooSmall);
        let mut buf = vec![0 as c_char; len + 1];
        let r = mm_manager_error_message(manager.0, buf.as_mut_ptr(), buf.len(), &mut len);
        assert_eq!(r, mm_result::Ok);
        assert_eq!(
            CStr::from_ptr(buf.as_ptr()).to_str().unwrap(),
            outcomes[0].2
        );
        assert_eq!(mm_manager_reset(manager.0), mm_result::Ok);
    }
}

#[test]
fn switching_models_and_latest_wins() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    write_model(&a, 2, 8, 32);
    write_model(&b, 4, 8, 48);
    let manager = Manager::new(0);
    manager.load(&a);
    assert_eq!(manager.wait(), mm_state::Ready);
    manager.load(&b);
    assert_eq!(manager.wait(), mm_state::Ready);
    let mut size = 0;
    // SAFETY: live manager and local.
    assert_eq!(
        unsafe { mm_manager_sample_size(manager.0, &mut size) },
        mm_result::Ok
    );
    assert_eq!(size, 48);
}

#[test]
fn null_arguments_are_refused() {
    let manager = Manager::new(0);
    let m = manager.0;
    let mut state = mm_state::Idle;
    let mut n = 0usize;
    let mut u = 0u64;
    let path = c("x");
    // SAFETY: every pointer is NULL or live; NULLs are refused before use.
    unsafe {
        assert_eq!(
            mm_manager_options_init(ptr::null_mut()),
            mm_result::NullArgument
        );
        let mut out = ptr::null_mut();
        assert_eq!(
            mm_manager_new(ptr::null(), &mut out),
            mm_result::NullArgument
        );
        assert!(out.is_null());
        let mut options = std::mem::zeroed();
        mm_manager_options_init(&mut options);
        assert_eq!(
            mm_manager_new(&options, ptr::null_mut()),
            mm_result::NullArgument
        );
        options.device = ptr::null();
        assert_eq!(mm_manager_new(&options, &mut out), mm_result::NullArgument);
        let bad = CString::new(vec![0xc3u8, 0x28]).unwrap();
        options.device = bad.as_ptr();
        assert_eq!(mm_manager_new(&options, &mut out), mm_result::InvalidUtf8);
        let tpu = c("tpu");
        options.device = tpu.as_ptr();
        assert_eq!(
            mm_manager_new(&options, &mut out),
            mm_result::InvalidArgument
        );
        assert!(out.is_null());
        assert_eq!(mm_manager_destroy(ptr::null_mut()), mm_result::Ok);
        assert_eq!(
            mm_manager_load(ptr::null(), path.as_ptr(), None, ptr::null_mut()),
            mm_result::NullArgument
        );
        assert_eq!(
            mm_manager_load(m, ptr::null(), None, ptr::null_mut()),
            mm_result::NullArgument
        );
        assert_eq!(
            mm_manager_load(m, bad.as_ptr(), None, ptr::null_mut()),
            mm_result::InvalidUtf8
        );
        assert_eq!(
            mm_manager_wait(ptr::null(), 0, &mut state),
            mm_result::NullArgument
        );
        assert_eq!(
            mm_manager_wait(m, 0, ptr::null_mut()),
            mm_result::NullArgument
        );
        assert_eq!(mm_manager_cancel(ptr::null()), mm_result::NullArgument);
        assert_eq!(mm_manager_unload(ptr::null()), mm_result::NullArgument);
        assert_eq!(
            mm_manager_unload_timeout(ptr::null(), 0, &mut n),
            mm_result::NullArgument
        );
        assert_eq!(
            mm_manager_unload_timeout(m, 0, ptr::null_mut()),
            mm_result::NullArgument
        );
        assert_eq!(mm_manager_reset(ptr::null()), mm_result::NullArgument);
        assert_eq!(
            mm_manager_state(ptr::null(), &mut state),
            mm_result::NullArgument
        );
        assert_eq!(
            mm_manager_state(m, ptr::null_mut()),
            mm_result::NullArgument
        );
        let mut snapshot = std::mem::zeroed();
        assert_eq!(
            mm_manager_snapshot(ptr::null(), &mut snapshot),
            mm_result::NullArgument
        );
        assert_eq!(
            mm_manager_snapshot(m, ptr::null_mut()),
            mm_result::NullArgument
        );
        assert_eq!(
            mm_manager_sample_size(ptr::null(), &mut u),
            mm_result::NullArgument
        );
        assert_eq!(
            mm_manager_sample_size(m, ptr::null_mut()),
            mm_result::NullArgument
        );
        assert_eq!(
            mm_manager_resident_bytes(ptr::null(), &mut u),
            mm_result::NullArgument
        );
        assert_eq!(
            mm_manager_resident_bytes(m, ptr::null_mut()),
            mm_result::NullArgument
        );
        assert_eq!(
            mm_manager_outstanding_leases(ptr::null(), &mut n),
            mm_result::NullArgument
        );
        assert_eq!(
            mm_manager_outstanding_leases(m, ptr::null_mut()),
            mm_result::NullArgument
        );
        let key = c("k");
        let mut buf = [0 as c_char; 8];
        assert_eq!(
            mm_manager_config(ptr::null(), key.as_ptr(), buf.as_mut_ptr(), 8, &mut n),
            mm_result::NullArgument
        );
        assert_eq!(
            mm_manager_config(m, ptr::null(), buf.as_mut_ptr(), 8, &mut n),
            mm_result::NullArgument
        );
        assert_eq!(
            mm_manager_config(m, key.as_ptr(), buf.as_mut_ptr(), 8, ptr::null_mut()),
            mm_result::NullArgument
        );
        assert_eq!(
            mm_manager_error_message(ptr::null(), buf.as_mut_ptr(), 8, &mut n),
            mm_result::NullArgument
        );
        assert_eq!(
            mm_manager_error_message(m, buf.as_mut_ptr(), 8, ptr::null_mut()),
            mm_result::NullArgument
        );
        let mut sub = ptr::null_mut();
        assert_eq!(
            mm_manager_subscribe(ptr::null(), Some(on_event), ptr::null_mut(), &mut sub),
            mm_result::NullArgument
        );
        assert_eq!(
            mm_manager_subscribe(m, None, ptr::null_mut(), &mut sub),
            mm_result::NullArgument
        );
        assert_eq!(
            mm_manager_subscribe(m, Some(on_event), ptr::null_mut(), ptr::null_mut()),
            mm_result::NullArgument
        );
        assert!(sub.is_null());
        mm_subscription_unsubscribe(ptr::null_mut());
        let mut lease = ptr::null_mut();
        assert_eq!(
            mm_manager_acquire(ptr::null(), &mut lease),
            mm_result::NullArgument
        );
        assert_eq!(
            mm_manager_acquire(m, ptr::null_mut()),
            mm_result::NullArgument
        );
        assert_eq!(mm_manager_acquire(m, &mut lease), mm_result::NotReady);
        assert!(lease.is_null());
        mm_lease_release(ptr::null_mut());
        assert_eq!(
            mm_lease_tensor_count(ptr::null(), &mut n),
            mm_result::NullArgument
        );
        let mut name = ptr::null();
        assert_eq!(
            mm_lease_tensor_name(ptr::null(), 0, &mut name),
            mm_result::NullArgument
        );
        assert_eq!(
            mm_lease_tensor_find(ptr::null(), key.as_ptr(), &mut n),
            mm_result::NullArgument
        );
        let mut tensor = std::mem::zeroed();
        assert_eq!(
            mm_lease_tensor(ptr::null(), 0, &mut tensor),
            mm_result::NullArgument
        );
        assert_eq!(
            mm_last_error_message(buf.as_mut_ptr(), 8, ptr::null_mut()),
            mm_result::NullArgument
        );
        assert_eq!(
            mm_last_error_message(ptr::null_mut(), 8, &mut n),
            mm_result::NullArgument
        );
        assert!(last_message().contains("is NULL"));
        assert_eq!(
            CStr::from_ptr(mm_version()).to_str(),
            Ok(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(CStr::from_ptr(mm_state_name(2)).to_str(), Ok("ready"));
        assert_eq!(CStr::from_ptr(mm_state_name(9)).to_str(), Ok("unknown"));
    }
}

struct ProgressCtx {
    manager: AtomicPtr<mm_manager>,
    calls: AtomicUsize,
    destroy_refused: AtomicUsize,
}

unsafe extern "C" fn cancel_on_first_progress(userdata: *mut c_void, p: *const mm_progress) {
    // SAFETY: the test passes a live `ProgressCtx` and the library a live
    // progress.
    let (ctx, p) = unsafe { (&*(userdata as *const ProgressCtx), &*p) };
    assert!(p.bytes_done <= p.bytes_total);
    if ctx.calls.fetch_add(1, Ordering::SeqCst) == 0 {
        let manager = ctx.manager.load(Ordering::SeqCst);
        // SAFETY: the manager outlives its loads.
        assert_eq!(unsafe { mm_manager_cancel(manager) }, mm_result::Ok);
        // SAFETY: refused before anything is touched.
        if unsafe { mm_manager_destroy(manager) } == mm_result::CalledFromCallback {
            ctx.destroy_refused.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn cancel_from_the_first_progress_callback() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("big");
    write_model(&model, 4, 64 * 1024, 8);
    let ctx = ProgressCtx {
        manager: AtomicPtr::new(ptr::null_mut()),
        calls: AtomicUsize::new(0),
        destroy_refused: AtomicUsize::new(0),
    };
    // SAFETY: live locals; `ctx` outlives the manager.
    unsafe {
        let mut options = std::mem::zeroed::<mm_manager_options>();
        mm_manager_options_init(&mut options);
        options.chunk_size = 4096;
        options.progress = Some(cancel_on_first_progress);
        options.progress_userdata = &ctx as *const ProgressCtx as *mut c_void;
        let mut manager = ptr::null_mut();
        assert_eq!(mm_manager_new(&options, &mut manager), mm_result::Ok);
        ctx.manager.store(manager, Ordering::SeqCst);
        let manager = Manager(manager);
        let outcomes: Arc<Outcomes> = Arc::default();
        let path = path_c(&model);
        let r = mm_manager_load(
            manager.0,
            path.as_ptr(),
            Some(on_done),
            Arc::as_ptr(&outcomes) as *mut c_void,
        );
        assert_eq!(r, mm_result::Ok);
        assert_eq!(manager.wait(), mm_state::Idle);
        drop(manager);
        let outcomes = outcomes.lock().unwrap().clone();
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0].0, mm_result::Cancelled);
        assert_eq!(ctx.destroy_refused.load(Ordering::SeqCst), 1);
        // 256 chunks in the model; each reading thread stops at its next one.
        assert!(ctx.calls.load(Ordering::SeqCst) < 16, "cancel was late");
    }
}

#[test]
fn destroy_during_a_load() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("big");
    write_model(&model, 4, 64 * 1024, 8);
    let manager = Manager::new(4096);
    let outcomes: Arc<Outcomes> = Arc::default();
    let path = path_c(&model);
    // SAFETY: live manager, string, callback and userdata; the manager is
    // destroyed here and not used again.
    unsafe {
        let r = mm_manager_load(
            manager.0,
            path.as_ptr(),
            Some(on_done),
            Arc::as_ptr(&outcomes) as *mut c_void,
        );
        assert_eq!(r, mm_result::Ok);
        let raw = manager.0;
        std::mem::forget(manager);
        assert_eq!(mm_manager_destroy(raw), mm_result::Ok);
    }
    // The load's callback ran before destroy returned.
    let outcomes = outcomes.lock().unwrap().clone();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert!(
        matches!(outcomes[0].0, mm_result::Cancelled | mm_result::Ok),
        "{outcomes:?}"
    );
}

struct SelfUnsubscribe {
    sub: AtomicPtr<mm_subscription>,
    calls: AtomicUsize,
}

unsafe extern "C" fn unsubscribe_self(userdata: *mut c_void, _: *const mm_event) {
    // SAFETY: the test passes a live `SelfUnsubscribe`.
    let ctx = unsafe { &*(userdata as *const SelfUnsubscribe) };
    ctx.calls.fetch_add(1, Ordering::SeqCst);
    let sub = ctx.sub.swap(ptr::null_mut(), Ordering::SeqCst);
    // SAFETY: our own subscription, ended once (NULL afterwards): this must
    // neither deadlock nor let the callback run again.
    unsafe { mm_subscription_unsubscribe(sub) };
}

#[test]
fn a_callback_may_unsubscribe_itself() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    write_model(&model, 2, 8, 16);
    let manager = Manager::new(0);
    let ctx = SelfUnsubscribe {
        sub: AtomicPtr::new(ptr::null_mut()),
        calls: AtomicUsize::new(0),
    };
    let mut sub = ptr::null_mut();
    // SAFETY: live manager, callback and userdata (`ctx` outlives the
    // manager, destroyed below).
    let r = unsafe {
        mm_manager_subscribe(
            manager.0,
            Some(unsubscribe_self),
            &ctx as *const SelfUnsubscribe as *mut c_void,
            &mut sub,
        )
    };
    assert_eq!(r, mm_result::Ok);
    ctx.sub.store(sub, Ordering::SeqCst);
    manager.load(&model);
    assert_eq!(manager.wait(), mm_state::Ready);
    // Destroy delivers whatever is queued: nothing more for this callback.
    drop(manager);
    assert_eq!(ctx.calls.load(Ordering::SeqCst), 1);
    assert!(ctx.sub.load(Ordering::SeqCst).is_null());
}

#[test]
fn dtype_conversion_and_read_threads() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    write_model(&model, 2, 8, 16);
    // SAFETY: live locals; the manager is destroyed by `Manager`'s Drop.
    unsafe {
        let mut options = std::mem::zeroed::<mm_manager_options>();
        mm_manager_options_init(&mut options);
        assert_eq!(options.dtype, MM_DTYPE_KEEP);
        let mut manager = ptr::null_mut();
        options.dtype = mm_dtype::I64 as u32;
        assert_eq!(
            mm_manager_new(&options, &mut manager),
            mm_result::InvalidArgument
        );
        assert!(last_message().contains("options->dtype"));
        options.dtype = mm_dtype::F16 as u32;
        options.read_threads = 2;
        assert_eq!(mm_manager_new(&options, &mut manager), mm_result::Ok);
        let manager = Manager(manager);
        manager.load(&model);
        assert_eq!(manager.wait(), mm_state::Ready);
        let mut lease = ptr::null_mut();
        assert_eq!(mm_manager_acquire(manager.0, &mut lease), mm_result::Ok);
        let mut tensor = std::mem::zeroed::<mm_tensor>();
        assert_eq!(mm_lease_tensor(lease, 1, &mut tensor), mm_result::Ok);
        assert_eq!(tensor.dtype, mm_dtype::F16);
        assert_eq!(tensor.data_len, 8 * 2);
        let bits = std::slice::from_raw_parts(tensor.data.cast::<u16>(), 8);
        // 1003.0 in IEEE half precision.
        assert_eq!(bits[3], 0x63d6);
        mm_lease_release(lease);
    }
}
