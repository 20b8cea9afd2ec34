//! Model folders, on disk or in memory: names from JSON checked so they
//! cannot leave the folder (symlinks resolved before anything is opened:
//! one that resolves outside is [`Error::PathEscape`], and the file opened
//! is the resolved one), the standard files looked up, and what a folder
//! holds listed for the errors that say what was found.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::files::{
    open_file_named, open_memory, parse_json, read_capped, FilePlan, Reader, MAX_JSON_BYTES,
};
use super::safetensors::Header;
use crate::error::{Error, Result};

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

    /// The folder `rel` (`""` for the root) to name in errors.
    pub(crate) fn folder(&self, rel: &str) -> PathBuf {
        match self {
            Root::Dir { dir, .. } if rel.is_empty() => dir.clone(),
            Root::Memory(_) | Root::Arrived { .. } if rel.is_empty() => PathBuf::from("."),
            _ => self.display(rel),
        }
    }

    /// A name taken from the JSON file `from` (relative), normalised
    /// (`./a//b` is `a/b`) and checked not to leave the folder by its
    /// spelling: a name with `..`, a root or a prefix, or a backslash, is
    /// [`Error::PathEscape`]; one that names no file at all (`""`, `.`,
    /// `./`) is [`Error::InvalidConfig`] of `from`. Symlinks are checked
    /// when the file is opened.
    /// The error names the entry in the folder (`<folder>/../unet`), or
    /// as written when absolute.
    pub(crate) fn normalized(&self, name: &str, from: &str) -> Result<String> {
        let escape = || Error::PathEscape {
            path: self.display(name),
        };
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
    pub(crate) fn files_in(&self, dir: &str, wanted: fn(&str) -> bool) -> Vec<String> {
        let mut found: Vec<String> = match self {
            Root::Dir { dir: root, .. } => std::fs::read_dir(root.join(dir))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| wanted(n))
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
                    .filter(|n| !n.contains('/') && wanted(n))
                    .map(str::to_string)
                    .collect()
            }
        };
        found.sort();
        found
    }

    /// What `dir` holds, for an error to name: its entries' names, sorted,
    /// folders ending with `/`. Lists names only: nothing is opened.
    pub(crate) fn entries_in(&self, dir: &str) -> Vec<String> {
        let mut found: Vec<String> = match self {
            Root::Dir { dir: root, .. } => std::fs::read_dir(root.join(dir))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let folder = e.file_type().is_ok_and(|t| t.is_dir());
                    if folder {
                        format!("{name}/")
                    } else {
                        name
                    }
                })
                .collect(),
            Root::Memory(files) | Root::Arrived { files, .. } => {
                let prefix = join_rel(dir, "");
                let mut names: Vec<String> = files
                    .keys()
                    .filter_map(|k| k.strip_prefix(&prefix))
                    .map(|rest| match rest.split_once('/') {
                        Some((folder, _)) => format!("{folder}/"),
                        None => rest.to_string(),
                    })
                    .collect();
                names.dedup();
                names
            }
        };
        found.sort();
        found
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
