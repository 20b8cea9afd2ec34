//! A tiny Hugging Face hub on 127.0.0.1 for the download tests (std only:
//! one thread per connection, one request per connection): the revision
//! endpoint, `HEAD`/`GET` of `resolve/` (LFS files redirect to a `/cdn/`
//! path, as the hub does), `Range` requests, and faults to order: a
//! connection cut mid-file, bytes that do not match their hash, a stall, a
//! required token, broken answers. Every request is logged.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use super::repo::{etag, lfs, sha256, Repo};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
}

/// Faults, each for the next request it applies to unless said otherwise.
#[derive(Default)]
pub struct Faults {
    /// Close the connection after this many body bytes of the file (once).
    pub cut: Option<(String, usize)>,
    /// Serve the file with one byte changed (always).
    pub corrupt: Option<String>,
    /// Send this many body bytes of the file, then stall (always).
    pub stall: Option<(String, usize)>,
    /// Send the file in 16 KiB pieces with this pause between them.
    pub slow: Option<Duration>,
    /// Answer 401 to any request without `Authorization: Bearer <this>`.
    pub token: Option<String>,
    /// A revision answer that is not JSON.
    pub bad_json: bool,
    /// HEAD answers without an ETag.
    pub no_etag: bool,
    /// A Content-Length of 2^60 for every file body, then a close.
    pub huge_length: bool,
    /// `/cdn/` redirects to itself.
    pub redirect_loop: bool,
    /// Answer 200 with the whole file to a Range request.
    pub ignore_range: bool,
    /// Files the revision lists but `resolve/` answers 404 for.
    pub missing: Vec<String>,
}

#[derive(Default)]
struct State {
    repos: BTreeMap<String, Repo>,
    log: Vec<Request>,
    faults: Faults,
}

/// The server; stops (and unblocks any stall) when dropped.
pub struct Hub {
    pub url: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Hub {
    pub fn start() -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Acquire) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (s, st) = (s.clone(), st.clone());
                std::thread::spawn(move || serve(conn, &s, &st));
            }
        });
        Hub { url, state, stop }
    }

    pub fn add(&self, name: &str, repo: Repo) {
        self.state.lock().unwrap().repos.insert(name.into(), repo);
    }

    pub fn faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.state.lock().unwrap().faults);
    }

    pub fn log(&self) -> Vec<Request> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// The requests whose path contains `part`.
    pub fn requests(&self, part: &str) -> Vec<Request> {
        self.log()
            .into_iter()
            .filter(|r| r.path.contains(part))
            .collect()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let request = Request {
        method,
        path,
        headers,
    };
    state.lock().unwrap().log.push(request.clone());
    let mut out = conn;
    respond(&mut out, &request, state, stop);
    let _ = out.flush();
    let _ = out.shutdown(Shutdown::Both);
}

fn head(out: &mut TcpStream, status: &str, headers: &[(&str, String)]) {
    let mut text = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    let _ = out.write_all(text.as_bytes());
}

fn not_found(out: &mut TcpStream, what: &str) {
    head(
        out,
        "404 Not Found",
        &[
            ("X-Error-Message", what.to_string()),
            ("Content-Length", "0".into()),
        ],
    );
}

