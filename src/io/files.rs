//! Where bytes come from: files on disk (positioned reads, never memory
//! maps, so a file truncated while loading yields an error, not SIGBUS) or
//! buffers in memory; and model folders on either, with names from JSON
//! checked so they cannot leave the folder.
//!
//! Nothing read here can hang or exhaust memory, whatever the folder holds:
//! - a name is checked against the folder (symlinks resolved) *before*
//!   anything is opened: one that resolves outside is
//!   [`Error::PathEscape`], and the file opened is the resolved one;
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

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::safetensors::{parse_header, Header};
use crate::error::{Error, Result};

/// The largest JSON file (config, shard index, `model_index.json`) a load
/// reads: 64 MiB. A larger one fails the load with an
/// [`Error::InvalidConfig`] naming the file and this cap, before it is
/// parsed (and, on disk, before more than the cap is read).
pub(crate) const MAX_JSON_BYTES: u64 = 64 << 20;

/// The largest hub `refs/` file read (it holds one commit hash).
pub(crate) const MAX_REF_BYTES: u64 = 4096;

/// The bytes of one weights file.
#[derive(Debug)]
pub(crate) enum Reader {
    File(File),
    Memory(Arc<[u8]>),
}

/// One weights file, opened, with its validated header.
#[derive(Debug)]
pub(crate) struct FilePlan {
    pub(crate) path: PathBuf,
    pub(crate) reader: Reader,
    pub(crate) header: Header,
}

/// Positioned read of exactly `buf.len()` bytes.
pub(crate) fn read_exact_at(reader: &Reader, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    match reader {
        Reader::Memory(bytes) => {
            let src = usize::try_from(offset)
                .ok()
                .and_then(|start| bytes.get(start..start.checked_add(buf.len())?))
                .ok_or(std::io::ErrorKind::UnexpectedEof)?;
            buf.copy_from_slice(src);
            Ok(())
        }
        Reader::File(file) => file_read_exact_at(file, buf, offset),
    }
}

