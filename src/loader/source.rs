//! Model sources and their resolution into a load plan (files, headers and
//! configs), done before anything is allocated.
//!
//! Layouts understood, on disk and in memory alike:
//! - a single `.safetensors` file;
//! - a model folder: `config.json` + `model.safetensors`, or shards listed in
//!   `model.safetensors.index.json` (or the diffusers names
//!   `diffusion_pytorch_model.safetensors[.index.json]`);
//! - a diffusers pipeline: `model_index.json` + one subfolder per component,
//!   each a model folder; components without weights (scheduler, tokenizer)
//!   are recorded, not loaded;
//! - a Hugging Face hub cache entry, resolved offline (see [`ModelSource::hub`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::files::{read_exact_at, Reader, Root};
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
///
/// let hub = ModelSource::hub("stabilityai/sd-turbo");
/// assert_eq!(hub.to_string(), "stabilityai/sd-turbo@main");
///
/// // Bytes a browser fetched: identity is the buffer, not its contents.
/// let bytes = ModelSource::bytes(vec![0u8; 16]);
/// assert_eq!(bytes, bytes.clone());
/// assert_ne!(bytes, ModelSource::bytes(vec![0u8; 16]));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ModelSource {
    /// A `.safetensors` file, a model folder or a diffusers pipeline folder.
    Path(PathBuf),
    /// A Hugging Face hub cache entry, resolved offline by repo id.
    Hub {
        /// `ORG/NAME`.
        repo: String,
        /// A branch or tag (resolved through `refs/`), or a commit hash;
        /// `None` means `main`.
        revision: Option<String>,
    },
    /// One safetensors file held in memory.
    Bytes(Arc<[u8]>),
    /// A model folder or diffusers pipeline held in memory: relative file
    /// names (`unet/config.json`) to their contents.
    Files(Arc<BTreeMap<String, Arc<[u8]>>>),
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

    /// A repo in the local Hugging Face hub cache, at `main`. Looked up in
    /// `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`;
    /// never touches the network.
    pub fn hub(repo: impl Into<String>) -> Self {
        ModelSource::Hub {
            repo: repo.into(),
            revision: None,
        }
    }

    /// A repo in the local hub cache at a branch, tag or commit.
    pub fn hub_revision(repo: impl Into<String>, revision: impl Into<String>) -> Self {
        ModelSource::Hub {
            repo: repo.into(),
            revision: Some(revision.into()),
        }
    }

    /// What a command-line argument names: an existing file or folder, else
    /// a hub repo id (`ORG/NAME`, with an optional `@REVISION`), else a path
    /// (which a load then reports missing).
    ///
    /// ```
    /// use model_manager::ModelSource;
    ///
    /// assert_eq!(ModelSource::guess("acme/tiny@v1"), ModelSource::hub_revision("acme/tiny", "v1"));
    /// assert_eq!(ModelSource::guess("./no/such/dir"), ModelSource::path("./no/such/dir"));
    /// ```
    pub fn guess(arg: &str) -> Self {
        if Path::new(arg).exists() {
            return ModelSource::path(arg);
        }
        let (repo, revision) = match arg.split_once('@') {
            Some((repo, rev)) => (repo, Some(rev)),
            None => (arg, None),
        };
        if super::hub::is_repo_id(repo) && !arg.starts_with('.') {
            return ModelSource::Hub {
                repo: repo.into(),
                revision: revision.map(Into::into),
            };
        }
        ModelSource::path(arg)
    }

    /// One safetensors file in memory.
    pub fn bytes(bytes: impl Into<Arc<[u8]>>) -> Self {
        ModelSource::Bytes(bytes.into())
    }

    /// A multi-file layout in memory, from `(relative name, contents)` pairs.
    pub fn files<N: Into<String>, B: Into<Arc<[u8]>>>(
        files: impl IntoIterator<Item = (N, B)>,
    ) -> Self {
        ModelSource::Files(Arc::new(
            files
                .into_iter()
                .map(|(n, b)| (n.into(), b.into()))
                .collect(),
        ))
    }
}

