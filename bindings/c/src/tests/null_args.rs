//! NULL and invalid arguments.

use super::*;

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
