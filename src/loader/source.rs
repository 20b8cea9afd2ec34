//! Model sources and their resolution into a load plan (files, headers and
//! configs), done before anything is allocated.

use std::fmt;
use std::fs::File;
use std::path::{Component as PathPart, Path, PathBuf};

use serde_json::Value;

use super::safetensors::{parse_header, Header};
use crate::{Error, Result};

/// What to load.
///
/// ```
/// use model_manager::ModelSource;
///
/// let a = ModelSource::path("models/tiny");
/// assert_eq!(a, ModelSource::from("models/tiny"));
/// assert_eq!(a.to_string(), "models/tiny");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ModelSource {
    /// A `.safetensors` file, or a model folder (`config.json` plus
    /// `model.safetensors` or shards listed in `model.safetensors.index.json`).
    Path(PathBuf),
}

impl ModelSource {
    /// A file or folder on disk.
    pub fn path(path: impl Into<PathBuf>) -> Self {
        ModelSource::Path(path.into())
    }

    /// A single `.safetensors` file (same as [`ModelSource::path`]).
    pub fn file(path: impl Into<PathBuf>) -> Self {
        ModelSource::Path(path.into())
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

impl From<&str> for ModelSource {
    fn from(s: &str) -> Self {
        ModelSource::path(s)
    }
}

impl From<String> for ModelSource {
    fn from(s: String) -> Self {
        ModelSource::path(s)
    }
}

impl From<PathBuf> for ModelSource {
    fn from(p: PathBuf) -> Self {
        ModelSource::Path(p)
    }
}

impl From<&PathBuf> for ModelSource {
    fn from(p: &PathBuf) -> Self {
        ModelSource::path(p)
    }
}

impl From<&Path> for ModelSource {
    fn from(p: &Path) -> Self {
        ModelSource::path(p)
    }
}

/// One weights file, opened, with its validated header.
#[derive(Debug)]
pub(crate) struct FilePlan {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    pub(crate) header: Header,
}

/// One component: its config and its weights files.
#[derive(Debug)]
pub(crate) struct ComponentPlan {
    pub(crate) name: String,
    pub(crate) config: Option<Value>,
    pub(crate) files: Vec<FilePlan>,
}

/// Everything a load will read, known before anything is allocated.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) components: Vec<ComponentPlan>,
    pub(crate) config: Option<Value>,
    pub(crate) sample_size: Option<u64>,
}

impl Plan {
    pub(crate) fn bytes(&self) -> u64 {
        self.files().map(|f| f.header.data_bytes()).sum()
    }

    pub(crate) fn tensor_count(&self) -> u64 {
        self.files().map(|f| f.header.tensors.len() as u64).sum()
    }

    fn files(&self) -> impl Iterator<Item = &FilePlan> {
        self.components.iter().flat_map(|c| c.files.iter())
    }
}

/// Resolve a source into a plan: open files, parse headers and configs.
pub(crate) fn resolve(source: &ModelSource) -> Result<Plan> {
    match source {
        ModelSource::Path(path) => {
            if path.as_os_str().is_empty() {
                return Err(Error::InvalidArgument("empty model path".into()));
            }
            let meta = std::fs::metadata(path).map_err(|e| Error::io(path, &e))?;
            if meta.is_dir() {
                resolve_folder(path)
            } else {
                let file = open_weights(path)?;
                Ok(Plan {
                    components: vec![ComponentPlan {
                        name: "model".into(),
                        config: None,
                        files: vec![file],
                    }],
                    config: None,
                    sample_size: None,
                })
            }
        }
    }
}

fn resolve_folder(dir: &Path) -> Result<Plan> {
    let config = read_json_if_exists(&dir.join("config.json"))?;
    let files = weights_in(dir)?;
    let sample_size = config.as_ref().and_then(sample_size_of);
    Ok(Plan {
        components: vec![ComponentPlan {
            name: "model".into(),
            config: config.clone(),
            files,
        }],
        config,
        sample_size,
    })
}

/// The weights of one model folder: shards listed in an index, or a single file.
pub(crate) fn weights_in(dir: &Path) -> Result<Vec<FilePlan>> {
    for stem in ["model", "diffusion_pytorch_model"] {
        let index = dir.join(format!("{stem}.safetensors.index.json"));
        if let Some(json) = read_json_if_exists(&index)? {
            return shards(dir, &index, &json);
        }
        let single = dir.join(format!("{stem}.safetensors"));
        if single.is_file() {
            return Ok(vec![open_weights(&single)?]);
        }
    }
    Err(Error::MissingFile {
        path: dir.join("model.safetensors"),
    })
}

fn shards(dir: &Path, index: &Path, json: &Value) -> Result<Vec<FilePlan>> {
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::InvalidConfig {
            path: index.into(),
            problem: "no \"weight_map\" object".into(),
        })?;
    let mut names: Vec<&str> = Vec::new();
    for (tensor, shard) in map {
        let shard = shard.as_str().ok_or_else(|| Error::InvalidConfig {
            path: index.into(),
            problem: format!("tensor {tensor:?} maps to a non-string shard"),
        })?;
        if !names.contains(&shard) {
            names.push(shard);
        }
    }
    names.sort_unstable();
    names
        .into_iter()
        .map(|name| open_weights(&contained(dir, name)?))
        .collect()
}

/// `dir/name`, refusing names that leave `dir` (`..`, absolute paths, or a
/// symlink resolving outside it).
pub(crate) fn contained(dir: &Path, name: &str) -> Result<PathBuf> {
    let rel = Path::new(name);
    let escapes = name.is_empty()
        || rel
            .components()
            .any(|c| !matches!(c, PathPart::Normal(_) | PathPart::CurDir));
    if escapes {
        return Err(Error::PathEscape { path: rel.into() });
    }
    let joined = dir.join(rel);
    if let (Ok(real), Ok(root)) = (joined.canonicalize(), dir.canonicalize()) {
        if !real.starts_with(&root) {
            return Err(Error::PathEscape { path: joined });
        }
    }
    Ok(joined)
}

pub(crate) fn open_weights(path: &Path) -> Result<FilePlan> {
    let file = File::open(path).map_err(|e| Error::io(path, &e))?;
    let len = file.metadata().map_err(|e| Error::io(path, &e))?.len();
    let header = parse_header(path, len, |offset, n| {
        let mut buf = vec![0u8; n];
        read_exact_at(&file, &mut buf, offset)?;
        Ok(buf)
    })?;
    Ok(FilePlan {
        path: path.into(),
        file,
        header,
    })
}

pub(crate) fn read_json_if_exists(path: &Path) -> Result<Option<Value>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::InvalidConfig {
                path: path.into(),
                problem: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, &e)),
    }
}

/// `sample_size` from a config: an integer, or the first of a list.
pub(crate) fn sample_size_of(config: &Value) -> Option<u64> {
    match config.get("sample_size")? {
        Value::Number(n) => n.as_u64(),
        Value::Array(items) => items.first().and_then(Value::as_u64),
        _ => None,
    }
}

/// Positioned read of exactly `buf.len()` bytes.
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
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
