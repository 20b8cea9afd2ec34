//! Subscriptions: a callback may end its own subscription.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use super::*;

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
