//! Models that arrive over time (a download): a [`ModelSource::Stream`]
//! and its [`StreamWriter`], which a producer (a `fetch`, a socket, a
//! decompressor) feeds file by file while the load runs.
//!
//! The bytes of a weights file go straight into their final place: once a
//! file's header has arrived, the load parses it, checks the budget,
//! allocates the file's tensor buffers (fallibly), and from then on every
//! write copies the producer's bytes directly into those buffers
//! ([`StreamWriter::write_with`] hands the producer the destination). No
//! copy of the file is kept beside the tensors: a streamed model needs its
//! size in memory, plus its headers and small (JSON) files.
//!
//! Files may arrive in any order (configs, indexes, shards, a diffusers
//! `model_index.json` and its components, named as in the folder:
//! `unet/config.json`); the layout is resolved, as for a folder, once the
//! producer calls [`StreamWriter::finish`]. A weights file the layout does
//! not use is freed then.
//!
//! Progress counts tensor bytes and tensors as they are written; its
//! totals grow as each weights file's header arrives (a stream does not
//! know the model's size up front; a producer that knows its files'
//! lengths can report the download against them). The memory budget is
//! checked file by file, before each file's buffers are allocated.
//!
//! Lifecycle and errors are those of any load: progress at every write,
//! cancel at any moment (the load frees what it holds, then is `Idle`),
//! and a producer's failure ([`StreamWriter::abort`], or a file that ends
//! short) ends the load in `Failed` with that error. Every wait on either
//! side ends when the other side ends: a write or [`StreamWriter::writable`]
//! after the load ended returns the load's error; a load waiting for bytes
//! ends on cancel, or on the writer's abort or drop. How long to wait for a
//! stalled producer is the producer's decision (a timeout, then `abort`).
//!
//! ```
//! use model_manager::{ModelManager, ModelSource};
//! # fn file() -> Vec<u8> {
//! #     let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
//! #     let mut f = (header.len() as u64).to_le_bytes().to_vec();
//! #     f.extend_from_slice(header);
//! #     f.extend_from_slice(&[0u8; 8]);
//! #     f
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), model_manager::Error> {
//! let manager = ModelManager::new()?;
//! let (source, writer) = ModelSource::stream();
//! let load = manager.load(source)?;
//!
//! let bytes = file(); // what arrives, in pieces of any size
//! writer.begin("model.safetensors", Some(bytes.len() as u64))?;
//! let mut rest = &bytes[..];
//! while !rest.is_empty() {
//!     let n = writer.write(rest)?;
//!     if n == 0 {
//!         writer.writable().await?; // the load is allocating the tensors
//!     }
//!     rest = &rest[n..];
//! }
//! writer.end()?;
//! writer.finish()?;
//! load.await?;
//! # manager.shutdown().await;
//! # Ok(()) }
//! ```

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

use super::files::{FilePlan, Root, MAX_JSON_BYTES};
use super::read::Prepared;
use super::safetensors::MAX_HEADER;
use crate::{Error, Result};

mod load;
#[cfg(not(target_arch = "wasm32"))]
pub(super) use load::block_on;

/// The load's end of a stream: what [`ModelSource::Stream`] holds. Two
/// stream sources are the same model only if they are the same stream.
///
/// [`ModelSource::Stream`]: super::ModelSource::Stream
#[derive(Clone)]
pub struct StreamSource {
    shared: Arc<Shared>,
    /// Shared by every clone: when the last goes and no load ever took
    /// the stream (a queued load dropped, a source never loaded), the
    /// stream closes, so the producer stops waiting and what it had
    /// written is freed.
    _unloaded: Arc<CloseUnloaded>,
}

struct CloseUnloaded {
    shared: Arc<Shared>,
}

impl Drop for CloseUnloaded {
    fn drop(&mut self) {
        close_unattached(&self.shared, Error::Cancelled);
    }
}

/// Close a stream that no load took, with `reason` as what the producer's
/// next call reports, and free what it had written. A no-op once a load
/// has taken the stream (that load closes it as it ends).
fn close_unattached(shared: &Shared, reason: Error) {
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

/// The producer's end of a stream: feeds the files of a model to the load
/// of its [`StreamSource`], one file at a time: [`begin`](Self::begin),
/// writes, [`end`](Self::end); then [`finish`](Self::finish) once every
/// file is in.
///
/// Dropping the writer before `finish` (or calling [`abort`](Self::abort))
/// fails the load.
pub struct StreamWriter {
    shared: Arc<Shared>,
}

impl fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StreamWriter")
    }
}

