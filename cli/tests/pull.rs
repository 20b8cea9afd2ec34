//! `pull` and `load --download` against a hub served on 127.0.0.1 (the
//! core's test hub, `tests/download/hub.rs`): the snapshot printed, the
//! cache filled as the hub's tools fill it, nothing fetched twice, errors
//! in one line, Ctrl-C keeping what came.

mod common;
#[path = "../../tests/download/hub.rs"]
mod hub;
#[path = "../../tests/download/repo.rs"]
mod repo;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Run, Sandbox};
use hub::{Hub, Repo};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// `model-manager ARGS` in `s`, talking to `hub`.
fn run(s: &Sandbox, hub: &Hub, args: &[&str]) -> Run {
    let output = s
        .cmd(args)
        .env("HF_ENDPOINT", &hub.url)
        .output()
        .expect("the binary runs");
    Run::new(format!("model-manager {}", args.join(" ")), output)
}

/// A model folder written by the CLI tests' helper, as a repo.
fn tiny(s: &Sandbox, elems: usize) -> Repo {
    let dir = s.path().join("src");
    let folder = common::model_folder(&dir, "tiny", 16);
    let mut repo = Repo::new(COMMIT).folder(&folder);
    if elems > 0 {
        // Weights large enough to take a while through a slow server.
        let big = common::safetensors(&[common::f32_tensor("big.weight", &[elems as u64])]);
        repo = repo.file("model.safetensors", big);
    }
    std::fs::remove_dir_all(dir).unwrap();
    repo.file("pytorch_model.bin", vec![0u8; 100])
}

fn snapshot(s: &Sandbox, repo: &str) -> PathBuf {
    s.hub()
        .join(format!("models--{}", repo.replace('/', "--")))
        .join("snapshots")
        .join(COMMIT)
}

#[test]
fn pull_fills_the_cache_and_prints_the_snapshot() {
    let s = Sandbox::new();
    let hub = Hub::start();
    hub.add("acme/tiny", tiny(&s, 0));
    let pulled = run(&s, &hub, &["pull", "acme/tiny"]);
    pulled.success();
    let path = snapshot(&s, "acme/tiny");
    assert_eq!(pulled.stdout, format!("{}\n", path.display()));
    let mut names: Vec<_> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["config.json", "model.safetensors"]);
    assert!(std::fs::read_link(path.join("model.safetensors"))
        .unwrap()
        .starts_with("../../blobs"));
    assert!(hub.requests(".bin").is_empty());

    // In the cache now: `load` reads it offline; a second pull asks for
    // the file list only.
    let loaded = s.run(["load", "acme/tiny"]);
    loaded.success().says("sample_size 16");
    hub.clear_log();
    run(&s, &hub, &["pull", "acme/tiny@main"]).success();
    let asked: Vec<String> = hub.log().into_iter().map(|r| r.path).collect();
    assert_eq!(asked, ["/api/models/acme/tiny/revision/main"]);
}

#[test]
fn load_with_download_fetches_what_is_missing() {
    let s = Sandbox::new();
    let hub = Hub::start();
    hub.add("acme/tiny", tiny(&s, 0));
    // Without the flag, the cache alone: the error names `pull`.
    let refused = run(&s, &hub, &["load", "acme/tiny"]);
    assert!(
        refused
            .error_line()
            .contains("`model-manager pull acme/tiny`"),
        "{}",
        refused.stderr
    );
    assert!(hub.log().is_empty(), "no request without --download");
    let loaded = run(&s, &hub, &["load", "acme/tiny", "--download"]);
    loaded.success().says("loaded acme/tiny@main");
    assert!(loaded.line("downloaded").contains("bytes"));
    loaded.says("sample_size 16");
}

#[test]
fn pull_errors_are_one_line() {
    let s = Sandbox::new();
    let hub = Hub::start();
    hub.add("acme/tiny", tiny(&s, 0));
    for (args, words) in [
        (
            &["pull", "acme/absent"][..],
            &["HTTP 404", "acme/absent", "HF_TOKEN"][..],
        ),
        (&["pull", "not-a-repo"], &["not a hub repo id"]),
        (&["pull", "acme/tiny@.."], &["not a valid revision"]),
    ] {
        let failed = run(&s, &hub, args);
        let line = failed.error_line();
        assert_eq!(failed.code(), Some(1), "{line}");
        for word in words {
            assert!(line.contains(word), "{args:?}: {line}");
        }
    }
    // A blob whose bytes do not match its hash.
    hub.faults(|f| f.corrupt = Some("model.safetensors".into()));
    let failed = run(&s, &hub, &["pull", "acme/tiny"]);
    assert!(failed.error_line().contains("checksum mismatch"));
}

/// Ctrl-C in the middle of a download: status 130, `cancelled`, the
/// partial blob kept; the next pull resumes it.
#[cfg(target_os = "linux")]
#[test]
fn ctrl_c_stops_a_pull_and_the_next_one_resumes() {
    let s = Sandbox::new();
    let hub = Hub::start();
    hub.add("acme/slow", tiny(&s, 1 << 20));
    hub.faults(|f| f.slow = Some(Duration::from_millis(10)));
    let blobs = s.hub().join("models--acme--slow").join("blobs");
    let partial = |dir: &Path| -> Option<u64> {
        std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if name.ends_with(".incomplete") {
                e.metadata().ok().map(|m| m.len())
            } else {
                None
            }
        })
    };
    let mut child = s
        .std_cmd(["pull", "acme/slow"])
        .env("HF_ENDPOINT", &hub.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let started = Instant::now();
    // Well into the weights (config.json, 37 bytes, comes first).
    while partial(&blobs).unwrap_or(0) < 64 << 10 {
        assert!(child.try_wait().unwrap().is_none(), "the pull ended early");
        assert!(
            started.elapsed() < common::TIMEOUT,
            "the download never began"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: `kill` only sends a signal, to our own child.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    let output = child.wait_with_output().unwrap();
    common::assert_no_panic("model-manager pull, interrupted", &output);
    assert_eq!(output.status.code(), Some(130), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "cancelled\n");
    let kept = partial(&blobs).expect("the partial blob is kept");
    assert!(kept > 0 && kept < 4 << 20, "{kept}");

    hub.faults(|f| f.slow = None);
    hub.clear_log();
    run(&s, &hub, &["pull", "acme/slow"]).success();
    assert!(partial(&blobs).is_none());
    let ranges: Vec<String> = hub
        .requests("/cdn/")
        .into_iter()
        .filter_map(|r| r.headers.get("range").cloned())
        .collect();
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    assert!(ranges[0].starts_with("bytes=") && ranges[0] != "bytes=0-");
}