fn file_read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let (mut buf, mut offset) = (buf, offset);
        while !buf.is_empty() {
            match std::os::windows::fs::FileExt::seek_read(file, buf, offset) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = buf.get_mut(n..).ok_or(std::io::ErrorKind::InvalidData)?;
                    offset = offset
                        .checked_add(n as u64)
                        .ok_or(std::io::ErrorKind::UnexpectedEof)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = (file, buf, offset);
        Err(std::io::ErrorKind::Unsupported.into())
    }
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
fn parse_json(path: PathBuf, bytes: &[u8]) -> Result<Value> {
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
fn open_file_named(open: &Path, name: PathBuf) -> Result<FilePlan> {
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

/// `dir/name`, or `name` for the root (`dir` empty).
pub(crate) fn join_rel(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// A model folder, on disk or in memory. Relative names use `/`.
pub(crate) enum Root {
    /// `dir`, whose files must resolve inside `jail` (the folder itself, or
    /// for a hub snapshot the repo's cache folder, whose blobs the snapshot
    /// links to). `jail` is kept canonical.
    Dir {
        dir: PathBuf,
        jail: PathBuf,
    },
    Memory(Arc<BTreeMap<String, Arc<[u8]>>>),
    /// The files of a stream, once in: small files whole, weights files
    /// (listed in `files` without their bytes, which are in their tensors
    /// already) by their headers.
    Arrived {
        files: Arc<BTreeMap<String, Arc<[u8]>>>,
        headers: BTreeMap<String, Header>,
    },
}

impl Root {
    /// The root of a stream's files: `small` whole, weights by header.
    pub(crate) fn arrived(
        small: BTreeMap<String, Arc<[u8]>>,
        headers: BTreeMap<String, Header>,
    ) -> Self {
        let mut files = small;
        for name in headers.keys() {
            files.insert(name.clone(), Arc::from(Vec::new()));
        }
        Root::Arrived {
            files: Arc::new(files),
            headers,
        }
    }

    pub(crate) fn dir(dir: PathBuf, jail: PathBuf) -> Self {
        let jail = jail.canonicalize().unwrap_or(jail);
        Root::Dir { dir, jail }
    }

    /// The path to name in errors.
    pub(crate) fn display(&self, rel: &str) -> PathBuf {
        match self {
            Root::Dir { dir, .. } => dir.join(rel),
            Root::Memory(_) | Root::Arrived { .. } => PathBuf::from(rel),
        }
    }

    /// A name taken from the JSON file `from` (relative), normalised
    /// (`./a//b` is `a/b`) and checked not to leave the folder by its
    /// spelling: a name with `..`, a root or a prefix, or a backslash, is
    /// [`Error::PathEscape`]; one that names no file at all (`""`, `.`,
    /// `./`) is [`Error::InvalidConfig`] of `from`. Symlinks are checked
    /// when the file is opened.
    pub(crate) fn normalized(&self, name: &str, from: &str) -> Result<String> {
        let escape = || Error::PathEscape { path: name.into() };
        if name.contains('\\') {
            return Err(escape());
        }
        let mut parts = Vec::new();
        for component in Path::new(name).components() {
            match component {
                Component::Normal(part) => parts.push(part.to_str().ok_or_else(escape)?),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(escape())
                }
            }
        }
        if parts.is_empty() {
            return Err(Error::InvalidConfig {
                path: self.display(from),
                problem: format!("{name:?} names no file or folder inside the model folder"),
            });
        }
        Ok(parts.join("/"))
    }

    /// [`Root::normalized`], and on disk checked not to resolve (through
    /// symlinks) outside the folder either.
    pub(crate) fn checked(&self, name: &str, from: &str) -> Result<String> {
        let normal = self.normalized(name, from)?;
        if let Root::Dir { dir, jail } = self {
            locate(dir, jail, &normal)?;
        }
        Ok(normal)
    }

    /// Whether something exists under this name (a file, or anything an
    /// open then refuses by name). Never follows a symlink, never opens.
    pub(crate) fn has_file(&self, rel: &str) -> bool {
        match self {
            Root::Dir { dir, .. } => std::fs::symlink_metadata(dir.join(rel)).is_ok(),
            Root::Memory(files) | Root::Arrived { files, .. } => files.contains_key(rel),
        }
    }

    /// The `.safetensors` entries directly in `dir` (relative names), folders
    /// excepted. Lists names only: nothing is opened.
    pub(crate) fn safetensors_in(&self, dir: &str) -> Vec<String> {
        let mut found: Vec<String> = match self {
            Root::Dir { dir: root, .. } => std::fs::read_dir(root.join(dir))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.ends_with(".safetensors"))
                .collect(),
            Root::Memory(files) | Root::Arrived { files, .. } => {
                let prefix = join_rel(dir, "");
                files
                    .range::<str, _>((
                        std::ops::Bound::Included(prefix.as_str()),
                        std::ops::Bound::Unbounded,
                    ))
                    .map(|(k, _)| k)
                    .take_while(|k| k.starts_with(&prefix))
                    .filter_map(|k| k.strip_prefix(&prefix))
                    .filter(|n| !n.contains('/') && n.ends_with(".safetensors"))
                    .map(str::to_string)
                    .collect()
            }
        };
        found.sort();
        found
    }

    /// Whether `dir` holds any weights file at all.
    pub(crate) fn has_any_weights(&self, dir: &str) -> bool {
        !self.safetensors_in(dir).is_empty()
            || self.has_file(&join_rel(dir, "model.safetensors.index.json"))
            || self.has_file(&join_rel(
                dir,
                "diffusion_pytorch_model.safetensors.index.json",
            ))
    }

    /// A JSON file, parsed; `Ok(None)` if there is none. Checked to stay in
    /// the folder before it is opened, refused unless a regular file, and
    /// capped at [`MAX_JSON_BYTES`].
    pub(crate) fn read_json(&self, rel: &str) -> Result<Option<Value>> {
        let path = self.display(rel);
        match self {
            Root::Dir { dir, jail } => {
                let Some(real) = locate(dir, jail, rel)? else {
                    return Ok(None);
                };
                match read_capped(&real, &path, MAX_JSON_BYTES)? {
                    Some(bytes) => parse_json(path, &bytes).map(Some),
                    None => Ok(None),
                }
            }
            Root::Memory(files) | Root::Arrived { files, .. } => match files.get(rel) {
                Some(bytes) => parse_json(path, bytes).map(Some),
                None => Ok(None),
            },
        }
    }

    pub(crate) fn open_weights(&self, rel: &str) -> Result<FilePlan> {
        match self {
            Root::Dir { dir, jail } => {
                let path = dir.join(rel);
                match locate(dir, jail, rel)? {
                    Some(real) => open_file_named(&real, path),
                    None => Err(Error::MissingFile { path }),
                }
            }
            Root::Memory(files) => {
                let bytes = files.get(rel).ok_or_else(|| Error::MissingFile {
                    path: PathBuf::from(rel),
                })?;
                open_memory(PathBuf::from(rel), bytes.clone())
            }
            Root::Arrived { headers, .. } => {
                let header = headers.get(rel).ok_or_else(|| Error::MissingFile {
                    path: PathBuf::from(rel),
                })?;
                Ok(FilePlan {
                    path: PathBuf::from(rel),
                    reader: Reader::Memory(Arc::from(Vec::new())),
                    header: header.clone(),
                })
            }
        }
    }
}

/// Where `dir/rel` really is (symlinks resolved), refusing a path that
/// resolves outside `jail` (canonical): `Ok(None)` if it does not exist.
/// Only resolves names: nothing is opened.
fn locate(dir: &Path, jail: &Path, rel: &str) -> Result<Option<PathBuf>> {
    let joined = dir.join(rel);
    match joined.canonicalize() {
        Ok(real) if real.starts_with(jail) => Ok(Some(real)),
        Ok(_) => Err(Error::PathEscape { path: joined }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(joined, &e)),
    }
}
