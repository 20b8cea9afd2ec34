//! Bad input of every kind ends the load in `Failed` with a typed error that
//! names the file and the problem; nothing panics, memory accounting returns
//! to zero, and the next load succeeds.
#[path = "../common/mod.rs"]
mod common;
mod files;
mod folders;
mod hostile;
mod hub;
mod shards;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{write_model, Gate};
use model_manager::{Error, ErrorCode, ModelManager, ModelSource, PageCache, State};

/// The cap on JSON files, as documented on `ModelSource`.
const MAX_JSON_BYTES: u64 = 64 << 20;

/// Longer than any load of these inputs may take: a load that blocks (on a
/// FIFO) or reads without end (`/dev/zero`) fails the test instead of
/// hanging it.
const BOUND: Duration = Duration::from_secs(20);

/// A safetensors file from a header and `data` bytes of payload.
fn raw(header: &str, data: usize) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(7u8, data));
    bytes
}

/// `f`, or if it has not ended within [`BOUND`], the end of the test
/// process: a load blocked on a FIFO holds a thread that the runtime would
/// wait for forever when the manager is dropped, so a panic would hang too.
async fn bounded<T>(what: &str, f: impl std::future::IntoFuture<Output = T>) -> T {
    match tokio::time::timeout(BOUND, f).await {
        Ok(value) => value,
        Err(_) => {
            use std::io::Write;
            // Straight to stderr: the test harness would print a captured
            // message only once the test ends, which it would not.
            let _ = writeln!(std::io::stderr(), "{what}: hung for {BOUND:?}");
            std::process::exit(101);
        }
    }
}

fn good_tensor_header() -> &'static str {
    r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#
}

struct Case {
    name: &'static str,
    /// Builds the input under the given folder; returns what to load.
    build: fn(&Path) -> PathBuf,
    code: ErrorCode,
    /// Each must appear in the message (besides the file name): what was
    /// found, and the way out.
    says: &'static [&'static str],
    /// The file the message must name.
    names: &'static str,
}

fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn folder(dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
    let root = dir.join("model");
    std::fs::create_dir_all(&root).unwrap();
    for (name, bytes) in files {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    root
}

/// A FIFO at `path` (nothing ever writes to it: opening it for reading
/// blocks, reading it never ends).
fn fifo(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// A sparse file of `len` bytes (no disk blocks written).
fn sparse(path: &Path, len: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}

/// A shard index placing tensor `w` in the shard named `shard`.
fn index_naming(d: &Path, shard: &str) -> PathBuf {
    let json = format!(r#"{{"weight_map":{{"w":{shard:?}}}}}"#);
    folder(
        d,
        &[
            ("model.safetensors", &raw(good_tensor_header(), 16)),
            ("model.safetensors.index.json", json.as_bytes()),
        ],
    )
}

fn cases() -> Vec<Case> {
    let mut all = files::cases();
    all.extend(shards::cases());
    all.extend(folders::cases());
    all.extend(hostile::cases());
    all
}

#[tokio::test]
async fn every_bad_input_fails_cleanly_and_the_next_load_succeeds() {
    // Read through the page cache (the default) and around it (direct I/O).
    for policy in [PageCache::Auto, PageCache::Bypass] {
        every_bad_input_with(policy).await;
    }
}

async fn every_bad_input_with(policy: PageCache) {
    // On disk where the build is (the temp folder may be tmpfs, which may
    // refuse direct I/O).
    let scratch = env!("CARGO_TARGET_TMPDIR");
    let good_dir = tempfile::tempdir_in(scratch).unwrap();
    let good = write_model(good_dir.path(), "good", 1, 3, 10_000);
    let manager = ModelManager::builder().page_cache(policy).build().unwrap();
    for case in cases() {
        let name = format!("{} ({policy:?})", case.name);
        let dir = tempfile::tempdir_in(scratch).unwrap();
        let source = (case.build)(dir.path());
        let started = Instant::now();
        let err = bounded(&name, manager.load(&source).unwrap())
            .await
            .expect_err(&name);
        let message = err.to_string();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}: took {:?}",
            name,
            started.elapsed()
        );
        assert_eq!(err.code(), case.code, "{}: {message}", name);
        for word in case.says {
            assert!(
                message.contains(word),
                "{}: {message:?} should say {word:?}",
                name
            );
        }
        assert!(
            message.contains(case.names),
            "{}: {message:?} should name {:?}",
            name,
            case.names
        );
        // `inspect` runs the same resolution: it refuses alike, except what
        // only a load decides (whether the device holds a dtype).
        match model_manager::inspect(&ModelSource::path(&source)) {
            Err(inspected) => {
                assert_eq!(inspected.code(), case.code, "{}: {inspected}", name)
            }
            Ok(_) => assert_eq!(case.code, ErrorCode::UnsupportedDtype, "{}", name),
        }
        let snap = manager.snapshot();
        assert_eq!(snap.state, State::Failed, "{}", name);
        assert_eq!(snap.error.as_ref(), Some(&err));
        assert_eq!(manager.resident_bytes(), 0, "{}", name);

        manager
            .load(&*good)
            .unwrap()
            .await
            .expect("the next load succeeds");
        common::verify(&manager.acquire().unwrap(), 1);
        manager.unload().await.unwrap();
    }
    manager.shutdown().await;
}

#[tokio::test]
async fn a_file_truncated_while_loading_is_an_error_not_a_crash() {
    // Read through the page cache, and around it (direct reads end short).
    for policy in [PageCache::Auto, PageCache::Bypass] {
        truncated_while_loading(policy).await;
    }
}

async fn truncated_while_loading(policy: PageCache) {
    // On disk where the build is (the temp folder may be tmpfs, which may
    // refuse direct I/O).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let model = write_model(dir.path(), "m", 1, 8, 64 * 1024);
    let gate = Gate::new();
    let manager = ModelManager::builder()
        .chunk_size(64 * 1024)
        .read_threads(1)
        .page_cache(policy)
        .on_progress(gate.hook())
        .build()
        .unwrap();
    gate.close_at(2);
    let handle = manager.load(&*model).unwrap();
    gate.paused().await;
    let weights = model.join("model.safetensors");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&weights)
        .unwrap();
    f.set_len(1000).unwrap();
    gate.open();
    let err = handle.await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidModel, "{policy:?}: {err}");
    assert!(err.to_string().contains("truncated"), "{policy:?}: {err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    assert_eq!(manager.current_state(), State::Failed);
    assert_eq!(manager.resident_bytes(), 0);
    manager.shutdown().await;
}

#[tokio::test]
async fn over_budget_fails_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "m", 1, 4, 100_000); // 1.6 MB
    let small = write_model(dir.path(), "s", 2, 1, 1000);
    let manager = ModelManager::builder()
        .memory_budget(1_000_000)
        .on_progress(|_| panic!("nothing may be read for an over-budget model"))
        .build()
        .unwrap();
    let err = manager.load(&*model).unwrap().await.unwrap_err();
    assert_eq!(
        err,
        Error::InsufficientMemory {
            needed: 1_600_000,
            available: 1_000_000,
            pinned: 0,
        }
    );
    assert_eq!(manager.current_state(), State::Failed);
    assert_eq!(manager.resident_bytes(), 0);
    drop(manager);

    let manager = ModelManager::builder()
        .memory_budget(1_000_000)
        .build()
        .unwrap();
    manager.load(&*small).unwrap().await.unwrap();
    manager.shutdown().await;
}