/// Paths and hub ids compare by value; in-memory sources by identity (the
/// same buffer), so comparing never reads gigabytes.
impl PartialEq for ModelSource {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ModelSource::Path(a), ModelSource::Path(b)) => a == b,
            (
                ModelSource::Hub {
                    repo: a,
                    revision: ra,
                },
                ModelSource::Hub {
                    repo: b,
                    revision: rb,
                },
            ) => a == b && ra.as_deref().unwrap_or("main") == rb.as_deref().unwrap_or("main"),
            (ModelSource::Bytes(a), ModelSource::Bytes(b)) => Arc::ptr_eq(a, b),
            (ModelSource::Files(a), ModelSource::Files(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for ModelSource {}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Path(p) => write!(f, "{}", p.display()),
            ModelSource::Hub { repo, revision } => {
                write!(f, "{repo}@{}", revision.as_deref().unwrap_or("main"))
            }
            ModelSource::Bytes(b) => write!(f, "<{} bytes in memory>", b.len()),
            ModelSource::Files(m) => write!(f, "<{} files in memory>", m.len()),
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

impl From<Vec<u8>> for ModelSource {
    fn from(bytes: Vec<u8>) -> Self {
        ModelSource::bytes(bytes)
    }
}

/// One weights file, opened, with its validated header.
#[derive(Debug)]
pub(crate) struct FilePlan {
    pub(crate) path: PathBuf,
    pub(crate) reader: Reader,
    pub(crate) header: Header,
}

/// One component: its config and its weights files (none for components
/// such as a scheduler or tokenizer, which are recorded, not loaded).
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

    pub(crate) fn files(&self) -> impl Iterator<Item = &FilePlan> {
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
                resolve_root(&Root::dir(path.clone(), path.clone()))
            } else {
                let file = open_file(path)?;
                Ok(single(file))
            }
        }
        ModelSource::Hub { repo, revision } => {
            let (snapshot, jail) = super::hub::snapshot(repo, revision.as_deref())?;
            resolve_root(&Root::dir(snapshot, jail))
        }
        ModelSource::Bytes(bytes) => Ok(single(open_memory(
            PathBuf::from("model.safetensors"),
            bytes.clone(),
        )?)),
        ModelSource::Files(files) => resolve_root(&Root::Memory(files.clone())),
    }
}

fn single(file: FilePlan) -> Plan {
    Plan {
        components: vec![ComponentPlan {
            name: "model".into(),
            config: None,
            files: vec![file],
        }],
        config: None,
        sample_size: None,
    }
}

/// A folder (on disk or in memory): a diffusers pipeline, a model folder, or
/// a folder holding a single weights file.
fn resolve_root(root: &Root) -> Result<Plan> {
    if let Some(index) = root.read_json("model_index.json")? {
        return resolve_pipeline(root, &index);
    }
    let config = root.read_json("config.json")?;
    let files = weights_in(root, "")?;
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

/// A diffusers pipeline: `model_index.json` names the components.
fn resolve_pipeline(root: &Root, index: &Value) -> Result<Plan> {
    let index_path = root.display("model_index.json");
    let entries = index.as_object().ok_or_else(|| Error::InvalidConfig {
        path: index_path.clone(),
        problem: "not a JSON object".into(),
    })?;
    let mut components = Vec::new();
    for (name, spec) in entries {
        // `_class_name`, `_diffusers_version`, ...; and `null` or
        // `[null, null]` entries are optional components that are absent.
        let present = spec
            .as_array()
            .is_some_and(|parts| parts.iter().any(|p| !p.is_null()));
        if name.starts_with('_') || !present {
            continue;
        }
        let dir = root.checked(name)?;
        let config = match root.read_json(&format!("{dir}/config.json"))? {
            Some(c) => Some(c),
            None => root.read_json(&format!("{dir}/scheduler_config.json"))?,
        };
        let files = match weights_in(root, &dir) {
            Ok(files) => files,
            Err(Error::MissingFile { .. }) if !root.has_any_weights(&dir) => Vec::new(),
            Err(e) => return Err(e),
        };
        components.push(ComponentPlan {
            name: name.clone(),
            config,
            files,
        });
    }
    if components.iter().all(|c| c.files.is_empty()) {
        return Err(Error::invalid_model(
            index_path,
            "the pipeline has no component with weights",
        ));
    }
    let denoiser = ["unet", "transformer"]
        .iter()
        .find_map(|d| components.iter().find(|c| c.name == *d))
        .and_then(|c| c.config.as_ref())
        .and_then(sample_size_of);
    let top = root.read_json("config.json")?;
    let sample_size = denoiser.or_else(|| top.as_ref().and_then(sample_size_of));
    Ok(Plan {
        components,
        config: Some(index.clone()),
        sample_size,
    })
}

/// The weights of one model folder (`dir` relative to the root, `""` for the
/// root itself): shards listed in an index, a single file with a standard
/// name, or the folder's only `.safetensors` file.
fn weights_in(root: &Root, dir: &str) -> Result<Vec<FilePlan>> {
    let join = |name: &str| {
        if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        }
    };
    for stem in ["model", "diffusion_pytorch_model"] {
        let index = join(&format!("{stem}.safetensors.index.json"));
        if let Some(json) = root.read_json(&index)? {
            return shards(root, dir, &index, &json);
        }
        let single = join(&format!("{stem}.safetensors"));
        if root.has_file(&single) {
            return Ok(vec![root.open_weights(&single)?]);
        }
    }
    let found = root.safetensors_in(dir);
    if let [only] = found.as_slice() {
        return Ok(vec![root.open_weights(&join(only))?]);
    }
    Err(Error::MissingFile {
        path: root.display(&join("model.safetensors")),
    })
}

