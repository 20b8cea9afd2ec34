//! [`RawLoad`]: one requested load, as a wasm-bindgen class.

use std::cell::Cell;
use std::rc::Rc;

use js_sys::{Function, Promise};
use model_manager::LoadHandle;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::convert;
use crate::error::to_js;
use crate::listen::call;

/// One requested load.
#[wasm_bindgen]
pub struct RawLoad {
    pub(crate) handle: LoadHandle,
    /// Set when this load of a read-once source (a stream) is cancelled:
    /// that source is never joined again.
    pub(crate) stopped: Option<Rc<Cell<bool>>>,
}

#[wasm_bindgen]
impl RawLoad {
    /// Resolves to the snapshot once the model is ready; rejects with the
    /// load's error (code 3 when cancelled, 4 when superseded). Calls
    /// `on_progress` with `{ bytesDone, bytesTotal, tensorsDone,
    /// tensorsTotal, file }` as chunks are read (monotonic), and once more
    /// with the final totals when the load succeeds.
    pub fn wait(&self, on_progress: Option<Function>) -> Promise {
        let handle = self.handle.clone();
        future_to_promise(async move {
            let outcome = match on_progress {
                None => handle.wait().await,
                Some(callback) => {
                    let mut updates = handle.progress_updates();
                    let mut last = None;
                    // The stream starts from the progress now, as already
                    // seen: the load's task runs before this one and may
                    // have read a chunk already. Report it, or that chunk
                    // would never be.
                    let now = updates.borrow_and_update().clone();
                    if now.bytes_done > 0 {
                        call(&callback, &convert::progress(&now));
                        last = Some(now);
                    }
                    let wait = handle.wait();
                    tokio::pin!(wait);
                    let outcome = loop {
                        tokio::select! {
                            biased;
                            outcome = &mut wait => break outcome,
                            changed = updates.changed() => {
                                if changed.is_err() {
                                    break wait.await;
                                }
                                let progress = updates.borrow_and_update().clone();
                                call(&callback, &convert::progress(&progress));
                                last = Some(progress);
                            }
                        }
                    };
                    if let Ok(snapshot) = &outcome {
                        if last.as_ref() != Some(&snapshot.progress) {
                            call(&callback, &convert::progress(&snapshot.progress));
                        }
                    }
                    outcome
                }
            };
            outcome
                .map(|snapshot| convert::snapshot(&snapshot))
                .map_err(|e| to_js(&e))
        })
    }

    /// Cancel this load if it is still the current (or pending) one; a
    /// no-op once it has finished or been replaced.
    pub fn cancel(&self) {
        self.handle.cancel();
        if let Some(stopped) = &self.stopped {
            stopped.set(true);
        }
    }

    /// Progress so far.
    #[wasm_bindgen(getter)]
    pub fn progress(&self) -> JsValue {
        convert::progress(&self.handle.progress())
    }
}
