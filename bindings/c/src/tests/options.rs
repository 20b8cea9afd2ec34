//! Options: dtype conversion and read threads.

use super::*;

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
