//! Which files of a hub repo a load needs, decided from the repo's list of
//! files the way the offline loader (`plan`) reads a folder: a diffusers
//! pipeline's `model_index.json` and each listed component's config and
//! weights; else `config.json` and the weights: a `*.safetensors.index.json`
//! and its shards, `model.safetensors` (or the diffusers name), or the
//! folder's one `.safetensors` file; PyTorch's weights (`.bin`, `.pt`,
//! `.pth`) only where a folder has no safetensors, as the loader prefers
//! them. JSON files that decide the rest (the pipeline's index, a shard
//! index) are fetched first, through `json`.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::io::hint;
use crate::io::root::join_rel;

/// Fetches a JSON file of the repo into the cache and parses it.
pub(crate) type Json<'a> = dyn FnMut(&str) -> Result<Value> + 'a;

/// The files to fetch besides those read through `json` (which fetches
/// them itself), in order; `repo` names the repo in errors.
pub(crate) fn needed(
    repo: &Path,
    files: &BTreeSet<String>,
    json: &mut Json<'_>,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    if files.contains("model_index.json") {
        let index = json("model_index.json")?;
        let entries = index.as_object().ok_or_else(|| Error::InvalidConfig {
            path: repo.join("model_index.json"),
            problem: "not a JSON object".into(),
        })?;
        let mut any = false;
        for (name, spec) in entries {
            let present = spec
                .as_array()
                .is_some_and(|parts| parts.iter().any(|p| !p.is_null()));
            if name.starts_with('_') || !present {
                continue;
            }
            let dir = relative(name).ok_or_else(|| Error::PathEscape {
                path: repo.join(name),
            })?;
            for config in ["config.json", "scheduler_config.json"] {
                let config = join_rel(&dir, config);
                if files.contains(&config) {
                    out.push(config);
                    break;
                }
            }
            if let Some(weights) = weights_in(repo, files, &dir, json)? {
                any = true;
                out.extend(weights);
            }
        }
        if !any {
            return Err(Error::invalid_model(
                repo.join("model_index.json"),
                "the pipeline has no component with weights in the repo",
            ));
        }
    } else {
        let weights = weights_in(repo, files, "", json)?.ok_or_else(|| Error::NotFound {
            path: repo.to_path_buf(),
            problem: format!(
                "the repo has no weights to load: {}",
                hint::no_weights(&top_level(files))
                    .replace("the folder holds", "the repo holds")
                    .replace("the folder is empty", "the repo is empty")
            ),
        })?;
        out.extend(weights);
    }
    if files.contains("config.json") {
        out.push("config.json".into());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The weights of one folder of the repo (`""` for its root), as
/// `plan::weights_in` finds them: safetensors first (an index and its
/// shards, `model.safetensors` or the diffusers name, the folder's one
/// `.safetensors` file), then PyTorch's weights the same way
/// (`pytorch_model.bin`, `diffusion_pytorch_model.bin`, their
/// `.bin.index.json`, the one `.bin`/`.pt`/`.pth` file); `None` when it
/// holds neither.
fn weights_in(
    repo: &Path,
    files: &BTreeSet<String>,
    dir: &str,
    json: &mut Json<'_>,
) -> Result<Option<Vec<String>>> {
    for name in ["model.safetensors", "diffusion_pytorch_model.safetensors"] {
        if let Some(found) = named(repo, files, dir, name, json)? {
            return Ok(Some(found));
        }
    }
    if let Some(found) = only_one(
        repo,
        files,
        dir,
        hint::is_safetensors_name,
        "model.safetensors",
    )? {
        return Ok(Some(found));
    }
    for name in ["pytorch_model.bin", "diffusion_pytorch_model.bin"] {
        if let Some(found) = named(repo, files, dir, name, json)? {
            return Ok(Some(found));
        }
    }
    only_one(repo, files, dir, hint::is_pytorch_name, "pytorch_model.bin")
}

/// The weights file `name` in `dir`, or the shards its `NAME.index.json`
/// lists.
fn named(
    repo: &Path,
    files: &BTreeSet<String>,
    dir: &str,
    name: &str,
    json: &mut Json<'_>,
) -> Result<Option<Vec<String>>> {
    let index = join_rel(dir, &format!("{name}.index.json"));
    if files.contains(&index) {
        return shards(repo, files, dir, &index, &json(&index)?).map(Some);
    }
    let single = join_rel(dir, name);
    Ok(files.contains(&single).then(|| vec![single]))
}

/// The folder's one weights file of a kind; an error if it holds several
/// (`index` names the index that would list them).
fn only_one(
    repo: &Path,
    files: &BTreeSet<String>,
    dir: &str,
    kind: fn(&str) -> bool,
    index: &str,
) -> Result<Option<Vec<String>>> {
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let direct: Vec<&String> = files
        .iter()
        .filter(|f| {
            f.strip_prefix(&prefix)
                .is_some_and(|rest| !rest.contains('/') && kind(rest))
        })
        .collect();
    match direct.as_slice() {
        [] => Ok(None),
        [only] => Ok(Some(vec![(*only).clone()])),
        _ => Err(Error::NotFound {
            path: repo.join(dir),
            problem: format!(
                "several weights files ({}) and no {index}.index.json to list them: \
                 download the one to load and give its path",
                hint::names(&direct.into_iter().cloned().collect::<Vec<_>>())
            ),
        }),
    }
}

/// A shard index and the shards it lists, each in the repo.
fn shards(
    repo: &Path,
    files: &BTreeSet<String>,
    dir: &str,
    index: &str,
    json: &Value,
) -> Result<Vec<String>> {
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::InvalidConfig {
            path: repo.join(index),
            problem: "no \"weight_map\" object".into(),
        })?;
    let mut out = BTreeSet::new();
    for shard in map.values() {
        let name = shard
            .as_str()
            .and_then(relative)
            .map(|s| join_rel(dir, &s))
            .ok_or_else(|| Error::PathEscape {
                path: repo.join(dir).join(shard.as_str().unwrap_or("?")),
            })?;
        if !files.contains(&name) {
            return Err(Error::NotFound {
                path: repo.join(&name),
                problem: format!("{index} lists this shard, which the repo does not hold"),
            });
        }
        out.insert(name);
    }
    Ok(out.into_iter().collect())
}

