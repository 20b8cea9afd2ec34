//! Hub downloads, opt-in: a hub source with the download switch
//! ([`Download`]) fills the local hub cache with what its layout needs
//! before the offline resolution reads it, and [`pull`] does only that. The
//! network part is the `download` feature's (`http`, `blob`, `fetch`);
//! without it a download that is needed fails with an error that says so.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

#[cfg(all(feature = "download", not(target_arch = "wasm32")))]
mod blob;
#[cfg(all(feature = "download", not(target_arch = "wasm32")))]
mod fetch;
#[cfg(all(feature = "download", not(target_arch = "wasm32")))]
mod http;
#[cfg_attr(
    not(all(feature = "download", not(target_arch = "wasm32"))),
    allow(dead_code)
)]
pub(crate) mod policy;
#[cfg_attr(
    not(all(feature = "download", not(target_arch = "wasm32"))),
    allow(dead_code)
)]
mod select;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use policy::{Download, DEFAULT_ENDPOINT};

use super::progress::ProgressCounters;
use super::progress::ProgressHook;
use super::source::ModelSource;
use crate::error::{Error, Result};

/// Where a download reports: whether to stop, and its progress (none:
/// reported nowhere, [`Sink::quiet`]).
pub(crate) struct Sink<'a> {
    pub(crate) stop: &'a (dyn Fn() -> bool + Sync),
    pub(crate) progress: Option<&'a ProgressCounters>,
    pub(crate) hook: Option<&'a ProgressHook>,
}

#[cfg_attr(
    not(all(feature = "download", not(target_arch = "wasm32"))),
    allow(dead_code)
)]
impl<'a> Sink<'a> {
    /// Stopped by `stop`, reporting nowhere.
    pub(crate) fn quiet(stop: &'a (dyn Fn() -> bool + Sync)) -> Self {
        Sink {
            stop,
            progress: None,
            hook: None,
        }
    }

    /// `Cancelled` once asked to stop.
    pub(crate) fn check(&self) -> Result<()> {
        if (self.stop)() {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    /// `bytes` more are in the cache.
    pub(crate) fn advance(&self, bytes: u64) -> Result<()> {
        self.learn(bytes, 0)
    }

    /// `total` more bytes to have, `done` more had.
    pub(crate) fn learn(&self, done: u64, total: u64) -> Result<()> {
        let Some(counters) = self.progress else {
            return self.check();
        };
        counters.add_download(done, total);
        if let Some(hook) = self.hook {
            let progress = counters.read();
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(&progress)))
                .map_err(|_| Error::InvalidArgument("the progress hook panicked".into()))?;
        }
        self.check()
    }

    /// The file being downloaded.
    pub(crate) fn current(&self, name: &str) {
        if let Some(counters) = self.progress {
            counters.set_current(Arc::from(format!("download: {name}")));
        }
    }
}

/// The snapshot folder of a hub source and the repo's cache folder: with
/// the download switch, after fetching what the cache lacks (reporting to
/// `sink`, and stopping when it says so).
pub(crate) fn snapshot(
    repo: &str,
    revision: Option<&str>,
    download: Option<&Download>,
    sink: &Sink<'_>,
) -> Result<(PathBuf, PathBuf)> {
    let Some(policy) = download else {
        return super::hub::snapshot(None, repo, revision);
    };
    fetch_into_cache(repo, revision, policy, sink)
}

#[cfg(all(feature = "download", not(target_arch = "wasm32")))]
fn fetch_into_cache(
    repo: &str,
    revision: Option<&str>,
    policy: &Download,
    sink: &Sink<'_>,
) -> Result<(PathBuf, PathBuf)> {
    fetch::snapshot(repo, revision, policy, sink)
}

/// Without the feature: what the cache holds, else an error naming it.
#[cfg(not(all(feature = "download", not(target_arch = "wasm32"))))]
fn fetch_into_cache(
    repo: &str,
    revision: Option<&str>,
    policy: &Download,
    sink: &Sink<'_>,
) -> Result<(PathBuf, PathBuf)> {
    sink.check()?;
    super::hub::snapshot(policy.cache(), repo, revision).map_err(|e| match e {
        Error::NotFound { path, problem } => Error::NotFound {
            path,
            problem: format!(
                "{problem}; this build of model-manager cannot download (it lacks the \
                 `download` feature)"
            ),
        },
        other => other,
    })
}

/// Download into the local hub cache what a hub `source` needs to load (the
/// files its layout reads, as [`ModelSource::download`] does before a
/// load), without loading it; returns the snapshot folder, which
/// [`ModelSource::path`] loads. Blocking: run it on a thread of its own (or
/// `spawn_blocking`). Setting `cancel` stops it within one read (at most
/// the read timeout on a server that stopped sending), keeping what is
/// partly downloaded for the next try; `progress` is called as bytes arrive
/// (`download_done` of `download_total`, `current` the file).
///
/// The source's download settings are used if it has them, else the
/// environment's. A source that is not a hub repo is an
/// [`Error::InvalidArgument`].
///
/// ```no_run
/// use std::sync::atomic::AtomicBool;
/// use model_manager::{pull, ModelSource};
///
/// let stop = AtomicBool::new(false);
/// let snapshot = pull(&ModelSource::hub("acme/tiny"), &stop, None)?;
/// println!("{}", snapshot.display());
/// # Ok::<(), model_manager::Error>(())
/// ```
pub fn pull(
    source: &ModelSource,
    cancel: &AtomicBool,
    progress: Option<&ProgressHook>,
) -> Result<PathBuf> {
    let ModelSource::Hub {
        repo,
        revision,
        download,
    } = source
    else {
        return Err(Error::InvalidArgument(format!(
            "{source} is not a hub repo (ORG/NAME): there is nothing to pull"
        )));
    };
    let counters = ProgressCounters::default();
    let stop = || cancel.load(Ordering::Acquire);
    let sink = Sink {
        stop: &stop,
        progress: Some(&counters),
        hook: progress,
    };
    let policy = download.clone().unwrap_or_default();
    let (snapshot, _) = snapshot(repo, revision.as_deref(), Some(&policy), &sink)?;
    Ok(snapshot)
}
