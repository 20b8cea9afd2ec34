//! Where bytes come from: files on disk (positioned reads, never memory
//! maps, so a file truncated while loading yields an error, not SIGBUS) or
//! buffers in memory. The model folders they are found in are
//! [`Root`](super::root::Root)s.
//!
//! Nothing read here can hang or exhaust memory, whatever a folder holds:
//! - files are opened without blocking (on unix with `O_NONBLOCK`, so a FIFO
//!   does not wait for a writer) and refused unless the opened file is a
//!   regular file (a FIFO, a socket, a device such as `/dev/zero`, a folder);
//! - a JSON file (a config, an index, `model_index.json`) is read only up to
//!   [`MAX_JSON_BYTES`] (64 MiB; the index of the largest published models
//!   is a few MB); a larger one is refused, naming the file and the cap.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

pub(crate) use super::reader::{read_exact_at, Reader};
use super::safetensors::{parse_header, Header};
use crate::error::{Error, Result};

/// The largest JSON file (config, shard index, `model_index.json`) a load
/// reads: 64 MiB. A larger one fails the load with an
/// [`Error::InvalidConfig`] naming the file and this cap, before it is
/// parsed (and, on disk, before more than the cap is read).
pub(crate) const MAX_JSON_BYTES: u64 = 64 << 20;

/// The largest hub `refs/` file read (it holds one commit hash).
pub(crate) const MAX_REF_BYTES: u64 = 4096;

/// One weights file, opened, with its validated header.
#[derive(Debug)]
pub(crate) struct FilePlan {
    pub(crate) path: PathBuf,
    pub(crate) reader: Reader,
    pub(crate) header: Header,
}

/// `O_NONBLOCK`: opening a FIFO returns at once instead of waiting for a
/// writer (it has no effect on the reads of a regular file).
#[cfg(target_os = "linux")]
const O_NONBLOCK: i32 = libc::O_NONBLOCK;
#[cfg(target_os = "android")]
const O_NONBLOCK: i32 = 0o4000;
#[cfg(any(
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
const O_NONBLOCK: i32 = 0x0004;
// Elsewhere the `stat` before opening is the guard.
#[cfg(all(
    unix,
    not(any(
        target_os = "linux",
        target_os = "android",
        target_vendor = "apple",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    ))
))]
const O_NONBLOCK: i32 = 0;

/// Why [`open_regular`] refused a file.
enum OpenError {
    Io(std::io::Error),
    NotRegular,
}

/// Open `path` for reading without blocking, and only if it is a regular
/// file (checked on the opened file, so it cannot be swapped in between);
/// returns it with its length.
fn open_regular(path: &Path) -> std::result::Result<(File, u64), OpenError> {
    // Refuse what is plainly not a file before opening it (the only guard
    // on platforms without a known O_NONBLOCK).
    if !std::fs::metadata(path).map_err(OpenError::Io)?.is_file() {
        return Err(OpenError::NotRegular);
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, O_NONBLOCK);
    let file = options.open(path).map_err(OpenError::Io)?;
    let meta = file.metadata().map_err(OpenError::Io)?;
    if !meta.is_file() {
        return Err(OpenError::NotRegular);
    }
    Ok((file, meta.len()))
}

const NOT_REGULAR: &str = "not a regular file (a FIFO, device, socket or folder cannot be read)";

/// Read a whole small file (JSON), at most `cap` bytes: `Ok(None)` if it
/// does not exist. `open` is the path to open, `name` the one to report.
pub(crate) fn read_capped(open: &Path, name: &Path, cap: u64) -> Result<Option<Vec<u8>>> {
    let too_large = || Error::InvalidConfig {
        path: name.into(),
        problem: format!("larger than the {} limit for JSON files", cap_text(cap)),
    };
    let (file, len) = match open_regular(open) {
        Ok(opened) => opened,
        Err(OpenError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(OpenError::Io(e)) => return Err(Error::io(name, &e)),
        Err(OpenError::NotRegular) => {
            return Err(Error::InvalidConfig {
                path: name.into(),
                problem: NOT_REGULAR.into(),
            })
        }
    };
    if len > cap {
        return Err(too_large());
    }
    // The file may grow after the `fstat`: never read more than the cap + 1.
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(name, &e))?;
    if bytes.len() as u64 > cap {
        return Err(too_large());
    }
    Ok(Some(bytes))
}

/// `67108864 bytes (64 MiB)`.
fn cap_text(cap: u64) -> String {
    if cap >= 1 << 20 && cap % (1 << 20) == 0 {
        format!("{cap} bytes ({} MiB)", cap >> 20)
    } else {
        format!("{cap} bytes")
    }
}

/// Parse a JSON file's bytes, refusing more than [`MAX_JSON_BYTES`].
pub(crate) fn parse_json(path: PathBuf, bytes: &[u8]) -> Result<Value> {
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(Error::InvalidConfig {
            path,
            problem: format!(
                "larger than the {} limit for JSON files",
                cap_text(MAX_JSON_BYTES)
            ),
        });
    }
    serde_json::from_slice(bytes).map_err(|e| Error::InvalidConfig {
        path,
        problem: e.to_string(),
    })
}

/// Open a weights file on disk and validate its header. Refuses anything
/// but a regular file without blocking on it.
pub(crate) fn open_file(path: &Path) -> Result<FilePlan> {
    open_file_named(path, path.into())
}

/// [`open_file`] of `open`, reported as `name` (the path as the model names
/// it, where `open` is where its symlinks lead).
pub(crate) fn open_file_named(open: &Path, name: PathBuf) -> Result<FilePlan> {
    match open_regular(open) {
        Ok((file, len)) => open_reader(name, Reader::File(file), len),
        Err(OpenError::Io(e)) => Err(Error::io(name, &e)),
        Err(OpenError::NotRegular) => Err(Error::invalid_model(name, NOT_REGULAR)),
    }
}

pub(crate) fn open_memory(path: PathBuf, bytes: Arc<[u8]>) -> Result<FilePlan> {
    let len = bytes.len() as u64;
    open_reader(path, Reader::Memory(bytes), len)
}

pub(crate) fn open_reader(path: PathBuf, reader: Reader, len: u64) -> Result<FilePlan> {
    // A zip archive is PyTorch's (`torch.save`); anything else is read as
    // safetensors, whose parser says what a file that is neither looks like.
    let mut head = [0u8; 4];
    if len >= 4 && read_exact_at(&reader, &mut head, 0).is_ok() && super::pytorch::is_archive(&head)
    {
        let header = super::pytorch::parse(&path, &reader, len)?;
        return Ok(FilePlan {
            path,
            reader,
            header,
        });
    }
    let header = parse_header(&path, len, |offset, n| {
        let mut buf = vec![0u8; n];
        read_exact_at(&reader, &mut buf, offset)?;
        Ok(buf)
    })?;
    Ok(FilePlan {
        path,
        reader,
        header,
    })
}
