//! Where bytes come from: files on disk (positioned reads, never memory
//! maps, so a file truncated while loading yields an error, not SIGBUS) or
//! buffers in memory; and model folders on either, with names from JSON
//! checked so they cannot leave the folder.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::plan::{open_file, open_memory, FilePlan};
use crate::{Error, Result};

/// The bytes of one weights file.
#[derive(Debug)]
pub(crate) enum Reader {
    File(File),
    Memory(Arc<[u8]>),
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
                    buf = &mut buf[n..];
                    offset += n as u64;
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

/// A model folder, on disk or in memory. Relative names use `/`.
pub(crate) enum Root {
    /// `dir`, whose files must resolve inside `jail` (the folder itself, or
    /// for a hub snapshot the repo's cache folder, whose blobs the snapshot
    /// links to).
    Dir {
        dir: PathBuf,
        jail: PathBuf,
    },
    Memory(Arc<BTreeMap<String, Arc<[u8]>>>),
}

impl Root {
    pub(crate) fn dir(dir: PathBuf, jail: PathBuf) -> Self {
        Root::Dir { dir, jail }
    }

    /// The path to name in errors.
    pub(crate) fn display(&self, rel: &str) -> PathBuf {
        match self {
            Root::Dir { dir, .. } => dir.join(rel),
            Root::Memory(_) => PathBuf::from(rel),
        }
    }

    /// A name taken from a JSON file, checked to stay inside the folder.
    pub(crate) fn checked(&self, name: &str) -> Result<String> {
        let rel = Path::new(name);
        let normal = !name.is_empty()
            && !name.contains('\\')
            && rel
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !normal {
            return Err(Error::PathEscape { path: rel.into() });
        }
        if let Root::Dir { dir, jail } = self {
            contained(dir, jail, name)?;
        }
        Ok(name.trim_start_matches("./").to_string())
    }

    pub(crate) fn has_file(&self, rel: &str) -> bool {
        match self {
            Root::Dir { dir, .. } => dir.join(rel).is_file(),
            Root::Memory(files) => files.contains_key(rel),
        }
    }

    /// The `.safetensors` files directly in `dir` (relative names).
    pub(crate) fn safetensors_in(&self, dir: &str) -> Vec<String> {
        let mut found: Vec<String> = match self {
            Root::Dir { dir: root, .. } => std::fs::read_dir(root.join(dir))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.ends_with(".safetensors"))
                .collect(),
            Root::Memory(files) => {
                let prefix = if dir.is_empty() {
                    String::new()
                } else {
                    format!("{dir}/")
                };
                files
                    .keys()
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
            || self.has_file(&format!("{dir}/model.safetensors.index.json"))
            || self.has_file(&format!(
                "{dir}/diffusion_pytorch_model.safetensors.index.json"
            ))
    }

    pub(crate) fn read_json(&self, rel: &str) -> Result<Option<Value>> {
        let path = self.display(rel);
        let bytes: Arc<[u8]> = match self {
            Root::Dir { dir, jail } => {
                let full = dir.join(rel);
                match std::fs::read(&full) {
                    Ok(bytes) => {
                        contained(dir, jail, rel)?;
                        bytes.into()
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(Error::io(full, &e)),
                }
            }
            Root::Memory(files) => match files.get(rel) {
                Some(bytes) => bytes.clone(),
                None => return Ok(None),
            },
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::InvalidConfig {
                path,
                problem: e.to_string(),
            })
    }

    pub(crate) fn open_weights(&self, rel: &str) -> Result<FilePlan> {
        match self {
            Root::Dir { dir, jail } => {
                let path = contained(dir, jail, rel)?;
                open_file(&path)
            }
            Root::Memory(files) => {
                let bytes = files.get(rel).ok_or_else(|| Error::MissingFile {
                    path: PathBuf::from(rel),
                })?;
                open_memory(PathBuf::from(rel), bytes.clone())
            }
        }
    }
}

/// `dir/rel`, refusing a path that resolves (through symlinks) outside
/// `jail`. A path that does not exist is returned as is: opening it reports
/// it missing.
pub(crate) fn contained(dir: &Path, jail: &Path, rel: &str) -> Result<PathBuf> {
    let joined = dir.join(rel);
    if let (Ok(real), Ok(root)) = (joined.canonicalize(), jail.canonicalize()) {
        if !real.starts_with(&root) {
            return Err(Error::PathEscape { path: joined });
        }
    }
    Ok(joined)
}
