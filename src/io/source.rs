//! Model sources: what a load is asked to read.
//!
//! Layouts understood, on disk and in memory alike:
//! - a single `.safetensors` file;
//! - a model folder: `config.json` + `model.safetensors`, or shards listed in
//!   `model.safetensors.index.json` (or the diffusers names
//!   `diffusion_pytorch_model.safetensors[.index.json]`);
//! - a diffusers pipeline: `model_index.json` + one subfolder per component,
//!   each a model folder; components without weights (scheduler, tokenizer)
//!   are recorded, not loaded;
//! - a Hugging Face hub cache entry, resolved offline (see [`ModelSource::hub`]),
//!   or downloaded into the cache first when the source has the download
//!   switch ([`ModelSource::download`]).

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::download::policy::Download;
use super::park::ParkedModel;
pub use super::stream::{StreamSource, StreamWriter};

/// What to load.
///
/// Whatever a source holds, a load or an [`inspect`](crate::inspect) of it
/// ends with a model or an error, never a panic or a hang:
/// - every name read from a JSON file (a shard, a pipeline component) must
///   stay inside the model folder, also through symlinks (else
///   [`Error::PathEscape`](crate::Error::PathEscape)), and is checked before
///   the file is opened;
/// - only regular files are read: a FIFO, a socket, a device such as
///   `/dev/zero` or a folder where a file is expected fails the load
///   ("not a regular file"), without blocking on it;
/// - JSON files (`config.json`, `model_index.json`, shard indexes) are read
///   up to **64 MiB** (67108864 bytes) each; a larger one fails with
///   [`Error::InvalidConfig`](crate::Error::InvalidConfig) naming the file
///   and the cap. Safetensors headers are capped at 100 MB, like the
///   reference parser's.
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
    /// A Hugging Face hub cache entry by repo id: resolved offline, or
    /// downloaded into the cache first (what it lacks) when `download` is
    /// set.
    Hub {
        /// `ORG/NAME`.
        repo: String,
        /// A branch or tag (resolved through `refs/`), or a commit hash;
        /// `None` means `main`.
        revision: Option<String>,
        /// `None`: the cache only (the default). `Some`: download what the
        /// cache lacks first ([`ModelSource::download`]).
        download: Option<Download>,
    },
    /// One safetensors file held in memory.
    Bytes(Arc<[u8]>),
    /// A model folder or diffusers pipeline held in memory: relative file
    /// names (`unet/config.json`) to their contents.
    Files(Arc<BTreeMap<String, Arc<[u8]>>>),
    /// A model whose files arrive while it loads (a download), written
    /// straight into the tensors by the [`StreamWriter`] that
    /// [`ModelSource::stream`] returns with it. Loaded once.
    Stream(StreamSource),
    /// A model a pool's host tier parked in host memory: loaded back onto
    /// the device with one copy, no read and no parse. Made by the pool
    /// only (see [`ModelPoolBuilder::host_budget`](crate::ModelPoolBuilder::host_budget)).
    Parked(Arc<ParkedModel>),
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
    /// never touches the network unless [`download`](Self::download) is
    /// added.
    pub fn hub(repo: impl Into<String>) -> Self {
        ModelSource::Hub {
            repo: repo.into(),
            revision: None,
            download: None,
        }
    }

    /// A repo in the local hub cache at a branch, tag or commit.
    pub fn hub_revision(repo: impl Into<String>, revision: impl Into<String>) -> Self {
        ModelSource::Hub {
            repo: repo.into(),
            revision: Some(revision.into()),
            download: None,
        }
    }

    /// This hub source, downloading what the cache lacks before it loads:
    /// the revision's commit is asked of the hub, then the files the
    /// model's layout needs (safetensors weights, a folder's PyTorch `.bin` only where it has no safetensors;
    /// configs; a pipeline's components) that the cache does not hold are
    /// downloaded into it, as the hub's own tools lay them out, checked
    /// against their sha256, resuming a download that was cut. The load's
    /// progress counts the download (`download_done`, `download_total`)
    /// and its cancel stops it. Settings from the environment (see
    /// [`Download`]). A source that is not a hub repo is returned as is.
    ///
    /// Needs the `download` feature (the command line has it); without it,
    /// a repo the cache lacks fails the load with an error that says so.
    ///
    /// ```
    /// use model_manager::ModelSource;
    ///
    /// let source = ModelSource::hub("sentence-transformers/all-MiniLM-L6-v2").download();
    /// assert_eq!(source.to_string(), "sentence-transformers/all-MiniLM-L6-v2@main");
    /// ```
    pub fn download(self) -> Self {
        self.download_with(Download::new())
    }

    /// [`download`](Self::download) with settings other than the
    /// environment's: an endpoint, a token, a cache folder, a read timeout.
    pub fn download_with(self, download: Download) -> Self {
        match self {
            ModelSource::Hub { repo, revision, .. } => ModelSource::Hub {
                repo,
                revision,
                download: Some(download),
            },
            other => other,
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
                download: None,
            };
        }
        ModelSource::path(arg)
    }

    /// One safetensors file in memory.
    pub fn bytes(bytes: impl Into<Arc<[u8]>>) -> Self {
        ModelSource::Bytes(bytes.into())
    }

    /// A model that arrives while it loads: load the source, feed its files
    /// through the writer (see [`StreamWriter`]). Each byte of tensor data
    /// is written once, into its tensor.
    pub fn stream() -> (Self, StreamWriter) {
        let (source, writer) = super::stream::channel();
        (ModelSource::Stream(source), writer)
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

/// Paths and hub ids compare by value (a hub source's download switch
/// aside: with or without it, it is the same model); in-memory sources by
/// identity (the same buffer), so comparing never reads gigabytes.
impl PartialEq for ModelSource {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (ModelSource::Path(a), ModelSource::Path(b)) => a == b,
            (
                ModelSource::Hub {
                    repo: a,
                    revision: ra,
                    ..
                },
                ModelSource::Hub {
                    repo: b,
                    revision: rb,
                    ..
                },
            ) => a == b && ra.as_deref().unwrap_or("main") == rb.as_deref().unwrap_or("main"),
            (ModelSource::Bytes(a), ModelSource::Bytes(b)) => Arc::ptr_eq(a, b),
            (ModelSource::Files(a), ModelSource::Files(b)) => Arc::ptr_eq(a, b),
            (ModelSource::Stream(a), ModelSource::Stream(b)) => a == b,
            (ModelSource::Parked(a), ModelSource::Parked(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for ModelSource {}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Path(p) => write!(f, "{}", p.display()),
            ModelSource::Hub { repo, revision, .. } => {
                write!(f, "{repo}@{}", revision.as_deref().unwrap_or("main"))
            }
            ModelSource::Bytes(b) => write!(f, "<{} bytes in memory>", b.len()),
            ModelSource::Files(m) => write!(f, "<{} files in memory>", m.len()),
            ModelSource::Stream(_) => write!(f, "<stream>"),
            ModelSource::Parked(p) => write!(f, "<{} bytes parked in host memory>", p.bytes()),
        }
    }
}

/// A path, never a hub repo id (that is [`ModelSource::hub`], or
/// [`ModelSource::guess`] for a command-line argument): a missing path that
/// reads as `org/name` fails with an error that says so.
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
