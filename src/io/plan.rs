//! Resolution of a [`ModelSource`] into a load plan: every file opened, every
//! header parsed and validated, every config read, before anything is
//! allocated.
//!
//! Nothing here panics on what a file holds: names from JSON are normalised
//! and checked by [`Root::normalized`] and [`Root::checked`] (a shard is
//! checked against the folder again when it is opened), counts add up
//! saturating.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

pub(crate) use super::files::FilePlan;
use super::files::{open_file, open_memory};
use super::hint;
use super::root::{join_rel, Root};
use super::source::ModelSource;
use crate::error::{Error, Result};

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
        self.files()
            .fold(0u64, |sum, f| sum.saturating_add(f.header.data_bytes()))
    }

    pub(crate) fn tensor_count(&self) -> u64 {
        self.files().fold(0u64, |sum, f| {
            sum.saturating_add(f.header.tensors.len() as u64)
        })
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
            let meta = std::fs::metadata(path).map_err(|e| missing_path(path, &e))?;
            if meta.is_dir() {
                resolve_root(&Root::dir(path.clone(), path.clone()))
            } else {
                let file = open_file(path)?;
                Ok(single(file))
            }
        }
        ModelSource::Hub {
            repo,
            revision,
            download,
        } => {
            // The cache only, whatever the download switch says (in the
            // switch's cache folder, if it names one): what downloads is a
            // load or a pull (`resolve_for_load`, `estimate`, `pull`), with
            // their cancel and progress, never `inspect`, which reads
            // headers only.
            let cache = download.as_ref().and_then(|d| d.cache());
            let (snapshot, jail) = super::hub::snapshot(cache, repo, revision.as_deref())?;
            resolve_root(&Root::dir(snapshot, jail))
        }
        ModelSource::Bytes(bytes) => Ok(single(open_memory(
            PathBuf::from("model.safetensors"),
            bytes.clone(),
        )?)),
        ModelSource::Files(files) => resolve_root(&Root::Memory(files.clone())),
        ModelSource::Stream(_) => Err(Error::InvalidArgument(
            "a stream's files are read once, by its load: it cannot be inspected".into(),
        )),
        ModelSource::Parked(_) => Err(Error::InvalidArgument(
            "a parked model has no files: its pool loads it back from host memory".into(),
        )),
    }
}

impl Plan {
    /// The plan of a source read without files (a parked model).
    pub(crate) fn empty() -> Plan {
        Plan {
            components: Vec::new(),
            config: None,
            sample_size: None,
        }
    }
}

