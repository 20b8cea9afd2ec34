//! Offline resolution of Hugging Face hub cache entries:
//! `models--ORG--NAME/snapshots/REV/`, with branches and tags resolved
//! through `refs/`. Honours `HF_HUB_CACHE` and `HF_HOME`; never touches the
//! network.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use std::path::PathBuf;

use super::files::{read_capped, MAX_REF_BYTES};
use crate::error::{Error, Result};

/// The hub cache folder.
pub(crate) fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE").filter(|d| !d.is_empty()) {
        return Some(dir.into());
    }
    if let Some(home) = std::env::var_os("HF_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(home).join("hub"));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("huggingface").join("hub"))
}

fn valid_part(s: &str) -> bool {
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

/// The snapshot folder of `repo` at `revision` (default `main`), and the
/// repo's cache folder that its files may link into.
pub(crate) fn snapshot(repo: &str, revision: Option<&str>) -> Result<(PathBuf, PathBuf)> {
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
    let cache = cache_dir().ok_or_else(|| {
        Error::InvalidArgument("no hub cache folder: set HF_HUB_CACHE or HF_HOME".into())
    })?;
    let repo_dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    if !repo_dir.is_dir() {
        return Err(Error::MissingFile { path: repo_dir });
    }
    let refs = repo_dir.join("refs").join(revision);
    // A ref holds one commit hash: read without blocking, only if a
    // regular file, and only its first few bytes.
    let commit = match read_capped(&refs, &refs, MAX_REF_BYTES)? {
        Some(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        None => revision.to_string(),
    };
    if !valid_part(&commit) {
        return Err(Error::InvalidConfig {
            path: refs,
            problem: format!("{commit:?} is not a commit hash"),
        });
    }
    let snapshot = repo_dir.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        return Err(Error::MissingFile { path: snapshot });
    }
    Ok((snapshot, repo_dir))
}
