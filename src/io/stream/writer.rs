//! The producer's end of a stream: [`StreamWriter`].

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::shared::{stream_error, CloseUnloaded, Current, Inner, Shared, StreamSource};
use super::write::{ended, write_locked};
use crate::error::{Error, Result};
use crate::io::files::MAX_JSON_BYTES;
use crate::io::root::Root;
use crate::io::safetensors::MAX_HEADER;

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
    /// end of a file's tensor data, up to the length given to
    /// [`begin`](Self::begin), are taken and dropped (`fill` is not called
    /// for them); bytes past that length (past the data, when no length was
    /// given) fail the load: more arrived than the file holds.
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
        // A file ended while the load allocates its buffers is ended: the
        // load checks it is complete once they are in place.
        let ended = matches!(
            inner.current,
            Current::None | Current::Done(_) | Current::Allocating { ended: true, .. }
        );
        if !ended {
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
