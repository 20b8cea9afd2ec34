//! Loads that fail, switch models, or are cancelled from a progress
//! callback.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use super::*;

#[test]
fn corrupt_model_fails_with_code_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.safetensors");
    let mut bytes = 1000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"t\":");
    std::fs::write(&bad, bytes).unwrap();
    let manager = Manager::new(0);
    let outcomes = manager.load_reporting(&bad);
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
        let outcomes = manager.load_reporting(&model);
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
