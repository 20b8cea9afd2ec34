//! A revision of a hub repo into the cache: its commit asked of the hub,
//! the files the layout needs chosen from its file list (`select`), each
//! one the snapshot lacks fetched into `blobs/` (`blob`) and linked from
//! `snapshots/<commit>/`, then `refs/<revision>` set to the commit. A file
//! the snapshot links already costs no request; a second download of the
//! same revision asks for the file list only.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::blob;
use super::http::{Client, Meta};
use super::policy::{offline, Download};
use super::select;
use super::Sink;
use crate::error::{Error, Result};
use crate::io::files::{parse_json, read_capped, MAX_JSON_BYTES};
use crate::io::hub;

/// The snapshot of `repo` at `revision` in the cache, downloading what it
/// lacks; and the repo's cache folder (what its links may point into).
pub(crate) fn snapshot(
    repo: &str,
    revision: Option<&str>,
    policy: &Download,
    sink: &Sink<'_>,
) -> Result<(PathBuf, PathBuf)> {
    let rev = hub::checked(repo, revision)?;
    if offline() {
        return hub::snapshot(policy.cache(), repo, revision);
    }
    let (cache, _) = hub::cache_or_env(policy.cache())?;
    let repo_dir = hub::repo_dir(&cache, repo);
    let client = Client::new(policy);
    sink.check()?;
    let info = match client.revision(repo, rev, sink.stop) {
        Ok(info) => info,
        // The hub cannot be reached: what the cache holds will do.
        Err(e @ Error::Io { .. }) => {
            let cached = hub::snapshot(policy.cache(), repo, revision).map_err(|_| e.clone())?;
            tracing::warn!("{e}; loading {repo}@{rev} from the hub cache");
            return Ok(cached);
        }
        Err(e) => return Err(e),
    };
    if !hub::valid_part(&info.commit) {
        return Err(Error::InvalidConfig {
            path: format!("{}/api/models/{repo}/revision/{rev}", client.endpoint).into(),
            problem: format!("{:?} is not a commit hash", info.commit),
        });
    }
    let files: BTreeSet<String> = info
        .files
        .iter()
        .filter_map(|f| select::relative(f))
        .collect();
    let repo_url = PathBuf::from(format!("{}/{repo}", client.endpoint));
    let snapshot = repo_dir.join("snapshots").join(&info.commit);
    let one = Repo {
        client: &client,
        repo,
        commit: &info.commit,
        dir: &repo_dir,
        snapshot: &snapshot,
        sink,
    };
    let needed = {
        let mut json = |name: &str| one.json(name);
        select::needed(&repo_url, &files, &mut json)?
    };
    // What is missing, with the size of each file; then the totals at once,
    // so the progress knows the whole download before its first byte.
    let mut missing = Vec::new();
    let (mut done, mut total) = (0u64, 0u64);
    for name in &needed {
        sink.check()?;
        if let Some(len) = linked_len(&snapshot.join(name)) {
            done = done.saturating_add(len);
            total = total.saturating_add(len);
            continue;
        }
        let (meta, blob) = one.meta(name)?;
        let size = meta.size.unwrap_or(0);
        total = total.saturating_add(size);
        if blob.is_file() {
            done = done.saturating_add(size);
            one.link(name, &meta.etag)?;
        } else {
            done = done.saturating_add(blob::partial_len(&blob).min(size));
            missing.push((name, meta, blob));
        }
    }
    if !missing.is_empty() {
        sink.learn(done, total)?;
    }
    for (name, meta, blob) in missing {
        sink.current(name);
        let url = client.file_url(repo, &info.commit, name);
        blob::fetch(&client, &url, &blob, &meta, meta.size.is_some(), sink)?;
        one.link(name, &meta.etag)?;
    }
    if rev != info.commit {
        let refs = repo_dir.join("refs").join(rev);
        if let Some(dir) = refs.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, &e))?;
        }
        std::fs::write(&refs, &info.commit).map_err(|e| Error::io(&refs, &e))?;
    }
    if !snapshot.is_dir() {
        std::fs::create_dir_all(&snapshot).map_err(|e| Error::io(&snapshot, &e))?;
    }
    Ok((snapshot, repo_dir))
}

/// One repo at one commit, being filled.
struct Repo<'a> {
    client: &'a Client,
    repo: &'a str,
    commit: &'a str,
    dir: &'a Path,
    snapshot: &'a Path,
    sink: &'a Sink<'a>,
}

impl Repo<'_> {
    /// A file's metadata, and the blob it names.
    fn meta(&self, name: &str) -> Result<(Meta, PathBuf)> {
        let url = self.client.file_url(self.repo, self.commit, name);
        let what = format!(
            "the repo {} has no file {name} at commit {}",
            self.repo, self.commit
        );
        let meta = self.client.meta(&url, &what)?;
        if !blob::valid_etag(&meta.etag) {
            return Err(Error::Io {
                path: url.into(),
                message: format!("the hub's ETag {:?} cannot name a blob", meta.etag),
                kind: std::io::ErrorKind::InvalidData,
            });
        }
        let blob = self.dir.join("blobs").join(&meta.etag);
        Ok((meta, blob))
    }

    /// A JSON file of the layout (an index), fetched if missing, parsed.
    fn json(&self, name: &str) -> Result<Value> {
        let link = self.snapshot.join(name);
        if linked_len(&link).is_none() {
            let (meta, blob) = self.meta(name)?;
            if !blob.is_file() {
                // Not counted in the progress: the weights' sizes are known
                // only once the indexes are read, and counting an index
                // first made the fraction fall when they were (64 of 64
                // bytes, then 64 of 400,064). Still stopped by a cancel.
                let quiet = Sink::quiet(self.sink.stop);
                self.sink.current(name);
                let url = self.client.file_url(self.repo, self.commit, name);
                blob::fetch(self.client, &url, &blob, &meta, false, &quiet)?;
            }
            self.link(name, &meta.etag)?;
        }
        let bytes = read_capped(&link, &link, MAX_JSON_BYTES)?
            .ok_or_else(|| Error::MissingFile { path: link.clone() })?;
        parse_json(link, &bytes)
    }

    /// `snapshots/<commit>/<name>` linked to `../../blobs/<etag>` (one
    /// `../` more per folder of `name`).
    fn link(&self, name: &str, etag: &str) -> Result<()> {
        let link = self.snapshot.join(name);
        if let Some(dir) = link.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, &e))?;
        }
        let depth = name.matches('/').count().saturating_add(2);
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        if std::fs::symlink_metadata(&link).is_ok() {
            std::fs::remove_file(&link).map_err(|e| Error::io(&link, &e))?;
        }
        #[cfg(unix)]
        std::os::unix::fs::symlink(&target, &link).map_err(|e| Error::io(&link, &e))?;
        #[cfg(not(unix))]
        std::fs::copy(self.dir.join("blobs").join(etag), &link)
            .map(|_| ())
            .map_err(|e| Error::io(&link, &e))?;
        Ok(())
    }
}

/// The size of the file a snapshot entry links to, if it is one.
fn linked_len(link: &Path) -> Option<u64> {
    std::fs::metadata(link)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}
