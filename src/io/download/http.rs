//! The few requests of the hub's protocol, over a blocking HTTP client
//! (ureq, rustls): a revision's commit and files, a file's metadata (its
//! blob's hash and size, from the answer to a `HEAD` that follows no
//! redirect to the CDN), and a file's bytes (from an offset, following
//! redirects). Every answer is bounded: JSON bodies are capped, redirects
//! counted, each read waits at most the read timeout; a status is turned
//! into the crate's errors, naming the URL and what to check.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use std::path::PathBuf;
use std::time::Duration;

use ureq::config::RedirectAuthHeaders;
use ureq::http::{header, Response, StatusCode};
use ureq::{Agent, Body};

use super::policy::Download;
use crate::error::{Error, Result};

/// The most bytes a JSON answer (a revision's file list) may hold.
const MAX_API_BYTES: u64 = 64 << 20;

/// The longest the revision's answer may take to arrive, all told.
const API_DEADLINE: Duration = Duration::from_secs(60);
/// Redirects followed for a file's bytes (the hub to its CDN is one).
const MAX_REDIRECTS: u32 = 10;
/// Relative redirects followed for a file's metadata (a renamed repo).
const MAX_HEAD_REDIRECTS: usize = 5;

/// A client for one download: the agent, the endpoint and the token.
pub(crate) struct Client {
    agent: Agent,
    pub(crate) endpoint: String,
    token: Option<String>,
}

/// A file's metadata: its blob's name (the sha256 of an LFS file, the git
/// hash of a small one), its size when told, and the commit it is at.
#[derive(Debug)]
pub(crate) struct Meta {
    pub(crate) etag: String,
    pub(crate) size: Option<u64>,
}

/// What a revision holds.
#[derive(Debug)]
pub(crate) struct Revision {
    pub(crate) commit: String,
    pub(crate) files: Vec<String>,
}