/// `name` as a plain relative path (`./` and empty parts dropped), or
/// `None` if it could leave the folder (`..`, absolute, `\`).
pub(crate) fn relative(name: &str) -> Option<String> {
    if name.starts_with('/') || name.contains('\\') || name.contains('\0') {
        return None;
    }
    let parts: Vec<&str> = name
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        return None;
    }
    Some(parts.join("/"))
}

/// The repo's top-level names (folders end with `/`), for the errors.
fn top_level(files: &BTreeSet<String>) -> Vec<String> {
    let names: BTreeSet<String> = files
        .iter()
        .map(|f| match f.split_once('/') {
            Some((dir, _)) => format!("{dir}/"),
            None => f.clone(),
        })
        .collect();
    names.into_iter().collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn pick(files: &[&str], jsons: &[(&str, &str)]) -> Result<Vec<String>> {
        let files: BTreeSet<String> = files.iter().map(|s| s.to_string()).collect();
        let mut read = Vec::new();
        let mut json = |name: &str| {
            read.push(name.to_string());
            let text = jsons.iter().find(|(n, _)| *n == name).unwrap().1;
            Ok(serde_json::from_str(text).unwrap())
        };
        let mut out = needed(Path::new("acme/x"), &files, &mut json)?;
        out.extend(read);
        out.sort();
        Ok(out)
    }

    #[test]
    fn a_model_folder_prefers_safetensors() {
        let got = pick(
            &[
                "README.md",
                "config.json",
                "model.safetensors",
                "pytorch_model.bin",
                "onnx/model.onnx",
            ],
            &[],
        );
        assert_eq!(got.unwrap(), ["config.json", "model.safetensors"]);
    }

    #[test]
    fn shards_come_from_their_index() {
        let index = r#"{"weight_map": {"a": "m-1.safetensors", "b": "./m-2.safetensors", "c": "m-1.safetensors"}}"#;
        let files = [
            "config.json",
            "model.safetensors.index.json",
            "m-1.safetensors",
            "m-2.safetensors",
            "pytorch_model-1.bin",
        ];
        let got = pick(&files, &[("model.safetensors.index.json", index)]).unwrap();
        assert_eq!(
            got,
            [
                "config.json",
                "m-1.safetensors",
                "m-2.safetensors",
                "model.safetensors.index.json"
            ]
        );
        let escape = r#"{"weight_map": {"a": "../m.safetensors"}}"#;
        let err = pick(&files, &[("model.safetensors.index.json", escape)]).unwrap_err();
        assert_eq!(err.code(), crate::error::ErrorCode::PathEscape, "{err}");
    }

    #[test]
    fn a_pipeline_takes_its_listed_components() {
        let index = r#"{"_class_name": "X", "unet": ["diffusers", "U"], "vae": ["diffusers", "V"],
                        "scheduler": ["diffusers", "S"], "safety_checker": [null, null]}"#;
        let files = [
            "model_index.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.bin",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
            "scheduler/scheduler_config.json",
            "safety_checker/model.safetensors",
            "sd_turbo.safetensors",
        ];
        let got = pick(&files, &[("model_index.json", index)]).unwrap();
        assert_eq!(
            got,
            [
                "model_index.json",
                "scheduler/scheduler_config.json",
                "unet/config.json",
                "unet/diffusion_pytorch_model.safetensors",
                "vae/config.json",
                "vae/diffusion_pytorch_model.safetensors",
            ]
        );
    }

    #[test]
    fn a_repo_without_safetensors_takes_pytorch_weights() {
        assert_eq!(
            pick(&["config.json", "pytorch_model.bin", "README.md"], &[]).unwrap(),
            ["config.json", "pytorch_model.bin"]
        );
        assert_eq!(pick(&["w.pt"], &[]).unwrap(), ["w.pt"]);
        let err = pick(&["config.json", "README.md"], &[]).unwrap_err();
        assert_eq!(err.code(), crate::error::ErrorCode::MissingFile);
        let text = err.to_string();
        assert!(
            text.contains("the repo holds README.md, config.json"),
            "{text}"
        );
        let err = pick(&["a.safetensors", "b.safetensors"], &[]).unwrap_err();
        assert!(err.to_string().contains("several weights files"), "{err}");
        let err = pick(&["a.bin", "b.bin"], &[]).unwrap_err();
        assert!(
            err.to_string().contains("pytorch_model.bin.index.json"),
            "{err}"
        );
        assert_eq!(pick(&["w.safetensors"], &[]).unwrap(), ["w.safetensors"]);
    }

    #[test]
    fn names_that_leave_the_folder_are_refused() {
        for bad in ["../x", "/abs", "a/../../b", "a\\b", ""] {
            assert_eq!(relative(bad), None, "{bad}");
        }
        assert_eq!(relative("./a//b").as_deref(), Some("a/b"));
    }
}