/// A new stream: the source to load and the writer that feeds it.
pub(crate) fn channel() -> (StreamSource, StreamWriter) {
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner::default()),
        to_loader: Notify::new(),
        to_writer: Notify::new(),
    });
    (
        StreamSource {
            shared: shared.clone(),
            _unloaded: Arc::new(CloseUnloaded {
                shared: shared.clone(),
            }),
        },
        StreamWriter { shared },
    )
}

struct Shared {
    inner: Mutex<Inner>,
    /// Something changed for the load (bytes, a header, a file, the end).
    to_loader: Notify,
    /// The stream can take bytes again (or is over).
    to_writer: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct Inner {
    current: Current,
    /// Completed small files (JSON), by relative name.
    small: BTreeMap<String, Arc<[u8]>>,
    /// Names of every file begun, to refuse a name twice.
    names: Vec<String>,
    /// Tensor bytes written (the load publishes the difference).
    written: u64,
    /// Tensors whose last byte was written.
    tensors_done: u64,
    /// The producer called `finish`.
    finished: bool,
    /// Why the stream is over early: the producer failed, or the load ended.
    failed: Option<Error>,
    /// A load took this stream (a stream is loaded once).
    attached: bool,
    /// The load ended: nothing more is taken.
    closed: bool,
}

#[derive(Default)]
enum Current {
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

struct Body {
    file: FilePlan,
    prepared: Prepared,
    declared: Option<u64>,
    /// Bytes of the file received so far (header included).
    pos: u64,
    /// The first tensor not yet complete.
    cursor: usize,
}

impl Body {
    /// The end of the tensor data.
    fn data_end(&self) -> u64 {
        self.file
            .header
            .tensors
            .last()
            .map_or(0, |t| t.offset.saturating_add(t.len))
    }

