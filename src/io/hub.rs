//! Offline resolution of Hugging Face hub cache entries:
//! `models--ORG--NAME/snapshots/REV/`, with branches and tags resolved
//! through `refs/`. Honours `HF_HUB_CACHE` and `HF_HOME`; never touches the
//! network (that is `download`, which fills the same cache): a repo or
//! revision not in the cache is an error that names the ways to fetch it and
//! the revisions the cache holds.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use std::path::{Path, PathBuf};

use super::files::{read_capped, MAX_REF_BYTES};
use super::hint;
use crate::error::{Error, Result};

/// The hub cache folder, and what chose it (for the errors to say).
pub(crate) fn cache_dir() -> Option<(PathBuf, &'static str)> {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE").filter(|d| !d.is_empty()) {
        return Some((dir.into(), "set by HF_HUB_CACHE"));
    }
    if let Some(home) = std::env::var_os("HF_HOME").filter(|d| !d.is_empty()) {
        return Some((PathBuf::from(home).join("hub"), "set by HF_HOME"));
    }
    let (base, chosen) = match std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        Some(dir) => (PathBuf::from(dir), "under XDG_CACHE_HOME"),
        None => (
            PathBuf::from(std::env::var_os("HOME")?).join(".cache"),
            "the default",
        ),
    };
    Some((base.join("huggingface").join("hub"), chosen))
}

/// The names in `dir`, sorted (folders end with `/`); none if unreadable.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                format!("{name}/")
            } else {
                name
            }
        })
        .collect();
    names.sort();
    names
}

/// The revisions of a repo the cache holds: its refs and snapshots.
fn cached_revisions(repo_dir: &Path) -> String {
    let refs = names_in(&repo_dir.join("refs"));
    let snapshots = names_in(&repo_dir.join("snapshots"));
    if refs.is_empty() && snapshots.is_empty() {
        return "the cache holds no revision of it".into();
    }
    let list = |names: &[String]| {
        if names.is_empty() {
            "none".to_string()
        } else {
            hint::names(names)
        }
    };
    format!(
        "the cache holds refs: {}; snapshots: {}",
        list(&refs),
        list(&snapshots)
    )
}

pub(crate) fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Whether `s` looks like a hub repo id (`ORG/NAME`).
pub(crate) fn is_repo_id(s: &str) -> bool {
    matches!(s.split_once('/'), Some((org, name)) if valid_part(org) && valid_part(name))
}

/// `repo` and `revision` checked to be a repo id and a revision (default
/// `main`); the revision.
pub(crate) fn checked<'a>(repo: &str, revision: Option<&'a str>) -> Result<&'a str> {
    if !is_repo_id(repo) {
        return Err(Error::InvalidArgument(format!(
            "{repo:?} is not a hub repo id (expected ORG/NAME)"
        )));
    }
    let revision = revision.unwrap_or("main");
    if revision.is_empty()
        || revision.split('/').any(|p| !valid_part(p))
        || revision.starts_with('/')
    {
        return Err(Error::InvalidArgument(format!(
            "{revision:?} is not a valid revision"
        )));
    }
    Ok(revision)
}

/// The cache folder: `given`, else the one the environment names.
pub(crate) fn cache_or_env(given: Option<&Path>) -> Result<(PathBuf, &'static str)> {
    if let Some(dir) = given {
        return Ok((dir.to_path_buf(), "given to Download::cache_dir"));
    }
    cache_dir().ok_or_else(|| {
        Error::InvalidArgument("no hub cache folder: set HF_HUB_CACHE or HF_HOME".into())
    })
}

/// The folder of `repo` in `cache`.
pub(crate) fn repo_dir(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("models--{}", repo.replace('/', "--")))
}

/// The snapshot folder of `repo` at `revision` (default `main`) in the
/// cache `cache` (else the environment's), and the repo's cache folder that
/// its files may link into.
pub(crate) fn snapshot(
    cache: Option<&Path>,
    repo: &str,
    revision: Option<&str>,
) -> Result<(PathBuf, PathBuf)> {
    let revision = checked(repo, revision)?;
    let (cache, chosen) = cache_or_env(cache)?;
    let repo_dir = repo_dir(&cache, repo);
    let fetch = hint::download(repo, revision);
    if !repo_dir.is_dir() {
        return Err(Error::NotFound {
            problem: format!(
                "the hub repo {repo} is not in the cache at {} ({chosen}); without the \
                 download switch model-manager reads the cache only: fetch it with {fetch}, \
                 or set HF_HUB_CACHE (or HF_HOME) to the cache that holds it",
                cache.display()
            ),
            path: repo_dir,
        });
    }
    let refs = repo_dir.join("refs").join(revision);
    // A ref holds one commit hash: read without blocking, only if a
    // regular file, and only its first few bytes.
    let (commit, named) = match read_capped(&refs, &refs, MAX_REF_BYTES)? {
        Some(bytes) => (String::from_utf8_lossy(&bytes).trim().to_string(), true),
        None => (revision.to_string(), false),
    };
    if !valid_part(&commit) {
        return Err(Error::InvalidConfig {
            path: refs,
            problem: format!("{commit:?} is not a commit hash"),
        });
    }
    let snapshot = repo_dir.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        let what = if named {
            format!("refs/{revision} of {repo} names commit {commit}, whose snapshot is not in the cache")
        } else {
            format!("revision {revision} of {repo} is not in the hub cache")
        };
        return Err(Error::NotFound {
            problem: format!(
                "{what} ({}); without the download switch model-manager reads the cache \
                 only: fetch it with {fetch}",
                cached_revisions(&repo_dir)
            ),
            path: snapshot,
        });
    }
    Ok((snapshot, repo_dir))
}