/// Two shards of `w0`..`w3`: `./model-00001-of-00002.safetensors` (named
/// with and without `./`) and `model-00002-of-00002.safetensors` (named
/// `prefix` + its name).
fn dot_slash_sharded(d: &Path, prefix: &str) -> PathBuf {
    let two = |a: &str, b: &str| {
        let h = format!(
            r#"{{"{a}":{{"dtype":"F32","shape":[4],"data_offsets":[0,16]}},"{b}":{{"dtype":"F32","shape":[4],"data_offsets":[16,32]}}}}"#
        );
        raw(&h, 32)
    };
    let index = format!(
        r#"{{"weight_map":{{
            "w0":"./model-00001-of-00002.safetensors",
            "w1":"model-00001-of-00002.safetensors",
            "w2":"{prefix}model-00002-of-00002.safetensors",
            "w3":"./model-00002-of-00002.safetensors"}}}}"#
    );
    folder(
        d,
        &[
            ("model-00001-of-00002.safetensors", &two("w0", "w1")),
            ("model-00002-of-00002.safetensors", &two("w2", "w3")),
            ("model.safetensors.index.json", index.as_bytes()),
            ("config.json", br#"{"sample_size": 8}"#),
        ],
    )
}

#[tokio::test]
async fn shard_names_with_dot_slash_load() {
    let dir = tempfile::tempdir().unwrap();
    let root = dot_slash_sharded(dir.path(), ".//");

    let summary = model_manager::inspect(&ModelSource::path(&root)).expect("inspect");
    assert_eq!(summary.tensors, 4);
    assert_eq!(summary.bytes, 64);
    let files: std::collections::BTreeSet<_> = summary.components[0]
        .tensors
        .iter()
        .map(|t| t.file.clone())
        .collect();
    assert_eq!(files.len(), 2, "each shard opened once: {files:?}");

    let manager = ModelManager::new().unwrap();
    bounded("the load", manager.load(&root).unwrap())
        .await
        .expect("the load succeeds");
    let lease = manager.acquire().unwrap();
    for name in ["w0", "w1", "w2", "w3"] {
        let t = lease
            .tensor(name)
            .unwrap_or_else(|| panic!("{name} loaded"));
        assert_eq!(t.dims(), &[4]);
    }
    drop(lease);
    assert_eq!(manager.sample_size(), Some(8));
    manager.shutdown().await;
}

#[test]
fn shard_names_with_dot_slash_inspect_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dot_slash_sharded(dir.path(), "./");
    let files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    let summary = model_manager::inspect(&ModelSource::files(files)).expect("inspect");
    assert_eq!(summary.tensors, 4);
    assert_eq!(summary.bytes, 64);
}

#[test]
fn inspect_refuses_hostile_files_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let root = folder(
        dir.path(),
        &[("model.safetensors", &raw(good_tensor_header(), 16))],
    );
    fifo(&root.join("config.json"));
    let (tx, rx) = std::sync::mpsc::channel();
    let source = ModelSource::path(&root);
    std::thread::spawn(move || tx.send(model_manager::inspect(&source)));
    let Ok(result) = rx.recv_timeout(BOUND) else {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "inspect: hung for {BOUND:?}");
        std::process::exit(101);
    };
    let err = result.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidConfig, "{err}");
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

/// A device this build lacks names the feature and how to build with it,
/// from `DeviceSpec::open` and from a load.
#[cfg(not(feature = "cuda"))]
#[tokio::test]
async fn a_device_the_build_lacks_names_the_feature() {
    use model_manager::DeviceSpec;
    let words = [
        "cuda:1: model-manager was built without the `cuda` feature",
        "`cargo build --features cuda`",
        "`cargo run -p model-manager-cli --features cuda -- ...`",
    ];
    let opened = DeviceSpec::Cuda(1).open().unwrap_err();
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "m", 1, 1, 16);
    let loaded = match ModelManager::builder().device(DeviceSpec::Cuda(1)).build() {
        Ok(manager) => {
            let err = manager.load(&*model).unwrap().await.unwrap_err();
            manager.shutdown().await;
            err
        }
        Err(err) => err,
    };
    for err in [opened, loaded] {
        assert_eq!(err.code(), ErrorCode::Device, "{err}");
        for word in words {
            assert!(
                err.to_string().contains(word),
                "{err:?} should say {word:?}"
            );
        }
    }
    #[cfg(not(feature = "metal"))]
    {
        let err = DeviceSpec::Metal.open().unwrap_err();
        assert!(
            err.to_string().contains("`cargo build --features metal`"),
            "{err}"
        );
    }
}
