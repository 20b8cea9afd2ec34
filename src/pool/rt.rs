//! Where the pool's tasks run and how it tells time: tokio (its runtime and
//! clock, which tests can pause) natively; the JS event loop and the host's
//! `performance.now()` / `setTimeout` on wasm32, where there is no tokio
//! runtime. Everything else in the pool is the same code on both.

use std::future::Future;
use std::time::Duration;

#[cfg(not(target_arch = "wasm32"))]
use tokio_util::task::TaskTracker;

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use tokio::time::Instant;

#[cfg(not(target_arch = "wasm32"))]
pub(crate) async fn sleep_until(deadline: Instant) {
    tokio::time::sleep_until(deadline).await;
}

/// Spawns the pool's tasks, tracked so that shutdown can wait for them.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) struct Spawner {
    pub(crate) tasks: TaskTracker,
    handle: tokio::runtime::Handle,
}

#[cfg(not(target_arch = "wasm32"))]
impl Spawner {
    pub(crate) fn new(handle: tokio::runtime::Handle) -> Self {
        Spawner {
            tasks: TaskTracker::new(),
            handle,
        }
    }

    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        drop(self.tasks.spawn_on(task, &self.handle));
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

/// Fires at `deadline`, awaited from any executor (a C or Python caller's
/// thread too): natively the sleep runs on the pool's runtime, and stops
/// when the timer is dropped.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn timer(spawner: &Spawner, deadline: Instant) -> Timer {
    Timer(spawner.handle.spawn(sleep_until(deadline)))
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) struct Timer(tokio::task::JoinHandle<()>);

#[cfg(not(target_arch = "wasm32"))]
impl Future for Timer {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        // A runtime shut down ends the sleep too: the timer fires.
        std::pin::Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Drop for Timer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Run `f` where blocking is allowed (a blocking thread natively).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::error::Result<T> + Send + 'static,
) -> crate::error::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or(Err(crate::error::Error::ShutDown))
}

/// Far enough to mean "never", near enough to add to any instant.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `at + d`, saturating at a century from `at`: a huge timeout, keep-alive
/// or cooldown (`Duration::MAX`) means "never", not an overflow panic.
pub(crate) fn after(at: Instant, d: Duration) -> Instant {
    at + d.min(FOREVER)
}

/// `fut`, or `None` after `limit`.
pub(crate) async fn timeout<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    let deadline = after(Instant::now(), limit);
    tokio::select! {
        out = fut => Some(out),
        () = sleep_until(deadline) => None,
    }
}

#[cfg(target_arch = "wasm32")]
mod js {
    use std::future::Future;
    use std::ops::{Add, Sub};
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use tokio_util::task::TaskTracker;
    use wasm_bindgen::prelude::*;
    use wasm_bindgen_futures::JsFuture;

    #[wasm_bindgen]
    extern "C" {
        #[wasm_bindgen(js_namespace = performance, js_name = now)]
        fn performance_now() -> f64;
        #[wasm_bindgen(js_name = setTimeout)]
        fn set_timeout(f: &js_sys::Function, ms: f64) -> JsValue;
        #[wasm_bindgen(js_name = clearTimeout)]
        fn clear_timeout(id: &JsValue);
    }

    /// A point on the host's monotonic clock, in milliseconds.
    #[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
    pub(crate) struct Instant(f64);

    impl Instant {
        pub(crate) fn now() -> Self {
            Instant(performance_now())
        }

        pub(crate) fn saturating_duration_since(self, earlier: Instant) -> Duration {
            Duration::from_secs_f64(((self.0 - earlier.0) / 1e3).max(0.0))
        }

        pub(crate) fn elapsed(self) -> Duration {
            Instant::now().saturating_duration_since(self)
        }
    }

    impl Add<Duration> for Instant {
        type Output = Instant;

        fn add(self, d: Duration) -> Instant {
            Instant(self.0 + d.as_secs_f64() * 1e3)
        }
    }

    impl Sub<Instant> for Instant {
        type Output = Duration;

        fn sub(self, earlier: Instant) -> Duration {
            self.saturating_duration_since(earlier)
        }
    }

    /// A `setTimeout` that is cleared when dropped: a pending keep-alive
    /// or admission deadline never keeps Node's event loop alive.
    struct Sleep {
        id: JsValue,
        done: JsFuture,
    }

    impl Future for Sleep {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            Pin::new(&mut self.done).poll(cx).map(|_| ())
        }
    }

    impl Drop for Sleep {
        fn drop(&mut self) {
            clear_timeout(&self.id);
        }
    }

    /// The longest delay `setTimeout` takes as given (hosts run longer
    /// ones at once).
    const MAX_TIMEOUT_MS: f64 = 2_147_483_647.0;

    pub(crate) async fn sleep_until(deadline: Instant) {
        loop {
            let ms = deadline.0 - performance_now();
            if ms <= 0.0 {
                return;
            }
            let mut id = JsValue::UNDEFINED;
            let promise = js_sys::Promise::new(&mut |resolve, _reject| {
                id = set_timeout(&resolve, ms.min(MAX_TIMEOUT_MS));
            });
            Sleep {
                id,
                done: JsFuture::from(promise),
            }
            .await;
        }
    }

    /// On wasm32, tasks run on the JS event loop.
    pub(crate) struct Spawner {
        pub(crate) tasks: TaskTracker,
    }

    impl Spawner {
        pub(crate) fn new() -> Self {
            Spawner {
                tasks: TaskTracker::new(),
            }
        }

        pub(crate) fn spawn(&self, task: impl Future<Output = ()> + 'static) {
            wasm_bindgen_futures::spawn_local(self.tasks.track_future(task));
        }
    }

    /// No threads: run `f` here (an in-memory model's headers are in
    /// memory already).
    pub(crate) async fn blocking<T>(
        f: impl FnOnce() -> crate::error::Result<T>,
    ) -> crate::error::Result<T> {
        f()
    }
}

#[cfg(target_arch = "wasm32")]
pub(crate) use js::{blocking, sleep_until, Instant, Spawner};

/// Fires at `deadline` (on wasm32 every future runs on the JS event loop).
#[cfg(target_arch = "wasm32")]
pub(crate) fn timer(_: &Spawner, deadline: Instant) -> Timer {
    Timer(Box::pin(sleep_until(deadline)))
}

#[cfg(target_arch = "wasm32")]
pub(crate) struct Timer(std::pin::Pin<Box<dyn Future<Output = ()>>>);

#[cfg(target_arch = "wasm32")]
impl Future for Timer {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        self.0.as_mut().poll(cx)
    }
}
