//! Load progress: lock-free counters written by the loader at every chunk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

/// How far a load has come.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of tensor data read so far.
    pub bytes_done: u64,
    /// Bytes of tensor data in the whole model.
    pub bytes_total: u64,
    /// Tensors completely read so far.
    pub tensors_done: u64,
    /// Tensors in the whole model.
    pub tensors_total: u64,
    /// The file (or component) being read.
    pub current: Option<Arc<str>>,
}

impl Progress {
    /// Fraction done in `[0, 1]` (by bytes; `1.0` for an empty model).
    pub fn fraction(&self) -> f64 {
        if self.bytes_total == 0 {
            1.0
        } else {
            self.bytes_done as f64 / self.bytes_total as f64
        }
    }
}

/// Counters shared by the loader (writer) and snapshots and handles (readers).
#[derive(Debug)]
pub(crate) struct ProgressCounters {
    bytes_done: AtomicU64,
    bytes_total: AtomicU64,
    tensors_done: AtomicU64,
    tensors_total: AtomicU64,
    current: ArcSwapOption<Arc<str>>,
    changed: watch::Sender<Progress>,
}

impl Default for ProgressCounters {
    fn default() -> Self {
        ProgressCounters {
            bytes_done: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            tensors_done: AtomicU64::new(0),
            tensors_total: AtomicU64::new(0),
            current: ArcSwapOption::empty(),
            changed: watch::Sender::new(Progress::default()),
        }
    }
}

impl ProgressCounters {
    pub(crate) fn read(&self) -> Progress {
        Progress {
            bytes_done: self.bytes_done.load(Ordering::Acquire),
            bytes_total: self.bytes_total.load(Ordering::Acquire),
            tensors_done: self.tensors_done.load(Ordering::Acquire),
            tensors_total: self.tensors_total.load(Ordering::Acquire),
            current: self.current.load_full().map(|s| (*s).clone()),
        }
    }

    pub(crate) fn set_totals(&self, bytes: u64, tensors: u64) {
        self.bytes_total.store(bytes, Ordering::Release);
        self.tensors_total.store(tensors, Ordering::Release);
        self.notify();
    }

    pub(crate) fn set_current(&self, name: Arc<str>) {
        self.current.store(Some(Arc::new(name)));
    }

    pub(crate) fn add_bytes(&self, bytes: u64) {
        self.bytes_done.fetch_add(bytes, Ordering::AcqRel);
        self.notify();
    }

    pub(crate) fn tensor_done(&self) {
        self.tensors_done.fetch_add(1, Ordering::AcqRel);
        // Watchers see the last tensor completed, not one short.
        self.notify();
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Progress> {
        self.changed.subscribe()
    }

    fn notify(&self) {
        if self.changed.receiver_count() > 0 {
            self.changed.send_replace(self.read());
        }
    }
}