/// The error for a path that cannot be read: a missing relative path that
/// reads as a hub repo id (`org/name`, `org/name@rev`) says how to load the
/// repo instead.
fn missing_path(path: &Path, err: &std::io::Error) -> Error {
    let text = path.to_str().unwrap_or_default();
    let (repo, revision) = text.split_once('@').unwrap_or((text, ""));
    let repo_like = err.kind() == std::io::ErrorKind::NotFound
        && path.is_relative()
        && !text.starts_with('.')
        && super::hub::is_repo_id(repo);
    if !repo_like {
        return Error::io(path, err);
    }
    let hub = if revision.is_empty() {
        format!("ModelSource::hub({repo:?})")
    } else {
        format!("ModelSource::hub_revision({repo:?}, {revision:?})")
    };
    Error::NotFound {
        path: path.into(),
        problem: format!(
            "no such file or folder (a path: to load the hub repo {repo} from the local \
             cache, use {hub})"
        ),
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
pub(crate) fn resolve_root(root: &Root) -> Result<Plan> {
    if let Some(index) = root.read_json("model_index.json")? {
        return resolve_pipeline(root, &index);
    }
    let config = root.read_json("config.json")?;
    let files = weights_in(root, "")?.ok_or_else(|| no_weights(root, ""))?;
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
        let dir = root.checked(name, "model_index.json")?;
        let config = match root.read_json(&format!("{dir}/config.json"))? {
            Some(c) => Some(c),
            None => root.read_json(&format!("{dir}/scheduler_config.json"))?,
        };
        // A component without weights (a scheduler) is recorded.
        let files = weights_in(root, &dir)?.unwrap_or_default();
        components.push(ComponentPlan {
            name: name.clone(),
            config,
            files,
        });
    }
    if components.iter().all(|c| c.files.is_empty()) {
        return Err(Error::invalid_model(index_path, no_component(&components)));
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
/// root itself), safetensors first, as diffusers and transformers prefer
/// it: shards listed in an index, a single file with a standard name, or
/// the folder's only `.safetensors` file; then the same for PyTorch's
/// weights (`pytorch_model.bin`, `diffusion_pytorch_model.bin`, their
/// `.bin.index.json`, or the only `.bin`/`.pt`/`.pth` file). `None` if it
/// holds neither.
fn weights_in(root: &Root, dir: &str) -> Result<Option<Vec<FilePlan>>> {
    for stem in ["model", "diffusion_pytorch_model"] {
        if let Some(files) = named_weights(root, dir, &format!("{stem}.safetensors"))? {
            return Ok(Some(files));
        }
    }
    if let Some(files) = only_one(root, dir, hint::is_safetensors_name)? {
        return Ok(Some(files));
    }
    for name in ["pytorch_model.bin", "diffusion_pytorch_model.bin"] {
        if let Some(files) = named_weights(root, dir, name)? {
            return Ok(Some(files));
        }
    }
    only_one(root, dir, hint::is_pytorch_name)
}

/// The weights file `name` in `dir`, or the shards its `NAME.index.json`
/// lists.
fn named_weights(root: &Root, dir: &str, name: &str) -> Result<Option<Vec<FilePlan>>> {
    let index = join_rel(dir, &format!("{name}.index.json"));
    if let Some(json) = root.read_json(&index)? {
        return shards(root, dir, &index, &json).map(Some);
    }
    let single = join_rel(dir, name);
    if root.has_file(&single) {
        return Ok(Some(vec![root.open_weights(&single)?]));
    }
    Ok(None)
}

/// The folder's only weights file of a kind; an error if it holds several.
fn only_one(root: &Root, dir: &str, kind: fn(&str) -> bool) -> Result<Option<Vec<FilePlan>>> {
    match root.files_in(dir, kind).as_slice() {
        [] => Ok(None),
        [only] => Ok(Some(vec![root.open_weights(&join_rel(dir, only))?])),
        _ => Err(no_weights(root, dir)),
    }
}

/// A folder with nothing to load: the layouts looked for, what it holds.
fn no_weights(root: &Root, dir: &str) -> Error {
    Error::NotFound {
        path: root.folder(dir),
        problem: hint::no_weights(&root.entries_in(dir)),
    }
}

/// Why no component of a pipeline has weights: where they were looked
/// for.
fn no_component(components: &[ComponentPlan]) -> String {
    if components.is_empty() {
        return "the pipeline lists no component".into();
    }
    let looked: Vec<String> = components.iter().map(|c| format!("{}/", c.name)).collect();
    format!(
        "the pipeline has no component with weights: looked in {} for {}",
        hint::names(&looked),
        hint::COMPONENT_LAYOUTS
    )
}

/// The shards a `*.safetensors.index.json` (or `*.bin.index.json`) lists (each opened once, however
/// its name is spelled: `a.safetensors` and `./a.safetensors` are one file),
/// checked to hold every tensor the index places in them, and no tensor
/// twice.
fn shards(root: &Root, dir: &str, index: &str, json: &Value) -> Result<Vec<FilePlan>> {
    let index_path = root.display(index);
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::InvalidConfig {
            path: index_path.clone(),
            problem: "no \"weight_map\" object".into(),
        })?;
    if map.is_empty() {
        return Err(Error::InvalidConfig {
            path: index_path,
            problem: "\"weight_map\" is empty".into(),
        });
    }
    // Each name as written -> its normalised name (relative to `dir`).
    let mut normal: BTreeMap<&str, String> = BTreeMap::new();
    for (tensor, shard) in map {
        let shard = shard.as_str().ok_or_else(|| Error::InvalidConfig {
            path: index_path.clone(),
            problem: format!("tensor {tensor:?} maps to a non-string shard"),
        })?;
        if !normal.contains_key(shard) {
            normal.insert(shard, root.normalized(shard, index)?);
        }
    }
    // Each normalised name -> its file, opened once, in name order.
    let mut opened: BTreeMap<&str, usize> = BTreeMap::new();
    let mut names: Vec<&str> = normal.values().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    let mut files = Vec::with_capacity(names.len());
    let mut held: Vec<HashSet<&str>> = Vec::with_capacity(names.len());
    for name in names {
        opened.insert(name, files.len());
        files.push(root.open_weights(&join_rel(dir, name))?);
    }
    // No tensor may be in two shards: which copy would load is arbitrary.
    let mut seen: HashSet<&str> = HashSet::new();
    for file in &files {
        for t in &file.header.tensors {
            if !seen.insert(t.name.as_str()) {
                return Err(Error::invalid_model(
                    &file.path,
                    format!("tensor {:?} is also in another file of the model", t.name),
                ));
            }
        }
        held.push(
            file.header
                .tensors
                .iter()
                .map(|t| t.name.as_str())
                .collect(),
        );
    }
    // Every tensor the index names must be in the shard it names.
    for (tensor, shard) in map {
        let found = shard
            .as_str()
            .and_then(|shard| normal.get(shard))
            .and_then(|name| opened.get(name.as_str()))
            .and_then(|&i| Some((files.get(i)?, held.get(i)?)));
        let Some((file, held)) = found else {
            return Err(Error::InvalidConfig {
                path: index_path,
                problem: format!("tensor {tensor:?} maps to a shard that was not opened"),
            });
        };
        if !held.contains(tensor.as_str()) {
            return Err(Error::invalid_model(
                &file.path,
                format!("the index places tensor {tensor:?} here, but the file does not hold it"),
            ));
        }
    }
    Ok(files)
}

/// `sample_size` from a config: an integer, or the first of a list.
pub(crate) fn sample_size_of(config: &Value) -> Option<u64> {
    match config.get("sample_size")? {
        Value::Number(n) => n.as_u64(),
        Value::Array(items) => items.first().and_then(Value::as_u64),
        _ => None,
    }
}
