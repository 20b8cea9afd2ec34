//! The host's progress callback as the core calls it, on loader threads:
//! marked as a callback, counted while it runs, and no longer called once
//! `mm_manager_destroy` has closed the door. The count is what lets destroy
//! return without waiting for a progress callback that does not return, and
//! still free the manager only once that callback is done with it.

use std::ffi::c_void;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use model_manager::Progress;

use crate::ffi::{CallbackGuard, UserData};
use crate::types::mm_progress;

/// The calls of one manager's progress callback.
#[derive(Default)]
pub(super) struct ProgressCalls {
    state: Mutex<Calls>,
    /// Notified when `running` drops to 0.
    idle: Condvar,
}

#[derive(Default)]
struct Calls {
    running: usize,
    closed: bool,
}

/// One call in progress; counted down when dropped.
struct Running<'a>(&'a ProgressCalls);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut calls = self.0.lock();
        calls.running -= 1;
        if calls.running == 0 {
            self.0.idle.notify_all();
        }
    }
}

impl ProgressCalls {
    fn lock(&self) -> MutexGuard<'_, Calls> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The core's progress hook for the host's `callback`.
    pub(super) fn hook(
        self: &Arc<Self>,
        callback: unsafe extern "C" fn(*mut c_void, *const mm_progress),
        userdata: UserData,
    ) -> impl Fn(&Progress) + Send + Sync + 'static {
        let calls = Arc::clone(self);
        move |progress| {
            let Some(_running) = calls.start() else {
                return;
            };
            let _guard = CallbackGuard::enter();
            let progress = mm_progress::from(progress);
            // SAFETY: the user gave this callback for this purpose and
            // promised that it and its userdata stay valid until destroy
            // returns; destroy closes `calls` before it returns, so a call
            // that starts after that never reaches the callback, and one
            // already running is told to keep them valid until it returns.
            unsafe { callback(userdata.get(), &progress) };
        }
    }

    /// Count a call in, unless closed.
    fn start(&self) -> Option<Running<'_>> {
        let mut calls = self.lock();
        if calls.closed {
            return None;
        }
        calls.running += 1;
        Some(Running(self))
    }

    /// Start no more calls; whether one is still running.
    pub(super) fn close(&self) -> bool {
        let mut calls = self.lock();
        calls.closed = true;
        calls.running > 0
    }

    /// Wait, without a limit, until no call is running (for the thread that
    /// frees a manager destroy gave up on).
    pub(super) fn wait_idle(&self) {
        let mut calls = self.lock();
        while calls.running > 0 {
            calls = self
                .idle
                .wait(calls)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    use super::*;

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "C" fn count(_: *mut c_void, _: *const mm_progress) {
        CALLS.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn closed_calls_do_not_reach_the_callback() {
        let calls = Arc::new(ProgressCalls::default());
        let hook = calls.hook(count, UserData::new(std::ptr::null_mut()));
        let progress = Progress::default();
        hook(&progress);
        assert_eq!(CALLS.load(Ordering::SeqCst), 1);
        assert!(!calls.close(), "nothing running");
        hook(&progress);
        assert_eq!(CALLS.load(Ordering::SeqCst), 1);
        calls.wait_idle();
    }

    #[test]
    fn a_running_call_is_waited_for() {
        let calls = Arc::new(ProgressCalls::default());
        let running = calls.start().unwrap();
        assert!(calls.close(), "one running");
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                calls.wait_idle();
                tx.send(()).unwrap();
            });
            assert!(rx
                .recv_timeout(std::time::Duration::from_millis(50))
                .is_err());
            drop(running);
            rx.recv().unwrap();
        });
    }
}
