//! One blob into the cache, as the hub's own tools write it: the bytes go to
//! `blobs/<etag>.incomplete` (continued with a `Range` request when a
//! earlier download was cut), are checked against the etag (the sha256 of
//! an LFS file, the git hash of a small one), and only then renamed to
//! `blobs/<etag>`. A wrong checksum removes the partial file and publishes
//! nothing; a cancel or a cut connection keeps it for the next try.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::Digest;
use ureq::http::{header, StatusCode};

use super::http::{Client, Meta};
use super::Sink;
use crate::error::{Error, Result};

/// Bytes read from the socket (and checked for a cancel) at a time.
const CHUNK: usize = 256 << 10;

/// The hash an etag names, if it names one.
enum Check {
    Sha256(String),
    GitSha1(String),
    None,
}

fn check_of(etag: &str) -> Check {
    let hex = etag.bytes().all(|b| b.is_ascii_hexdigit());
    match etag.len() {
        64 if hex => Check::Sha256(etag.to_ascii_lowercase()),
        40 if hex => Check::GitSha1(etag.to_ascii_lowercase()),
        _ => Check::None,
    }
}

/// Whether an etag can name a file in `blobs/`.
pub(crate) fn valid_etag(etag: &str) -> bool {
    !etag.is_empty()
        && etag.len() <= 200
        && !etag.starts_with('.')
        // Not another blob's partial file or lock.
        && !etag.ends_with(".incomplete")
        && !etag.ends_with(".lock")
        && etag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `blobs/<etag>.incomplete`.
pub(crate) fn partial_path(blob: &Path) -> PathBuf {
    let mut name = blob.file_name().unwrap_or_default().to_os_string();
    name.push(".incomplete");
    blob.with_file_name(name)
}

/// The bytes of a partial download there are, if any.
pub(crate) fn partial_len(blob: &Path) -> u64 {
    std::fs::metadata(partial_path(blob)).map_or(0, |m| m.len())
}

/// Download `url` into `blob`, verified against `meta`. `counted`: the
/// file's size is in the progress's total already (else each chunk adds
/// to the total as well as to what is done).
pub(crate) fn fetch(
    client: &Client,
    url: &str,
    blob: &Path,
    meta: &Meta,
    counted: bool,
    sink: &Sink<'_>,
) -> Result<()> {
    let part = partial_path(blob);
    let io = |e: std::io::Error| Error::io(&part, &e);
    if let Some(dir) = blob.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, &e))?;
    }
    // One download of a blob at a time, across processes (the lock file
    // the hub's own tools take): a second one waits, then finds the blob
    // published. Two appending to one `.incomplete` corrupted each other,
    // and a late one could append to a blob already checked and renamed.
    let _lock = lock(blob, &meta.etag, sink)?;
    if blob.is_file() {
        return Ok(());
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(&part)
        .map_err(io)?;
    let mut have = file.metadata().map_err(io)?.len();
    if let Some(size) = meta.size.filter(|&size| have > size) {
        // Longer than the file: not a part of it. What the progress counted
        // of it (the file's size) is to be done again.
        file.set_len(0).map_err(io)?;
        sink.learn(0, size)?;
        have = 0;
    }
    let mut response = client.get(url, have, &format!("the file {url}"))?;
    let status = response.status();
    let resumed = status == StatusCode::PARTIAL_CONTENT
        && content_range_start(response.headers()) == Some(have);
    let complete = status == StatusCode::RANGE_NOT_SATISFIABLE && meta.size == Some(have);
    if have > 0 && !resumed && !complete {
        // The server sent the whole file (or a range we did not ask for):
        // start over; what was kept is to be done again.
        file.set_len(0).map_err(io)?;
        // What was kept was counted as done only where the size was known
        // (and so counted in the total): only then is it to be done again.
        // Of a file of unknown size, each chunk adds to both as it comes.
        if counted {
            sink.learn(0, have)?;
        }
        have = 0;
        if status == StatusCode::RANGE_NOT_SATISFIABLE || status == StatusCode::PARTIAL_CONTENT {
            response = client.get(url, 0, &format!("the file {url}"))?;
        }
    }
    if !complete {
        let body = response.body_mut().with_config().reader();
        receive(body, &mut file, &part, url, meta, counted, have, sink)?;
    }
    file.sync_all().map_err(io)?;
    drop(file);
    verify(&part, url, &meta.etag, sink)?;
    std::fs::rename(&part, blob).map_err(|e| Error::io(blob, &e))?;
    // Written and read back whole, the blob sits in the page cache: drop it,
    // so that the load that follows reads it cold and leaves no second copy
    // of the model in memory (`PageCache::Auto`).
    if let Ok(published) = File::open(blob) {
        crate::io::cache::drop_pages(&published, 0, 0);
    }
    Ok(())
}

