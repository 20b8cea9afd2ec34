//! Waiting on a C host's thread with a deadline that holds whatever the
//! manager's threads are doing.
//!
//! A tokio timer fires only when a worker thread of its runtime drives the
//! timer, and a manager's runtimes have one worker thread each: the
//! callbacks' one, which a blocking load or event callback holds, and the
//! core's. So the blocking functions do not rely on either: they poll their
//! futures here, on the calling thread, waiting between wakes on a
//! condition variable with a timeout, so the deadline is the host thread's
//! own.
//! The futures waited on (the core's watch channels, a task tracker) need
//! no runtime to be polled.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// Wakes the waiting thread. A flag and a condition variable rather than
/// `std::thread::park`: that needs `std::thread::current()`, whose handle a
/// C host's main thread would keep for good (valgrind reports it).
#[derive(Default)]
struct Signal {
    woken: Mutex<bool>,
    cond: Condvar,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        *self.woken.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.cond.notify_one();
    }
}

/// Run `future` to completion on this thread; `None` if `limit` (from now)
/// passes first, and then the future is dropped. `limit` `None`: no limit.
pub fn block_on<F: Future>(future: F, limit: Option<Duration>) -> Option<F::Output> {
    // `None` inside: no limit, or one too far away to represent.
    let deadline = limit.and_then(|limit| Instant::now().checked_add(limit));
    let signal = Arc::new(Signal::default());
    let waker = Waker::from(Arc::clone(&signal));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return Some(output);
        }
        let mut woken = signal.woken.lock().unwrap_or_else(PoisonError::into_inner);
        while !*woken {
            woken = match deadline {
                None => signal
                    .cond
                    .wait(woken)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    signal
                        .cond
                        .wait_timeout(woken, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
        *woken = false;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    use std::thread;

    use super::*;

    /// Ready once `flag` is set; wakes are registered in `waker`.
    struct Flag<'a> {
        flag: &'a AtomicBool,
        waker: &'a Mutex<Option<Waker>>,
    }

    impl Future for Flag<'_> {
        type Output = u32;

        fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            *self
                .waker
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(cx.waker().clone());
            if self.flag.load(Ordering::SeqCst) {
                Poll::Ready(7)
            } else {
                Poll::Pending
            }
        }
    }

    #[test]
    fn ready_at_once() {
        assert_eq!(block_on(async { 5 }, Some(Duration::ZERO)), Some(5));
        assert_eq!(block_on(async { 6 }, None), Some(6));
    }

    #[test]
    fn woken_from_another_thread() {
        let flag = AtomicBool::new(false);
        let waker: Mutex<Option<Waker>> = Mutex::new(None);
        thread::scope(|scope| {
            scope.spawn(|| {
                thread::sleep(Duration::from_millis(20));
                flag.store(true, Ordering::SeqCst);
                if let Some(waker) = waker
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take()
                {
                    waker.wake();
                }
            });
            let future = Flag {
                flag: &flag,
                waker: &waker,
            };
            assert_eq!(block_on(future, None), Some(7));
        });
    }

    #[test]
    fn gives_up_at_the_deadline() {
        let flag = AtomicBool::new(false);
        let waker: Mutex<Option<Waker>> = Mutex::new(None);
        let future = Flag {
            flag: &flag,
            waker: &waker,
        };
        let start = Instant::now();
        assert_eq!(block_on(future, Some(Duration::from_millis(30))), None);
        assert!(start.elapsed() >= Duration::from_millis(30));
        // A limit too large to add to now means no limit, not a panic.
        flag.store(true, Ordering::SeqCst);
        let future = Flag {
            flag: &flag,
            waker: &waker,
        };
        assert_eq!(block_on(future, Some(Duration::MAX)), Some(7));
    }
}