    /// Skip over complete (and empty) tensors; returns how many.
    fn advance_cursor(&mut self) -> u64 {
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

fn stream_error(name: &str, problem: impl Into<String>) -> Error {
    Error::invalid_model(PathBuf::from(name), problem)
}

impl StreamWriter {
    /// Start the next file, `name` relative to the model folder
    /// (`model.safetensors`, `unet/config.json`); `len` is its size when
    /// known (an HTTP `Content-Length`), checked against what arrives. A
    /// name ending in `.safetensors` is a weights file, streamed into its
    /// tensors; any other file is held whole (at most 64 MiB, like a JSON
    /// file on disk).
    pub fn begin(&self, name: &str, len: Option<u64>) -> Result<()> {
        let inner = self.open()?;
        // A name that leaves the folder, or one given twice, fails the load.
        let name = match Root::Memory(Arc::default()).normalized(name, name) {
            Ok(name) if inner.names.contains(&name) => {
                let error = Error::InvalidArgument(format!("{name:?} is already in the stream"));
                return Err(self.fail_locked(inner, error));
            }
            Ok(name) => name,
            Err(error) => return Err(self.fail_locked(inner, error)),
        };
        let mut inner = inner;
        if !matches!(inner.current, Current::None) {
            return Err(Error::InvalidArgument(format!(
                "cannot begin {name:?}: the previous file is not finished (await writable() after end())"
            )));
        }
        if inner.finished {
            return Err(Error::InvalidArgument(format!(
                "cannot begin {name:?}: the stream is finished"
            )));
        }
        inner.names.push(name.clone());
        let weights = name.ends_with(".safetensors");
        let cap = if weights { MAX_HEADER } else { MAX_JSON_BYTES };
        if let Some(len) = len.filter(|&len| !weights && len > cap) {
            let error = Error::InvalidConfig {
                path: name.into(),
                problem: format!("{len} bytes: larger than the {cap}-byte limit for small files"),
            };
            return Err(self.fail_locked(inner, error));
        }
        inner.current = if weights {
            Current::Header {
                name,
                declared: len,
                bytes: Vec::new(),
            }
        } else {
            Current::Small {
                name,
                declared: len,
                bytes: Vec::new(),
            }
        };
        Ok(())
    }

    /// Write the next bytes of the current file: `fill` is handed where up
    /// to `max` of them go (for tensor data, their final place) and must
    /// fill it whole; returns how many that was. `Ok(0)` means the stream
    /// cannot take bytes now (the load is allocating the file's tensors):
    /// await [`writable`](Self::writable), then write again. Bytes past the
    /// end of a file's tensor data are taken and dropped (`fill` is not
    /// called for them).
    pub fn write_with(&self, max: usize, fill: impl FnOnce(&mut [u8])) -> Result<usize> {
        let mut inner = self.open()?;
        let outcome = write_locked(&mut inner, max, fill);
        match outcome {
            Ok(n) => {
                drop(inner);
                self.shared.to_loader.notify_one();
                Ok(n)
            }
            Err(error) => Err(self.fail_locked(inner, error)),
        }
    }

    /// [`write_with`](Self::write_with) from a slice: copies up to
    /// `bytes.len()` bytes; returns how many.
    pub fn write(&self, bytes: &[u8]) -> Result<usize> {
        self.write_with(bytes.len(), |dest| {
            if let Some(src) = bytes.get(..dest.len()) {
                dest.copy_from_slice(src);
            }
        })
    }

    /// Resolves once the stream can take bytes (or a new file) again;
    /// fails with the load's error once the load is over. Cancel safe.
    pub async fn writable(&self) -> Result<()> {
        loop {
            let wait = self.shared.to_writer.notified();
            {
                let inner = self.open()?;
                if !matches!(inner.current, Current::Allocating { .. } | Current::Done(_)) {
                    return Ok(());
                }
            }
            wait.await;
        }
    }

    /// The current file is complete. A weights file that ends before its
    /// tensor data (or before its declared length) fails the load: it is
    /// truncated.
    pub fn end(&self) -> Result<()> {
        let mut inner = self.open()?;
        let error = match std::mem::take(&mut inner.current) {
            Current::None => {
                return Err(Error::InvalidArgument("end() without a file begun".into()))
            }
            Current::Small {
                name,
                declared,
                bytes,
            } => match declared {
                Some(want) if bytes.len() as u64 != want => Error::InvalidConfig {
                    path: PathBuf::from(name),
                    problem: format!(
                        "file is truncated: it ended after {} of {want} bytes",
                        bytes.len()
                    ),
                },
                _ => {
                    inner.small.insert(name, bytes.into());
                    return Ok(());
                }
            },
            Current::Header { name, bytes, .. } => stream_error(
                &name,
                format!(
                    "file is truncated: it ended after {} bytes, inside its header",
                    bytes.len()
                ),
            ),
            Current::Allocating {
                name,
                declared,
                bytes,
                ended: false,
            } => {
                // Whether the file is complete is known once the load has
                // parsed the header and placed the buffers.
                inner.current = Current::Allocating {
                    name,
                    declared,
                    bytes,
                    ended: true,
                };
                return Ok(());
            }
            current @ Current::Allocating { ended: true, .. } => {
                inner.current = current;
                return Err(Error::InvalidArgument("end() called twice".into()));
            }
            Current::Done(body) => {
                inner.current = Current::Done(body);
                return Err(Error::InvalidArgument("end() called twice".into()));
            }
            Current::Body(body) => match ended(body) {
                (current, None) => {
                    inner.current = current;
                    drop(inner);
                    self.shared.to_loader.notify_one();
                    return Ok(());
                }
                // The load frees the buffers as it ends.
                (current, Some(error)) => {
                    inner.current = current;
                    error
                }
            },
        };
        Err(self.fail_locked(inner, error))
    }

    /// Every file is in: the load resolves the model's layout from them.
    pub fn finish(&self) -> Result<()> {
        let mut inner = self.open()?;
        if !matches!(inner.current, Current::None | Current::Done(_)) {
            return Err(Error::InvalidArgument(
                "finish() while a file is still open: end() it first".into(),
            ));
        }
        inner.finished = true;
        drop(inner);
        self.shared.to_loader.notify_one();
        Ok(())
    }

    /// The producer failed: the load ends in `Failed` with `error` (unless
    /// it is already over).
    pub fn abort(&self, error: Error) {
        let inner = self.shared.lock();
        let _ = self.fail_locked(inner, error);
    }

    /// Whether the load is over (ready, cancelled or failed) or the stream
    /// failed: no more bytes will be taken.
    pub fn is_closed(&self) -> bool {
        let inner = self.shared.lock();
        inner.closed || inner.failed.is_some()
    }

    /// The stream, if it still takes bytes.
    fn open(&self) -> Result<MutexGuard<'_, Inner>> {
        let inner = self.shared.lock();
        if let Some(error) = &inner.failed {
            return Err(error.clone());
        }
        if inner.closed {
            return Err(Error::InvalidArgument(
                "the load of this stream is over".into(),
            ));
        }
        Ok(inner)
    }

    /// Record `error` as the stream's outcome (the first one wins) and wake
    /// both sides; returns the outcome. What the stream holds (a file's
    /// tensor buffers) is freed by the load as it ends, before it reports
    /// `Failed`: the state never claims memory is back before it is.
    fn fail_locked(&self, mut inner: MutexGuard<'_, Inner>, error: Error) -> Error {
        let error = inner.failed.get_or_insert(error).clone();
        drop(inner);
        self.shared.to_loader.notify_one();
        self.shared.to_writer.notify_one();
        error
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        let inner = self.shared.lock();
        if !inner.finished && !inner.closed && inner.failed.is_none() {
            let error = Error::Io {
                path: PathBuf::from("<stream>"),
                message: "the stream was dropped before all its files were in".into(),
                kind: std::io::ErrorKind::BrokenPipe,
            };
            let _ = self.fail_locked(inner, error);
        }
    }
}

/// A weights file the producer has ended: `Done` when every byte of its
/// tensor data (and of its declared length) arrived, else the file stays
/// as it is and the error says it is truncated.
fn ended(body: Box<Body>) -> (Current, Option<Error>) {
    let want = body.declared.unwrap_or(0).max(body.data_end());
    if body.pos >= want {
        return (Current::Done(body), None);
    }
    let name = body.file.path.display().to_string();
    let error = stream_error(
        &name,
        format!(
            "file is truncated: it ended after {} of {want} bytes",
            body.pos
        ),
    );
    (Current::Body(body), Some(error))
}

/// The write itself, under the lock.
fn write_locked(inner: &mut Inner, max: usize, fill: impl FnOnce(&mut [u8])) -> Result<usize> {
    match &mut inner.current {
        Current::None => Err(Error::InvalidArgument(
            "write() without a file begun".into(),
        )),
        Current::Allocating { ended: true, .. } => {
            Err(Error::InvalidArgument("write() after end()".into()))
        }
        Current::Allocating { .. } | Current::Done(_) => Ok(0),
        Current::Small {
            name,
            declared,
            bytes,
        } => {
            if let Some(want) = *declared {
                if (bytes.len() as u64).saturating_add(max as u64) > want {
                    return Err(Error::InvalidConfig {
                        path: PathBuf::from(name.as_str()),
                        problem: format!("more bytes arrived than the file holds ({want})"),
                    });
                }
            }
            let room = usize::try_from(MAX_JSON_BYTES)
                .unwrap_or(usize::MAX)
                .saturating_sub(bytes.len());
            if max > room {
                return Err(Error::InvalidConfig {
                    path: PathBuf::from(name.as_str()),
                    problem: format!("larger than the {MAX_JSON_BYTES}-byte limit for small files"),
                });
            }
            append(bytes, max, fill, name)?;
            Ok(max)
        }
        Current::Header {
            name,
            declared,
            bytes,
        } => {
            let want = match bytes.get(..8).and_then(|p| <[u8; 8]>::try_from(p).ok()) {
                None => 8usize.saturating_sub(bytes.len()),
                Some(prefix) => {
                    let n = u64::from_le_bytes(prefix);
                    if n > MAX_HEADER {
                        return Err(stream_error(
                            name,
                            format!("header length {n} exceeds the {MAX_HEADER}-byte limit"),
                        ));
                    }
                    // n <= MAX_HEADER: fits in usize on every target.
                    usize::try_from(n)
                        .unwrap_or(usize::MAX)
                        .saturating_add(8)
                        .saturating_sub(bytes.len())
                }
            };
            let n = max.min(want);
            append(bytes, n, fill, name)?;
            let complete = match bytes.get(..8).and_then(|p| <[u8; 8]>::try_from(p).ok()) {
                Some(prefix) => bytes.len() as u64 == u64::from_le_bytes(prefix).saturating_add(8),
                None => false,
            };
            if complete {
                let (name, declared, bytes) =
                    (std::mem::take(name), *declared, std::mem::take(bytes));
                inner.current = Current::Allocating {
                    name,
                    declared,
                    bytes,
                    ended: false,
                };
            }
            Ok(n)
        }
        Current::Body(body) => {
            let end = body.declared.unwrap_or(0).max(body.data_end());
            if body.pos >= end {
                let name = body.file.path.display().to_string();
                return Err(stream_error(
                    &name,
                    format!("more bytes arrived than the file holds ({end})"),
                ));
            }
            let (before, data_end) = (body.pos, body.data_end());
            let n = write_body(body, max, fill)?;
            // Progress counts tensor bytes: trailing bytes after the data
            // are taken and dropped, not counted.
            let counted = body.pos.min(data_end).saturating_sub(before.min(data_end));
            inner.written = inner.written.saturating_add(counted);
            let done = body.advance_cursor();
            inner.tensors_done = inner.tensors_done.saturating_add(done);
            Ok(n)
        }
    }
}

/// Append `n` bytes, filled by `fill`, to a small buffer (fallibly).
fn append(bytes: &mut Vec<u8>, n: usize, fill: impl FnOnce(&mut [u8]), name: &str) -> Result<()> {
    if bytes.try_reserve(n).is_err() {
        return Err(Error::InsufficientMemory {
            needed: n as u64,
            available: 0,
            pinned: 0,
        });
    }
    let start = bytes.len();
    bytes.resize(start.saturating_add(n), 0);
    match bytes.get_mut(start..) {
        Some(dest) => fill(dest),
        None => return Err(stream_error(name, "internal: append out of range")),
    }
    Ok(())
}

/// Copy up to `max` bytes into the tensor the file position is in.
fn write_body(body: &mut Body, max: usize, fill: impl FnOnce(&mut [u8])) -> Result<usize> {
    let data_end = body.data_end();
    if body.pos >= data_end {
        // Trailing bytes after the tensor data: taken, dropped.
        let end = body.declared.unwrap_or(data_end);
        let n = max.min(usize::try_from(end.saturating_sub(body.pos)).unwrap_or(usize::MAX));
        body.pos = body.pos.saturating_add(n as u64);
        return Ok(n);
    }
    let internal = || stream_error(&body.file.path.display().to_string(), "internal: bad write");
    let entry = body
        .file
        .header
        .tensors
        .get(body.cursor)
        .ok_or_else(internal)?;
    let &(group, at) = body
        .prepared
        .placement
        .get(body.cursor)
        .ok_or_else(internal)?;
    let within = body.pos.checked_sub(entry.offset).ok_or_else(internal)?;
    let left = entry.len.saturating_sub(within);
    let n = max.min(usize::try_from(left).unwrap_or(usize::MAX));
    let start = usize::try_from(at.saturating_add(within)).map_err(|_| internal())?;
    let buffer = body.prepared.buffers.get_mut(group).ok_or_else(internal)?;
    let dest = buffer
        .bytes_mut()
        .get_mut(start..start.saturating_add(n))
        .ok_or_else(internal)?;
    fill(dest);
    body.pos = body.pos.saturating_add(n as u64);
    Ok(n)
}
