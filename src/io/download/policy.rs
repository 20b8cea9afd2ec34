//! [`Download`]: whether and how a hub source fetches what the cache lacks,
//! and the settings read from the environment as the hub's own tools read
//! them (`HF_ENDPOINT`, `HF_TOKEN` or the token file, `HF_HUB_OFFLINE`,
//! `HF_HUB_DOWNLOAD_TIMEOUT`).

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The hub the hub's tools talk to when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// How long one read from the hub may wait for a byte when
/// `HF_HUB_DOWNLOAD_TIMEOUT` is not set (the hub's own default).
pub(crate) const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The switch that lets a hub source download what the cache lacks
/// ([`ModelSource::download`](crate::ModelSource::download)), and its
/// settings. Each setting left unset is read from the environment when the
/// download starts, as the hub's own tools read it:
///
/// - the endpoint: `HF_ENDPOINT`, else `https://huggingface.co`;
/// - the token (sent as `Authorization: Bearer`, for private and gated
///   repos): `HF_TOKEN`, else the file `$HF_HOME/token`
///   (`~/.cache/huggingface/token`);
/// - the cache: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else
///   `~/.cache/huggingface/hub`;
/// - the read timeout (how long one read may wait for a byte; a stalled
///   server fails the load after it): `HF_HUB_DOWNLOAD_TIMEOUT` seconds,
///   else 10 s.
///
/// `HF_HUB_OFFLINE=1` turns every download off: the cache is read as
/// without the switch.
///
/// ```
/// use std::time::Duration;
/// use model_manager::{Download, ModelSource};
///
/// let source = ModelSource::hub("acme/tiny").download_with(
///     Download::new()
///         .endpoint("http://127.0.0.1:8080")
///         .read_timeout(Duration::from_secs(30)),
/// );
/// // The same model as the offline source: loading one while the other is
/// // ready does not load it again.
/// assert_eq!(source, ModelSource::hub("acme/tiny"));
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Download {
    pub(crate) endpoint: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) cache_dir: Option<PathBuf>,
    pub(crate) read_timeout: Option<Duration>,
}

impl Download {
    /// Every setting from the environment.
    pub fn new() -> Self {
        Download::default()
    }

    /// The hub's address (`https://huggingface.co`, a mirror, a local
    /// server), instead of `HF_ENDPOINT`.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The token sent as `Authorization: Bearer`, instead of `HF_TOKEN`
    /// or the token file.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The hub cache to fill and read, instead of `HF_HUB_CACHE` or
    /// `HF_HOME`.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// How long one read may wait for a byte (and a connection for its
    /// answer) before the download fails, instead of
    /// `HF_HUB_DOWNLOAD_TIMEOUT`. A cancel waits for at most this long on a
    /// server that has stopped sending.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = Some(timeout);
        self
    }

    /// The endpoint to use, without a trailing `/`.
    pub(crate) fn endpoint_now(&self) -> String {
        let url = self
            .endpoint
            .clone()
            .or_else(|| env("HF_ENDPOINT"))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        url.trim_end_matches('/').to_string()
    }

    /// The token to send, if any.
    pub(crate) fn token_now(&self) -> Option<String> {
        if let Some(token) = &self.token {
            return Some(token.clone()).filter(|t| !t.is_empty());
        }
        if let Some(token) = env("HF_TOKEN") {
            return Some(token);
        }
        let file = match env("HF_TOKEN_PATH") {
            Some(path) => PathBuf::from(path),
            None => hf_home()?.join("token"),
        };
        let bytes = super::super::files::read_capped(&file, &file, 4096)
            .ok()
            .flatten()?;
        let token = String::from_utf8_lossy(&bytes).trim().to_string();
        Some(token).filter(|t| !t.is_empty())
    }

    /// The read timeout to use.
    pub(crate) fn read_timeout_now(&self) -> Duration {
        self.read_timeout
            .or_else(|| {
                let secs: f64 = env("HF_HUB_DOWNLOAD_TIMEOUT")?.trim().parse().ok()?;
                Duration::try_from_secs_f64(secs)
                    .ok()
                    .filter(|d| !d.is_zero())
            })
            .unwrap_or(DEFAULT_READ_TIMEOUT)
    }

    /// The cache folder given, if any.
    pub(crate) fn cache(&self) -> Option<&Path> {
        self.cache_dir.as_deref()
    }
}

/// Whether `HF_HUB_OFFLINE` turns downloads off.
pub(crate) fn offline() -> bool {
    env("HF_HUB_OFFLINE").is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "on" | "yes" | "true"
        )
    })
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else
/// `~/.cache/huggingface`.
fn hf_home() -> Option<PathBuf> {
    if let Some(home) = env("HF_HOME") {
        return Some(home.into());
    }
    let base = match env("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache"),
    };
    Some(base.join("huggingface"))
}

/// The token is never printed.
impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("cache_dir", &self.cache_dir)
            .field("read_timeout", &self.read_timeout)
            .finish()
    }
}
