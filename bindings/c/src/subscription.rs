//! `mm_subscription`: every transition delivered to a C callback, in order,
//! from a task on the manager's runtime.
//!
//! The task calls the callback while holding the subscription's mutex, and
//! checks the `active` flag under it first; unsubscribe clears the flag and
//! then takes the mutex, so once it returns no call is running and none will
//! start. From inside the subscription's own callback (where the mutex is
//! already held by this thread) it only clears the flag: the task checks it
//! before every call.

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use model_manager::{RecvError, Subscription, TryRecvError};
use tokio_util::sync::CancellationToken;

use crate::callbacks::mm_event_callback;
use crate::ffi::{
    borrow, boundary, boundary_void, free_handle, into_handle, CallbackGuard, Failure, Out,
    UserData,
};
use crate::manager::mm_manager;
use crate::mm_result;
use crate::types::mm_event;

/// A subscription to a manager's transitions. Opaque; end it with
/// `mm_subscription_unsubscribe`.
pub struct mm_subscription {
    shared: Arc<SubShared>,
}

struct SubShared {
    /// Held while the callback runs.
    calling: Mutex<()>,
    /// Cleared by unsubscribe; checked under `calling` before every call.
    active: AtomicBool,
    /// Wakes the task when unsubscribed.
    stop: CancellationToken,
}

thread_local! {
    /// The subscription whose callback this thread is running, if any.
    static CURRENT: Cell<*const SubShared> = const { Cell::new(std::ptr::null()) };
}

struct Delivery {
    shared: Arc<SubShared>,
    callback: unsafe extern "C" fn(*mut c_void, *const mm_event),
    userdata: UserData,
    missed: u64,
}

impl Delivery {
    /// Call the callback with `event`; `false` once unsubscribed.
    fn deliver(&mut self, event: &model_manager::StateEvent) -> bool {
        let _calling = self
            .shared
            .calling
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !self.shared.active.load(Ordering::Acquire) {
            return false;
        }
        let event = mm_event::new(event, std::mem::take(&mut self.missed));
        let _guard = CallbackGuard::enter();
        let previous = CURRENT.with(|c| c.replace(Arc::as_ptr(&self.shared)));
        // SAFETY: the user's callback and userdata, valid until unsubscribe
        // returns (the header's contract), which cannot happen while we hold
        // `calling`; `event` lives across the call.
        unsafe { (self.callback)(self.userdata.get(), &event) };
        CURRENT.with(|c| c.set(previous));
        self.shared.active.load(Ordering::Acquire)
    }

    async fn run(mut self, mut events: Subscription, closing: CancellationToken) {
        loop {
            tokio::select! {
                biased;
                _ = self.shared.stop.cancelled() => return,
                received = events.recv() => match received {
                    Ok(event) => {
                        if !self.deliver(&event) {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(n)) => self.missed += n,
                    Err(RecvError::Closed) => return,
                },
                _ = closing.cancelled() => {
                    // The manager is shut down: no transition can come after
                    // those already queued.
                    loop {
                        match events.try_recv() {
                            Ok(event) => {
                                if !self.deliver(&event) {
                                    return;
                                }
                            }
                            Err(TryRecvError::Lagged(n)) => self.missed += n,
                            Err(TryRecvError::Empty | TryRecvError::Closed) => return,
                        }
                    }
                }
            }
        }
    }
}

/// Call `callback` for every transition from now on, in order, each with
/// the snapshot right after it; `*subscription_out` receives the
/// subscription. A subscriber that falls more than 1024 transitions behind
/// is told how many it missed (`mm_event.missed`).
///
/// The callback runs on the manager's worker thread, one call at a time, in
/// order; it must return quickly (it holds up other callbacks) and must not
/// block. It may call any function except `mm_manager_destroy`,
/// `mm_manager_wait`, `mm_manager_unload_timeout` and `mm_manager_new`
/// (which return `MM_RESULT_CALLED_FROM_CALLBACK`); it may unsubscribe
/// itself. Delivery is asynchronous: `mm_manager_wait` may return before
/// the callback has seen the transition that ended the wait. Every event
/// queued, including those of the shutdown, is delivered before
/// `mm_manager_destroy` returns.
///
/// Threads: any, concurrently. Callbacks: may be called from them.
/// Ownership: the caller owns the subscription and must end it with
/// `mm_subscription_unsubscribe` (also after the manager is destroyed);
/// `userdata` must stay valid until then.
#[no_mangle]
pub unsafe extern "C" fn mm_manager_subscribe(
    manager: *const mm_manager,
    callback: mm_event_callback,
    userdata: *mut c_void,
    subscription_out: *mut *mut mm_subscription,
) -> mm_result {
    boundary(|| {
        // SAFETY: NULL or a live manager, per the header.
        let manager = unsafe { borrow(manager, "manager") }?;
        let callback = callback.ok_or_else(|| Failure::null("callback"))?;
        let out = Out::new(subscription_out, "subscription_out")?;
        let shared = Arc::new(SubShared {
            calling: Mutex::new(()),
            active: AtomicBool::new(true),
            stop: CancellationToken::new(),
        });
        let delivery = Delivery {
            shared: shared.clone(),
            callback,
            userdata: UserData::new(userdata),
            missed: 0,
        };
        // Subscribe now, so no transition after this call is missed.
        let events = manager.inner.subscribe();
        manager.tasks.spawn_on(
            delivery.run(events, manager.closing.clone()),
            manager.runtime(),
        );
        // SAFETY: non-NULL; the caller passes a writable `mm_subscription *`.
        unsafe { out.write(into_handle(mm_subscription { shared })) };
        Ok(())
    })
}

/// End a subscription and free it. Once this returns, its callback is not
/// running and is never called again (from inside its own callback: never
/// called again after the current call). NULL is a no-op. Works before or
/// after the manager is destroyed.
///
/// If this subscription's callback is running on another thread, waits for
/// it to return, without a limit: by design, since that is what makes "never
/// called again" hold (callbacks must return quickly).
///
/// Threads: any, but not concurrently for the same subscription. Callbacks:
/// may be called from them; from inside another callback, it waits for a
/// call of this subscription's callback in progress on another thread.
/// Ownership: takes back the subscription.
#[no_mangle]
pub unsafe extern "C" fn mm_subscription_unsubscribe(subscription: *mut mm_subscription) {
    boundary_void(|| {
        // SAFETY: NULL or a subscription from `mm_manager_subscribe` that the
        // caller does not use again.
        let Some(subscription) = (unsafe { free_handle(subscription) }) else {
            return;
        };
        unsubscribe(&subscription.shared);
    })
}

fn unsubscribe(shared: &Arc<SubShared>) {
    shared.active.store(false, Ordering::Release);
    shared.stop.cancel();
    let own = CURRENT.with(|c| std::ptr::eq(c.get(), Arc::as_ptr(shared)));
    if !own {
        // Wait for a call in progress; later ones see `active` cleared.
        drop(
            shared
                .calling
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
    }
}
