//! The state a stream's two ends share: the files written so far, the
//! one being written, and how each side wakes the other.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::error::Error;
use crate::io::files::FilePlan;
use crate::io::read::place::Prepared;

/// The load's end of a stream: what [`ModelSource::Stream`] holds. Two
/// stream sources are the same model only if they are the same stream.
///
/// [`ModelSource::Stream`]: crate::ModelSource::Stream
#[derive(Clone)]
pub struct StreamSource {
    pub(crate) shared: Arc<Shared>,
    /// Shared by every clone: when the last goes and no load ever took
    /// the stream (a queued load dropped, a source never loaded), the
    /// stream closes, so the producer stops waiting and what it had
    /// written is freed.
    pub(crate) _unloaded: Arc<CloseUnloaded>,
}

pub(crate) struct CloseUnloaded {
    pub(crate) shared: Arc<Shared>,
}

impl Drop for CloseUnloaded {
    fn drop(&mut self) {
        close_unattached(&self.shared, Error::Cancelled);
    }
}

/// Close a stream that no load took, with `reason` as what the producer's
/// next call reports, and free what it had written. A no-op once a load
/// has taken the stream (that load closes it as it ends).
pub(crate) fn close_unattached(shared: &Shared, reason: Error) {
    let mut inner = shared.lock();
    if inner.attached || inner.closed {
        return;
    }
    inner.closed = true;
    inner.failed.get_or_insert(reason);
    let held = (
        std::mem::take(&mut inner.current),
        std::mem::take(&mut inner.small),
    );
    drop(inner);
    drop(held);
    shared.to_loader.notify_one();
    shared.to_writer.notify_one();
}

impl StreamSource {
    /// The load of this stream ended before it took the stream (cancelled
    /// or superseded while it waited its turn): close it now, so the
    /// producer stops waiting, even while handles on that load (and so
    /// this source) live on.
    pub(crate) fn close_unloaded(&self, reason: Error) {
        close_unattached(&self.shared, reason);
    }
}

impl PartialEq for StreamSource {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl fmt::Debug for StreamSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StreamSource")
    }
}

pub(crate) struct Shared {
    pub(crate) inner: Mutex<Inner>,
    /// Something changed for the load (bytes, a header, a file, the end).
    pub(crate) to_loader: Notify,
    /// The stream can take bytes again (or is over).
    pub(crate) to_writer: Notify,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
pub(crate) struct Inner {
    pub(crate) current: Current,
    /// Completed small files (JSON), by relative name.
    pub(crate) small: BTreeMap<String, Arc<[u8]>>,
    /// Names of every file begun, to refuse a name twice.
    pub(crate) names: Vec<String>,
    /// Tensor bytes written (the load publishes the difference).
    pub(crate) written: u64,
    /// Tensors whose last byte was written.
    pub(crate) tensors_done: u64,
    /// The producer called `finish`.
    pub(crate) finished: bool,
    /// Why the stream is over early: the producer failed, or the load ended.
    pub(crate) failed: Option<Error>,
    /// A load took this stream (a stream is loaded once).
    pub(crate) attached: bool,
    /// The load ended: nothing more is taken.
    pub(crate) closed: bool,
}

#[derive(Default)]
pub(crate) enum Current {
    /// Between files.
    #[default]
    None,
    /// A small file (not `.safetensors`), held whole; `declared`: its
    /// length when the producer knew it (checked against what arrives).
    Small {
        name: String,
        declared: Option<u64>,
        bytes: Vec<u8>,
    },
    /// A weights file's first bytes: the 8-byte length, then the header.
    Header {
        name: String,
        declared: Option<u64>,
        bytes: Vec<u8>,
    },
    /// The header is in: the load is allocating the tensors. `ended`:
    /// the producer called `end()` meanwhile (a file with no tensor data
    /// ends with its header); checked once the buffers are in place.
    Allocating {
        name: String,
        declared: Option<u64>,
        bytes: Vec<u8>,
        ended: bool,
    },
    /// The tensors' buffers, being filled.
    Body(Box<Body>),
    /// A weights file complete: the load cuts it into tensors.
    Done(Box<Body>),
}

pub(crate) struct Body {
    pub(crate) file: FilePlan,
    pub(crate) prepared: Prepared,
    pub(crate) declared: Option<u64>,
    /// Bytes of the file received so far (header included).
    pub(crate) pos: u64,
    /// The first tensor not yet complete.
    pub(crate) cursor: usize,
}

impl Body {
    /// The end of the tensor data.
    pub(crate) fn data_end(&self) -> u64 {
        self.file
            .header
            .tensors
            .last()
            .map_or(0, |t| t.offset.saturating_add(t.len))
    }

    /// Skip over complete (and empty) tensors; returns how many.
    pub(crate) fn advance_cursor(&mut self) -> u64 {
        let mut done = 0u64;
        while let Some(t) = self.file.header.tensors.get(self.cursor) {
            if self.pos < t.offset.saturating_add(t.len) {
                break;
            }
            self.cursor = self.cursor.saturating_add(1);
            done = done.saturating_add(1);
        }
        done
    }
}

pub(crate) fn stream_error(name: &str, problem: impl Into<String>) -> Error {
    Error::invalid_model(PathBuf::from(name), problem)
}