impl Client {
    pub(crate) fn new(policy: &Download) -> Self {
        let timeout = policy.read_timeout_now();
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(MAX_REDIRECTS)
            .redirect_auth_headers(RedirectAuthHeaders::SameHost)
            .user_agent(concat!("model-manager/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(timeout.max(Duration::from_secs(1))))
            .timeout_per_read(Some(timeout))
            .timeout_per_write(Some(timeout))
            .build();
        Client {
            agent: Agent::new_with_config(config),
            endpoint: policy.endpoint_now(),
            token: policy.token_now(),
        }
    }

    /// `{endpoint}/api/models/{repo}/revision/{revision}`: the commit and
    /// the files.
    /// Read in pieces, checking `stop` between them, and within
    /// [`API_DEADLINE`] in all: a server that trickles its answer cannot
    /// hold a load (or its cancel) beyond that.
    pub(crate) fn revision(
        &self,
        repo: &str,
        revision: &str,
        stop: &dyn Fn() -> bool,
    ) -> Result<Revision> {
        let url = format!(
            "{}/api/models/{repo}/revision/{}",
            self.endpoint,
            encode(revision)
        );
        let mut response = self.send(self.agent.get(&url), &url)?;
        check(&response, &url, || {
            format!(
                "check the repo id ({repo}) and the revision ({revision}); a private or gated \
                 repo needs a token with access to it (HF_TOKEN)"
            )
        })?;
        let mut body = response
            .body_mut()
            .with_config()
            .limit(MAX_API_BYTES)
            .reader();
        let started = std::time::Instant::now();
        let mut bytes = Vec::new();
        let mut piece = vec![0u8; 64 << 10];
        loop {
            if stop() {
                return Err(Error::Cancelled);
            }
            if started.elapsed() > API_DEADLINE {
                let late = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the hub's answer took over {} s", API_DEADLINE.as_secs()),
                );
                return Err(Error::io(&url, &late));
            }
            match std::io::Read::read(&mut body, &mut piece) {
                Ok(0) => break,
                Ok(n) => bytes.extend_from_slice(piece.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(&url, &e)),
            }
        }
        let bad = |problem: String| Error::InvalidConfig {
            path: PathBuf::from(&url),
            problem: format!("the hub's answer is not a revision: {problem}"),
        };
        // Parsed straight into the two fields read (every other field is
        // skipped, not built): a tree of JSON values took some 45 bytes per
        // byte of answer.
        #[derive(serde::Deserialize)]
        struct Answer {
            sha: Option<String>,
            siblings: Option<Vec<Sibling>>,
        }
        #[derive(serde::Deserialize)]
        struct Sibling {
            rfilename: Option<String>,
        }
        let answer: Answer = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        let commit = answer.sha.ok_or_else(|| bad("no \"sha\"".into()))?;
        let files = answer
            .siblings
            .ok_or_else(|| bad("no \"siblings\" list".into()))?
            .into_iter()
            .filter_map(|s| s.rfilename)
            .collect();
        Ok(Revision { commit, files })
    }

    /// The URL of `file` of `repo` at `commit`.
    pub(crate) fn file_url(&self, repo: &str, commit: &str, file: &str) -> String {
        let path: Vec<String> = file.split('/').map(encode).collect();
        format!(
            "{}/{repo}/resolve/{}/{}",
            self.endpoint,
            encode(commit),
            path.join("/")
        )
    }

    /// A file's metadata, from a `HEAD` that follows relative redirects
    /// only: an LFS file's redirect to its CDN carries `X-Linked-Etag` and
    /// `X-Linked-Size` itself.
    pub(crate) fn meta(&self, url: &str, what: &str) -> Result<Meta> {
        let mut at = url.to_string();
        for _ in 0..=MAX_HEAD_REDIRECTS {
            let request = self
                .agent
                .head(&at)
                .header(header::ACCEPT_ENCODING, "identity")
                .config()
                .max_redirects(0)
                .max_redirects_will_error(false)
                .build();
            let response = self.send(request, &at)?;
            let text = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let etag = text("x-linked-etag").or_else(|| text("etag"));
            let size = text("x-linked-size")
                .or_else(|| text("content-length"))
                .and_then(|s| s.trim().parse().ok());
            let status = response.status();
            if status.is_redirection() {
                if let (Some(etag), true) = (&etag, text("x-linked-etag").is_some()) {
                    return Ok(Meta {
                        etag: clean_etag(etag),
                        size,
                    });
                }
                match text("location") {
                    Some(next) if next.starts_with('/') => {
                        at = format!("{}{next}", origin(&self.endpoint));
                        continue;
                    }
                    _ => {}
                }
            }
            check(&response, &at, || what.to_string())?;
            let etag = etag.ok_or_else(|| Error::Io {
                path: PathBuf::from(&at),
                message: "the hub's answer has no ETag: is this a Hugging Face hub endpoint?"
                    .into(),
                kind: std::io::ErrorKind::InvalidData,
            })?;
            return Ok(Meta {
                etag: clean_etag(&etag),
                size,
            });
        }
        Err(Error::Io {
            path: PathBuf::from(url),
            message: format!("more than {MAX_HEAD_REDIRECTS} redirects"),
            kind: std::io::ErrorKind::InvalidData,
        })
    }

    /// The bytes of a file from `offset` on (a `Range` request when not at
    /// 0): the answer, checked to be a success (`206` for a range the
    /// server honoured, `200` for the whole file, `416` when the range
    /// starts at its end).
    pub(crate) fn get(&self, url: &str, offset: u64, what: &str) -> Result<Response<Body>> {
        let mut request = self
            .agent
            .get(url)
            .header(header::ACCEPT_ENCODING, "identity");
        if offset > 0 {
            request = request.header(header::RANGE, format!("bytes={offset}-"));
        }
        let response = self.send(request, url)?;
        if response.status() == StatusCode::RANGE_NOT_SATISFIABLE {
            return Ok(response);
        }
        check(&response, url, || what.to_string())?;
        Ok(response)
    }

    fn send(
        &self,
        mut request: ureq::RequestBuilder<ureq::typestate::WithoutBody>,
        url: &str,
    ) -> Result<Response<Body>> {
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request.call().map_err(|e| transport(url, e))
    }
}

/// A status that is not a success, as the crate's error: a missing repo,
/// revision or file is `NotFound` (`what` says what to check), the rest an
/// I/O error naming the status.
fn check(response: &Response<Body>, url: &str, what: impl Fn() -> String) -> Result<()> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let path = PathBuf::from(url);
    let code = status.as_u16();
    match code {
        401 | 404 => Err(Error::NotFound {
            path,
            problem: format!(
                "not found on the hub (HTTP {code}{}): {}",
                hub_says(response).map_or(String::new(), |m| format!(", {m:?}")),
                what()
            ),
        }),
        403 => Err(Error::Io {
            path,
            message: format!(
                "access refused (HTTP 403): a gated repo needs its terms accepted on the hub \
                 and a token with access (HF_TOKEN); {}",
                what()
            ),
            kind: std::io::ErrorKind::PermissionDenied,
        }),
        _ => Err(Error::Io {
            path,
            message: format!("the hub answered HTTP {code}"),
            kind: std::io::ErrorKind::Other,
        }),
    }
}

/// The hub's own words on an error (`X-Error-Message`), if short.
fn hub_says(response: &Response<Body>) -> Option<String> {
    let text = response.headers().get("x-error-message")?.to_str().ok()?;
    Some(text.chars().take(200).collect())
}

/// A failure to talk to the server, naming the URL.
pub(crate) fn transport(url: &str, err: ureq::Error) -> Error {
    let kind = match &err {
        ureq::Error::Io(e) => e.kind(),
        ureq::Error::Timeout(_) => std::io::ErrorKind::TimedOut,
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => {
            std::io::ErrorKind::ConnectionRefused
        }
        _ => std::io::ErrorKind::Other,
    };
    Error::Io {
        path: PathBuf::from(url),
        message: format!("cannot download from the hub: {err}"),
        kind,
    }
}

/// An ETag's value: without `W/` and quotes.
fn clean_etag(etag: &str) -> String {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i.saturating_add(3));
    match url.get(after..).and_then(|rest| rest.find('/')) {
        Some(slash) => url.get(..after.saturating_add(slash)).unwrap_or(url),
        None => url,
    }
}

/// One path segment, percent-encoded.
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_etags() {
        assert_eq!(encode("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(encode("a b.json"), "a%20b.json");
        assert_eq!(clean_etag("W/\"abc\""), "abc");
        assert_eq!(origin("http://127.0.0.1:9/x/y"), "http://127.0.0.1:9");
        assert_eq!(origin("https://hf.co"), "https://hf.co");
    }
}