fn respond(out: &mut TcpStream, req: &Request, state: &Mutex<State>, stop: &AtomicBool) {
    let st = state.lock().unwrap();
    if let Some(token) = &st.faults.token {
        if req.headers.get("authorization") != Some(&format!("Bearer {token}")) {
            drop(st);
            head(
                out,
                "401 Unauthorized",
                &[
                    ("X-Error-Message", "Invalid credentials".into()),
                    ("Content-Length", "0".into()),
                ],
            );
            return;
        }
    }
    let path = req.path.clone();
    // /api/models/ORG/NAME/revision/REV
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let parts: Vec<&str> = rest.splitn(4, '/').collect();
        let repo = format!("{}/{}", parts[0], parts.get(1).unwrap_or(&""));
        let Some(r) = st.repos.get(&repo) else {
            drop(st);
            return not_found(out, "Repository not found");
        };
        let body = if st.faults.bad_json {
            "{\"sha\": ".to_string()
        } else {
            let siblings: Vec<String> = r
                .files
                .keys()
                .map(|f| format!("{{\"rfilename\": {f:?}}}"))
                .collect();
            format!(
                "{{\"id\": {repo:?}, \"sha\": {:?}, \"siblings\": [{}]}}",
                r.commit,
                siblings.join(", ")
            )
        };
        drop(st);
        head(
            out,
            "200 OK",
            &[
                ("Content-Type", "application/json".into()),
                ("Content-Length", body.len().to_string()),
            ],
        );
        let _ = out.write_all(body.as_bytes());
        return;
    }
    // /cdn/SHA256
    if let Some(sha) = path.strip_prefix("/cdn/") {
        if st.faults.redirect_loop {
            drop(st);
            return head(
                out,
                "302 Found",
                &[("Location", path.clone()), ("Content-Length", "0".into())],
            );
        }
        let found = st.repos.values().find_map(|r| {
            r.files
                .iter()
                .find(|(n, b)| lfs(n) && sha256(b) == sha)
                .map(|(n, b)| (n.clone(), b.clone()))
        });
        drop(st);
        return match found {
            Some((name, bytes)) => body(out, req, &name, bytes, state, stop),
            None => not_found(out, "Entry not found"),
        };
    }
    // /ORG/NAME/resolve/COMMIT/FILE
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    if parts.len() == 5 && parts[2] == "resolve" {
        let repo = format!("{}/{}", parts[0], parts[1]);
        let file = parts[4].replace("%20", " ");
        let entry = st
            .repos
            .get(&repo)
            .filter(|r| r.commit == parts[3])
            .and_then(|r| r.files.get(&file).map(|b| (r.commit.clone(), b.clone())));
        let missing = st.faults.missing.contains(&file);
        let no_etag = st.faults.no_etag;
        drop(st);
        let Some((commit, bytes)) = entry.filter(|_| !missing) else {
            return not_found(out, "Entry not found");
        };
        let tag = etag(&file, &bytes);
        if lfs(&file) {
            let mut h = vec![
                ("Location", format!("/cdn/{tag}")),
                ("X-Repo-Commit", commit),
                ("Content-Length", "0".into()),
            ];
            if !no_etag {
                h.push(("X-Linked-Etag", format!("\"{tag}\"")));
                h.push(("X-Linked-Size", bytes.len().to_string()));
            }
            return head(out, "302 Found", &h);
        }
        if req.method == "HEAD" {
            let mut h = vec![
                ("X-Repo-Commit", commit),
                ("Content-Length", bytes.len().to_string()),
            ];
            if !no_etag {
                h.push(("ETag", format!("\"{tag}\"")));
            }
            return head(out, "200 OK", &h);
        }
        return body(out, req, &file, bytes, state, stop);
    }
    drop(st);
    not_found(out, "no such route")
}

/// A file's bytes, honouring `Range: bytes=N-` and the faults.
fn body(
    out: &mut TcpStream,
    req: &Request,
    name: &str,
    mut bytes: Vec<u8>,
    state: &Mutex<State>,
    stop: &AtomicBool,
) {
    let (cut, stall, slow, huge, ignore_range) = {
        let mut st = state.lock().unwrap();
        let f = &mut st.faults;
        if f.corrupt.as_deref() == Some(name) {
            let last = bytes.len() - 1;
            bytes[last] ^= 0xff;
        }
        let cut = match &f.cut {
            Some((n, at)) if n == name => {
                let at = *at;
                f.cut = None;
                Some(at)
            }
            _ => None,
        };
        let stall = f.stall.as_ref().filter(|(n, _)| n == name).map(|(_, k)| *k);
        (cut, stall, f.slow, f.huge_length, f.ignore_range)
    };
    let len = bytes.len();
    let from = req
        .headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok())
        .filter(|_| !ignore_range);
    let (status, start) = match from {
        Some(n) if n >= len => {
            return head(
                out,
                "416 Range Not Satisfiable",
                &[
                    ("Content-Range", format!("bytes */{len}")),
                    ("Content-Length", "0".into()),
                ],
            );
        }
        Some(n) => ("206 Partial Content", n),
        None => ("200 OK", 0),
    };
    let mut h = vec![(
        "Content-Length",
        if huge {
            (1u64 << 60).to_string()
        } else {
            (len - start).to_string()
        },
    )];
    if start > 0 {
        h.push(("Content-Range", format!("bytes {start}-{}/{len}", len - 1)));
    }
    head(out, status, &h);
    let rest = &bytes[start..];
    if let Some(k) = stall {
        let _ = out.write_all(&rest[..k.min(rest.len())]);
        let _ = out.flush();
        let until = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::Acquire) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        return;
    }
    let end = cut.map_or(rest.len(), |c| c.min(rest.len()));
    match slow {
        Some(pause) => {
            for piece in rest[..end].chunks(16 << 10) {
                if out.write_all(piece).is_err() || stop.load(Ordering::Acquire) {
                    return;
                }
                std::thread::sleep(pause);
            }
        }
        None => {
            let _ = out.write_all(&rest[..end]);
        }
    }
}