fn shards(root: &Root, dir: &str, index: &str, json: &Value) -> Result<Vec<FilePlan>> {
    let index_path = root.display(index);
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::InvalidConfig {
            path: index_path.clone(),
            problem: "no \"weight_map\" object".into(),
        })?;
    let mut names: Vec<&str> = Vec::new();
    for (tensor, shard) in map {
        let shard = shard.as_str().ok_or_else(|| Error::InvalidConfig {
            path: index_path.clone(),
            problem: format!("tensor {tensor:?} maps to a non-string shard"),
        })?;
        if !names.contains(&shard) {
            names.push(shard);
        }
    }
    if names.is_empty() {
        return Err(Error::InvalidConfig {
            path: index_path,
            problem: "\"weight_map\" is empty".into(),
        });
    }
    names.sort_unstable();
    let files = names
        .into_iter()
        .map(|name| {
            let rel = root.checked(name)?;
            let rel = if dir.is_empty() {
                rel
            } else {
                format!("{dir}/{rel}")
            };
            root.open_weights(&rel)
        })
        .collect::<Result<Vec<_>>>()?;
    // Every tensor the index names must be in the shard it names.
    for (tensor, shard) in map {
        let shard = shard.as_str().unwrap_or_default();
        let file = files
            .iter()
            .find(|f| f.path.ends_with(shard))
            .expect("every shard named was opened");
        if !file.header.tensors.iter().any(|t| &t.name == tensor) {
            return Err(Error::invalid_model(
                &file.path,
                format!("the index places tensor {tensor:?} here, but the file does not hold it"),
            ));
        }
    }
    Ok(files)
}

pub(crate) fn open_file(path: &Path) -> Result<FilePlan> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, &e))?;
    let len = file.metadata().map_err(|e| Error::io(path, &e))?.len();
    open_reader(path.into(), Reader::File(file), len)
}

pub(crate) fn open_memory(path: PathBuf, bytes: Arc<[u8]>) -> Result<FilePlan> {
    let len = bytes.len() as u64;
    open_reader(path, Reader::Memory(bytes), len)
}

fn open_reader(path: PathBuf, reader: Reader, len: u64) -> Result<FilePlan> {
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

/// `sample_size` from a config: an integer, or the first of a list.
pub(crate) fn sample_size_of(config: &Value) -> Option<u64> {
    match config.get("sample_size")? {
        Value::Number(n) => n.as_u64(),
        Value::Array(items) => items.first().and_then(Value::as_u64),
        _ => None,
    }
}