/// How long a download waits between two tries of a lock another holds.
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// The exclusive lock on `blob`'s download: `<cache>/.locks/<repo
/// folder>/<etag>.lock`, where huggingface_hub takes it, so that its tools
/// and model-manager never write one blob at once. Waits for a holder,
/// checking for a cancel between tries. (`File::try_lock` is Rust 1.89's:
/// the `download` feature needs 1.89; the crate without it, 1.85.)
#[allow(clippy::incompatible_msrv)]
fn lock(blob: &Path, etag: &str, sink: &Sink<'_>) -> Result<File> {
    let repo_dir = blob.parent().and_then(Path::parent);
    let path = match (
        repo_dir.and_then(Path::parent),
        repo_dir.and_then(Path::file_name),
    ) {
        (Some(cache), Some(repo)) => cache.join(".locks").join(repo).join(format!("{etag}.lock")),
        _ => partial_path(blob).with_extension("lock"),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, &e))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, &e))?;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                sink.check()?;
                std::thread::sleep(LOCK_POLL);
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, &e)),
        }
    }
}

/// The body into `file` (which holds `have` bytes already), in chunks,
/// checking for a cancel at each.
#[allow(clippy::too_many_arguments)]
fn receive(
    mut body: impl Read,
    file: &mut File,
    part: &Path,
    url: &str,
    meta: &Meta,
    counted: bool,
    mut have: u64,
    sink: &Sink<'_>,
) -> Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        sink.check()?;
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(cut(url, part, have, meta.size, &e)),
        };
        let bytes = buf.get(..n).unwrap_or_default();
        have = have.saturating_add(n as u64);
        if meta.size.is_some_and(|size| have > size) {
            return Err(Error::Io {
                path: url.into(),
                message: format!(
                    "the server sent more than the {} bytes it announced",
                    meta.size.unwrap_or_default()
                ),
                kind: std::io::ErrorKind::InvalidData,
            });
        }
        file.write_all(bytes).map_err(|e| Error::io(part, &e))?;
        if counted {
            sink.advance(n as u64)?;
        } else {
            sink.learn(n as u64, n as u64)?;
        }
    }
    match meta.size {
        Some(size) if have < size => Err(cut(
            url,
            part,
            have,
            meta.size,
            &std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
        )),
        _ => Ok(()),
    }
}

/// A download cut short: what was kept, and that the next one resumes.
fn cut(url: &str, part: &Path, have: u64, size: Option<u64>, e: &std::io::Error) -> Error {
    let of = size.map_or(String::new(), |s| format!(" of {s}"));
    Error::Io {
        path: url.into(),
        message: format!(
            "the download stopped after {have}{of} bytes ({e}); {} is kept: a download run \
             again resumes it",
            part.display()
        ),
        kind: kind_of(e),
    }
}

/// The kind of a read's error, a timeout of the client's seen as one.
fn kind_of(e: &std::io::Error) -> std::io::ErrorKind {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
    {
        Some(ureq::Error::Timeout(_)) => std::io::ErrorKind::TimedOut,
        Some(ureq::Error::Io(inner)) => inner.kind(),
        _ => e.kind(),
    }
}

/// The start of a `Content-Range: bytes START-END/LEN`.
fn content_range_start(headers: &ureq::http::HeaderMap) -> Option<u64> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let range = value.trim().strip_prefix("bytes")?.trim();
    range.split('-').next()?.trim().parse().ok()
}

/// The whole partial file hashed against the etag; a mismatch removes it.
fn verify(part: &Path, url: &str, etag: &str, sink: &Sink<'_>) -> Result<()> {
    let (expected, got) = match check_of(etag) {
        Check::None => return Ok(()),
        Check::Sha256(expected) => {
            let mut hasher = sha2::Sha256::new();
            hash_file(part, sink, |b| hasher.update(b))?;
            (expected, hex(&hasher.finalize()))
        }
        Check::GitSha1(expected) => {
            let len = std::fs::metadata(part)
                .map_err(|e| Error::io(part, &e))?
                .len();
            let mut hasher = sha1_smol::Sha1::new();
            hasher.update(format!("blob {len}\0").as_bytes());
            hash_file(part, sink, |b| hasher.update(b))?;
            (expected, hasher.digest().to_string())
        }
    };
    if expected == got {
        return Ok(());
    }
    let _ = std::fs::remove_file(part);
    Err(Error::InvalidModel {
        path: url.into(),
        problem: format!(
            "checksum mismatch: the hub names the file's blob {expected}, the bytes received \
             hash to {got}; the partial download was removed and nothing was added to the \
             cache: run the download again"
        ),
    })
}

fn hash_file(path: &Path, sink: &Sink<'_>, mut update: impl FnMut(&[u8])) -> Result<()> {
    let mut file = File::open(path).map_err(|e| Error::io(path, &e))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(path, &e))?;
    let mut buf = vec![0u8; 4 * CHUNK];
    loop {
        sink.check()?;
        match file.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => update(buf.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, &e)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn etags_name_blobs() {
        assert!(valid_etag(&"a".repeat(64)));
        for bad in ["", "../x", ".hidden", "a/b", "a b"] {
            assert!(!valid_etag(bad), "{bad}");
        }
        assert!(matches!(check_of(&"A".repeat(64)), Check::Sha256(_)));
        assert!(matches!(check_of(&"0".repeat(40)), Check::GitSha1(_)));
        assert!(matches!(check_of("xyz"), Check::None));
    }
}
