//! The repos the test hub serves, and the names the hub gives their blobs
//! (the sha256 of an LFS file, the git blob hash of a small one).

use std::collections::BTreeMap;

use sha2::Digest;

/// A repo: its commit and files. `.safetensors` files are LFS files.
#[derive(Clone, Default)]
pub struct Repo {
    pub commit: String,
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Repo {
    pub fn new(commit: &str) -> Self {
        Repo {
            commit: commit.into(),
            files: BTreeMap::new(),
        }
    }

    pub fn file(mut self, name: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.files.insert(name.into(), bytes.into());
        self
    }

    /// Every file of a folder on disk, by relative name.
    pub fn folder(mut self, dir: &std::path::Path) -> Self {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(dir).unwrap().to_str().unwrap().to_string();
                    self.files.insert(rel, std::fs::read(&p).unwrap());
                }
            }
        }
        self
    }
}

pub fn lfs(name: &str) -> bool {
    name.ends_with(".safetensors") || name.ends_with(".bin")
}

pub fn sha256(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn git_sha1(bytes: &[u8]) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    h.digest().to_string()
}

/// The blob name the hub gives a file.
pub fn etag(name: &str, bytes: &[u8]) -> String {
    if lfs(name) {
        sha256(bytes)
    } else {
        git_sha1(bytes)
    }
}
