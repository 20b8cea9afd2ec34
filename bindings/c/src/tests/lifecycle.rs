//! A whole lifecycle through the C API, and destroy during a load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Condvar;
use std::time::{Duration, Instant};

use super::*;

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

    let outcomes = manager.load_reporting(&model);
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
        // The same tensor seen as device data: on the CPU, the host pointer.
        let mut on_device = std::mem::zeroed::<mm_device_tensor>();
        assert_eq!(
            mm_lease_tensor_on_device(lease, index, &mut on_device),
            mm_result::Ok
        );
        assert_eq!(on_device.kind, mm_device_kind::Cpu);
        assert_eq!(on_device.ordinal, 0);
        assert_eq!(on_device.address, tensor_data_address(lease, index));
        assert_eq!(on_device.data_len, 64);
        assert_eq!(on_device.dtype, mm_dtype::F32);
        assert_eq!(CStr::from_ptr(on_device.name).to_str(), Ok("t1"));
        assert_eq!(
            mm_lease_tensor_on_device(lease, 3, &mut on_device),
            mm_result::NotFound
        );

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
fn destroy_during_a_load() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("big");
    write_model(&model, 4, 64 * 1024, 8);
    let manager = Manager::new(4096);
    let outcomes = manager.load_reporting(&model);
    // SAFETY: the manager is destroyed here and not used again.
    unsafe {
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

/// A callback that blocks until the test opens it (or 20 s pass, so that a
/// failing test cannot hang), and says when it has started and returned.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    entered: AtomicBool,
    returned: AtomicBool,
}

impl Gate {
    fn pass(&self) {
        self.entered.store(true, Ordering::SeqCst);
        let open = self.open.lock().unwrap();
        let limit = Duration::from_secs(20);
        drop(self.opened.wait_timeout_while(open, limit, |open| !*open));
        self.returned.store(true, Ordering::SeqCst);
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    /// Poll `flag` for up to 20 s.
    fn until(flag: &AtomicBool) {
        let start = Instant::now();
        while !flag.load(Ordering::SeqCst) {
            assert!(start.elapsed().as_secs() < 20, "timed out");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

unsafe extern "C" fn blocking_load_callback(
    userdata: *mut c_void,
    _: mm_result,
    _: *const mm_snapshot,
) {
    // SAFETY: the test passes a live `Gate` that outlives the callback.
    unsafe { &*(userdata as *const Gate) }.pass();
}

#[test]
fn destroy_gives_up_on_a_stuck_load_callback() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    write_model(&model, 2, 8, 16);
    let manager = Manager::new(0);
    let gate = Gate::default();
    let path = path_c(&model);
    let raw = manager.0;
    std::mem::forget(manager);
    // SAFETY: a live manager, string, callback and userdata (`gate` outlives
    // the callback: the test waits for it to return); the manager is
    // destroyed once and not used again.
    unsafe {
        let userdata = &gate as *const Gate as *mut c_void;
        let r = mm_manager_load(raw, path.as_ptr(), Some(blocking_load_callback), userdata);
        assert_eq!(r, mm_result::Ok);
        Gate::until(&gate.entered);
        let start = Instant::now();
        let r = mm_manager_destroy(raw);
        let took = start.elapsed();
        gate.open();
        Gate::until(&gate.returned);
        // The binding waits 5 s for a callback in flight, whatever the
        // callback does on the runtime's one worker thread.
        assert_eq!(r, mm_result::Timeout, "after {took:?}");
        assert!(took.as_millis() < 6_500, "destroy took {took:?}");
    }
}

/// The host address `mm_lease_tensor` gives for tensor `index`.
///
/// # Safety
/// `lease` is a live lease.
unsafe fn tensor_data_address(lease: *const mm_lease, index: usize) -> u64 {
    // SAFETY: a live lease (the caller's promise) and a local out-param.
    unsafe {
        let mut tensor = std::mem::zeroed::<mm_tensor>();
        assert_eq!(mm_lease_tensor(lease, index, &mut tensor), mm_result::Ok);
        tensor.data as u64
    }
}
