//! Load progress: lock-free counters written by the loader at every chunk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

/// A synchronous observer called on a loader thread after every chunk;
/// never called concurrently, and each call sees more bytes than the last.
pub type ProgressHook = Arc<dyn Fn(&Progress) + Send + Sync>;

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
    /// The file (or component) being read, or downloaded.
    pub current: Option<Arc<str>>,
    /// Bytes of the files a hub download needs that are in the cache so
    /// far (those found there at the start included); `0` when nothing was
    /// downloaded.
    pub download_done: u64,
    /// Bytes of the files a hub download needs, as far as known (it grows
    /// as the download learns of files, and by what a resumed file had to
    /// discard); `0` when nothing was downloaded.
    pub download_total: u64,
}

impl Progress {
    /// Fraction done in `[0, 1]` (by bytes; `1.0` for an empty model).
    ///
    /// A load that downloads counts the download as its first half: until
    /// the read's totals are known, the download's fraction halved; then
    /// the bytes downloaded and read over the bytes to download and read
    /// (at least one half, as the download is at least the size of the
    /// tensors it brings). For a [`pull`](crate::pull) alone, read
    /// `download_done` and `download_total`.
    pub fn fraction(&self) -> f64 {
        let ratio = |done: u64, total: u64| (done as f64 / total as f64).clamp(0.0, 1.0);
        match (self.download_total, self.bytes_total) {
            (0, 0) => 1.0,
            (0, total) => ratio(self.bytes_done, total),
            (download, 0) => ratio(self.download_done, download) / 2.0,
            (download, total) => ratio(
                self.download_done.saturating_add(self.bytes_done),
                download.saturating_add(total),
            )
            .max(0.5),
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
    download_done: AtomicU64,
    download_total: AtomicU64,
    current: ArcSwapOption<Arc<str>>,
    /// Dropped when the load ends, which closes every update stream.
    changed: Mutex<Option<watch::Sender<Progress>>>,
}

impl Default for ProgressCounters {
    fn default() -> Self {
        ProgressCounters {
            bytes_done: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            tensors_done: AtomicU64::new(0),
            tensors_total: AtomicU64::new(0),
            download_done: AtomicU64::new(0),
            download_total: AtomicU64::new(0),
            current: ArcSwapOption::empty(),
            changed: Mutex::new(Some(watch::Sender::new(Progress::default()))),
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
            download_done: self.download_done.load(Ordering::Acquire),
            download_total: self.download_total.load(Ordering::Acquire),
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

    /// A download learnt of `total` more bytes to have, `done` of them in
    /// the cache already. Both only grow.
    pub(crate) fn add_download(&self, done: u64, total: u64) {
        self.download_total.fetch_add(total, Ordering::AcqRel);
        self.download_done.fetch_add(done, Ordering::AcqRel);
        self.notify();
    }

    pub(crate) fn tensor_done(&self) {
        self.tensors_done.fetch_add(1, Ordering::AcqRel);
        // Watchers see the last tensor completed, not one short.
        self.notify();
    }

    /// Updates at every chunk until the load ends; then the stream closes
    /// (after the final value).
    pub(crate) fn subscribe(&self) -> watch::Receiver<Progress> {
        match &*self.sender() {
            Some(sender) => {
                // Start from the value now, not the last one sent to others.
                sender.send_replace(self.read());
                sender.subscribe()
            }
            // Over: a receiver that holds the final value, already closed.
            None => watch::channel(self.read()).1,
        }
    }

    /// The load is over (ready, cancelled or failed): publish the final
    /// value and close every update stream.
    pub(crate) fn close(&self) {
        if let Some(sender) = self.sender().take() {
            sender.send_replace(self.read());
        }
    }

    fn sender(&self) -> MutexGuard<'_, Option<watch::Sender<Progress>>> {
        self.changed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self) {
        if let Some(sender) = &*self.sender() {
            if sender.receiver_count() > 0 {
                sender.send_replace(self.read());
            }
        }
    }
}
