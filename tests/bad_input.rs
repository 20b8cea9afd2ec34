//! Bad input of every kind ends the load in `Failed` with a typed error that
//! names the file and the problem; nothing panics, memory accounting returns
//! to zero, and the next load succeeds.
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{write_model, Gate};
use model_manager::{Error, ErrorCode, ModelManager, ModelSource, State};

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
    /// Must appear in the message (besides the file name).
    problem: &'static str,
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
    vec![
        Case {
            name: "header length larger than the file",
            build: |d| {
                let mut b = raw(good_tensor_header(), 16);
                b[..8].copy_from_slice(&10_000u64.to_le_bytes());
                file(d, "long-header.safetensors", &b)
            },
            code: ErrorCode::InvalidModel,
            problem: "larger than the file",
            names: "long-header.safetensors",
        },
        Case {
            name: "header length beyond any limit",
            build: |d| {
                let mut b = raw(good_tensor_header(), 16);
                b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                file(d, "huge-header.safetensors", &b)
            },
            code: ErrorCode::InvalidModel,
            problem: "limit",
            names: "huge-header.safetensors",
        },
        Case {
            name: "header JSON invalid",
            build: |d| file(d, "bad-json.safetensors", &raw("{\"w\": [1, 2", 16)),
            code: ErrorCode::InvalidModel,
            problem: "JSON",
            names: "bad-json.safetensors",
        },
        Case {
            name: "header not UTF-8",
            build: |d| {
                let mut b = raw("{\"w\":\"\u{e9}\"}", 0);
                b[10] = 0xff;
                file(d, "latin1.safetensors", &b)
            },
            code: ErrorCode::InvalidModel,
            problem: "UTF-8",
            names: "latin1.safetensors",
        },
        Case {
            name: "offsets out of range",
            build: |d| {
                let h = r#"{"w":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}"#;
                file(d, "out-of-range.safetensors", &raw(h, 16))
            },
            code: ErrorCode::InvalidModel,
            problem: "truncated",
            names: "out-of-range.safetensors",
        },
        Case {
            name: "offsets overlapping",
            build: |d| {
                let h = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#;
                file(d, "overlap.safetensors", &raw(h, 24))
            },
            code: ErrorCode::InvalidModel,
            problem: "overlap",
            names: "overlap.safetensors",
        },
        Case {
            name: "offsets not matching shape x dtype",
            build: |d| {
                let h = r#"{"w":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}}"#;
                file(d, "mismatch.safetensors", &raw(h, 16))
            },
            code: ErrorCode::InvalidModel,
            problem: "do not match",
            names: "mismatch.safetensors",
        },
        Case {
            name: "shape overflows",
            build: |d| {
                let h = r#"{"w":{"dtype":"F32","shape":[18446744073709551615,4],"data_offsets":[0,16]}}"#;
                file(d, "overflow.safetensors", &raw(h, 16))
            },
            code: ErrorCode::InvalidModel,
            problem: "overflow",
            names: "overflow.safetensors",
        },
        Case {
            name: "unknown dtype",
            build: |d| {
                let h = r#"{"w":{"dtype":"Q4","shape":[4],"data_offsets":[0,16]}}"#;
                file(d, "q4.safetensors", &raw(h, 16))
            },
            code: ErrorCode::UnsupportedDtype,
            problem: "Q4",
            names: "q4.safetensors",
        },
        Case {
            name: "dtype the device cannot hold",
            build: |d| {
                let h = r#"{"w":{"dtype":"BOOL","shape":[4],"data_offsets":[0,4]}}"#;
                file(d, "bool.safetensors", &raw(h, 4))
            },
            code: ErrorCode::UnsupportedDtype,
            problem: "BOOL",
            names: "bool.safetensors",
        },
        Case {
            name: "file truncated after the header",
            build: |d| file(d, "no-data.safetensors", &raw(good_tensor_header(), 0)),
            code: ErrorCode::InvalidModel,
            problem: "truncated",
            names: "no-data.safetensors",
        },
        Case {
            name: "empty file",
            build: |d| file(d, "empty.safetensors", b""),
            code: ErrorCode::InvalidModel,
            problem: "too short",
            names: "empty.safetensors",
        },
        Case {
            name: "index naming a missing shard",
            build: |d| {
                folder(
                    d,
                    &[
                        ("model-1.safetensors", &raw(good_tensor_header(), 16)),
                        (
                            "model.safetensors.index.json",
                            br#"{"weight_map":{"w":"model-1.safetensors","v":"model-2.safetensors"}}"#,
                        ),
                    ],
                )
            },
            code: ErrorCode::MissingFile,
            problem: "no such file",
            names: "model-2.safetensors",
        },
        Case {
            name: "shard name with ..",
            build: |d| {
                file(d, "outside.safetensors", &raw(good_tensor_header(), 16));
                folder(
                    d,
                    &[(
                        "model.safetensors.index.json",
                        br#"{"weight_map":{"w":"../outside.safetensors"}}"#,
                    )],
                )
            },
            code: ErrorCode::PathEscape,
            problem: "outside the model folder",
            names: "outside.safetensors",
        },
        Case {
            name: "absolute shard path",
            build: |d| {
                folder(
                    d,
                    &[(
                        "model.safetensors.index.json",
                        br#"{"weight_map":{"w":"/etc/passwd"}}"#,
                    )],
                )
            },
            code: ErrorCode::PathEscape,
            problem: "outside the model folder",
            names: "/etc/passwd",
        },
        Case {
            name: "symlinked shard pointing outside",
            build: |d| {
                let outside = file(d, "secret.safetensors", &raw(good_tensor_header(), 16));
                let root = folder(
                    d,
                    &[(
                        "model.safetensors.index.json",
                        br#"{"weight_map":{"w":"shard.safetensors"}}"#,
                    )],
                );
                std::os::unix::fs::symlink(outside, root.join("shard.safetensors")).unwrap();
                root
            },
            code: ErrorCode::PathEscape,
            problem: "outside the model folder",
            names: "shard.safetensors",
        },
        Case {
            name: "index whose shard lacks a tensor it names",
            build: |d| {
                folder(
                    d,
                    &[
                        ("a.safetensors", &raw(good_tensor_header(), 16)),
                        (
                            "model.safetensors.index.json",
                            br#"{"weight_map":{"w":"a.safetensors","ghost":"a.safetensors"}}"#,
                        ),
                    ],
                )
            },
            code: ErrorCode::InvalidModel,
            problem: "ghost",
            names: "a.safetensors",
        },
        Case {
            // Found by the fuzzer: `inspect` accepted it and the load refused.
            name: "a tensor in two shards",
            build: |d| {
                folder(
                    d,
                    &[
                        ("a.safetensors", &raw(good_tensor_header(), 16)),
                        (
                            "b.safetensors",
                            &raw(
                                r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"x":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}}"#,
                                32,
                            ),
                        ),
                        (
                            "model.safetensors.index.json",
                            br#"{"weight_map":{"w":"a.safetensors","x":"b.safetensors"}}"#,
                        ),
                    ],
                )
            },
            code: ErrorCode::InvalidModel,
            problem: "also in another file",
            names: "b.safetensors",
        },
        Case {
            name: "config.json invalid",
            build: |d| {
                folder(
                    d,
                    &[
                        ("model.safetensors", &raw(good_tensor_header(), 16)),
                        ("config.json", b"{\"sample_size\": 64,"),
                    ],
                )
            },
            code: ErrorCode::InvalidConfig,
            problem: "invalid config",
            names: "config.json",
        },
        Case {
            name: "index.json invalid",
            build: |d| folder(d, &[("model.safetensors.index.json", b"[1,2,3]")]),
            code: ErrorCode::InvalidConfig,
            problem: "weight_map",
            names: "model.safetensors.index.json",
        },
        Case {
            name: "a folder with no weights",
            build: |d| folder(d, &[("config.json", b"{}")]),
            code: ErrorCode::MissingFile,
            problem: "no such file",
            names: "model.safetensors",
        },
        Case {
            name: "a pipeline component that leaves the folder",
            build: |d| {
                folder(
                    d,
                    &[(
                        "model_index.json",
                        br#"{"_class_name":"X","../unet":["diffusers","UNet"]}"#,
                    )],
                )
            },
            code: ErrorCode::PathEscape,
            problem: "outside the model folder",
            names: "../unet",
        },
        Case {
            name: "a pipeline with no weights",
            build: |d| {
                folder(
                    d,
                    &[
                        ("model_index.json", br#"{"scheduler":["diffusers","DDIM"]}"#),
                        ("scheduler/scheduler_config.json", b"{}"),
                    ],
                )
            },
            code: ErrorCode::InvalidModel,
            problem: "no component with weights",
            names: "model_index.json",
        },
        Case {
            name: "model_index.json invalid",
            build: |d| folder(d, &[("model_index.json", b"{\"unet\": ")]),
            code: ErrorCode::InvalidConfig,
            problem: "invalid config",
            names: "model_index.json",
        },
        Case {
            name: "config.json symlinked to /dev/zero",
            build: |d| {
                let root = folder(d, &[("model.safetensors", &raw(good_tensor_header(), 16))]);
                std::os::unix::fs::symlink("/dev/zero", root.join("config.json")).unwrap();
                root
            },
            code: ErrorCode::PathEscape,
            problem: "outside the model folder",
            names: "config.json",
        },
        Case {
            name: "config.json a FIFO",
            build: |d| {
                let root = folder(d, &[("model.safetensors", &raw(good_tensor_header(), 16))]);
                fifo(&root.join("config.json"));
                root
            },
            code: ErrorCode::InvalidConfig,
            problem: "not a regular file",
            names: "config.json",
        },
        Case {
            name: "config.json symlinked to a FIFO outside the folder",
            build: |d| {
                let root = folder(d, &[("model.safetensors", &raw(good_tensor_header(), 16))]);
                fifo(&d.join("outside.fifo"));
                std::os::unix::fs::symlink(d.join("outside.fifo"), root.join("config.json"))
                    .unwrap();
                root
            },
            code: ErrorCode::PathEscape,
            problem: "outside the model folder",
            names: "config.json",
        },
        Case {
            name: "model_index.json a FIFO",
            build: |d| {
                let root = folder(d, &[("model.safetensors", &raw(good_tensor_header(), 16))]);
                fifo(&root.join("model_index.json"));
                root
            },
            code: ErrorCode::InvalidConfig,
            problem: "not a regular file",
            names: "model_index.json",
        },
        Case {
            name: "config.json larger than the JSON cap",
            build: |d| {
                let root = folder(d, &[("model.safetensors", &raw(good_tensor_header(), 16))]);
                sparse(&root.join("config.json"), MAX_JSON_BYTES + 1);
                root
            },
            code: ErrorCode::InvalidConfig,
            problem: "67108864 bytes (64 MiB)",
            names: "config.json",
        },
        Case {
            name: "shard index larger than the JSON cap",
            build: |d| {
                let root = folder(
                    d,
                    &[("model-1.safetensors", &raw(good_tensor_header(), 16))],
                );
                sparse(&root.join("model.safetensors.index.json"), 1 << 40);
                root
            },
            code: ErrorCode::InvalidConfig,
            problem: "67108864 bytes (64 MiB)",
            names: "model.safetensors.index.json",
        },
        Case {
            name: "model.safetensors a FIFO",
            build: |d| {
                let root = folder(d, &[("config.json", b"{}")]);
                fifo(&root.join("model.safetensors"));
                root
            },
            code: ErrorCode::InvalidModel,
            problem: "not a regular file",
            names: "model.safetensors",
        },
        Case {
            name: "a FIFO as the model file",
            build: |d| {
                let path = d.join("pipe.safetensors");
                fifo(&path);
                path
            },
            code: ErrorCode::InvalidModel,
            problem: "not a regular file",
            names: "pipe.safetensors",
        },
        Case {
            name: "/dev/zero as the model file",
            build: |_| PathBuf::from("/dev/zero"),
            code: ErrorCode::InvalidModel,
            problem: "not a regular file",
            names: "/dev/zero",
        },
        Case {
            name: "a shard that is a FIFO",
            build: |d| {
                let root = folder(
                    d,
                    &[(
                        "model.safetensors.index.json",
                        br#"{"weight_map":{"w":"shard.safetensors"}}"#,
                    )],
                );
                fifo(&root.join("shard.safetensors"));
                root
            },
            code: ErrorCode::InvalidModel,
            problem: "not a regular file",
            names: "shard.safetensors",
        },
        Case {
            name: "model.safetensors a folder",
            build: |d| {
                let root = folder(d, &[("config.json", b"{}")]);
                std::fs::create_dir(root.join("model.safetensors")).unwrap();
                root
            },
            code: ErrorCode::InvalidModel,
            problem: "not a regular file",
            names: "model.safetensors",
        },
        Case {
            name: "shard name going down and back up",
            build: |d| index_naming(d, "a/../model.safetensors"),
            code: ErrorCode::PathEscape,
            problem: "outside the model folder",
            names: "a/../model.safetensors",
        },
        Case {
            name: "empty shard name",
            build: |d| index_naming(d, ""),
            code: ErrorCode::InvalidConfig,
            problem: "names no file",
            names: "model.safetensors.index.json",
        },
        Case {
            name: "shard name .",
            build: |d| index_naming(d, "."),
            code: ErrorCode::InvalidConfig,
            problem: "names no file",
            names: "model.safetensors.index.json",
        },
        Case {
            name: "shard name ./",
            build: |d| index_naming(d, "./"),
            code: ErrorCode::InvalidConfig,
            problem: "names no file",
            names: "model.safetensors.index.json",
        },
        Case {
            name: "shard name with a backslash",
            build: |d| index_naming(d, "..\\model.safetensors"),
            code: ErrorCode::PathEscape,
            problem: "outside the model folder",
            names: "model.safetensors",
        },
        Case {
            name: "a pipeline component named .",
            build: |d| {
                folder(
                    d,
                    &[
                        ("model_index.json", br#"{".":["diffusers","UNet"]}"#),
                        ("model.safetensors", &raw(good_tensor_header(), 16)),
                    ],
                )
            },
            code: ErrorCode::InvalidConfig,
            problem: "names no file",
            names: "model_index.json",
        },
        Case {
            name: "missing path",
            build: |d| d.join("nothing-here"),
            code: ErrorCode::MissingFile,
            problem: "no such file",
            names: "nothing-here",
        },
    ]
}

#[tokio::test]
async fn every_bad_input_fails_cleanly_and_the_next_load_succeeds() {
    let good_dir = tempfile::tempdir().unwrap();
    let good = write_model(good_dir.path(), "good", 1, 3, 10_000);
    let manager = ModelManager::new().unwrap();
    for case in cases() {
        let dir = tempfile::tempdir().unwrap();
        let source = (case.build)(dir.path());
        let started = Instant::now();
        let err = bounded(case.name, manager.load(&source).unwrap())
            .await
            .expect_err(case.name);
        let message = err.to_string();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}: took {:?}",
            case.name,
            started.elapsed()
        );
        assert_eq!(err.code(), case.code, "{}: {message}", case.name);
        assert!(
            message.contains(case.problem),
            "{}: {message:?} should say {:?}",
            case.name,
            case.problem
        );
        assert!(
            message.contains(case.names),
            "{}: {message:?} should name {:?}",
            case.name,
            case.names
        );
        // `inspect` runs the same resolution: it refuses alike, except what
        // only a load decides (whether the device holds a dtype).
        match model_manager::inspect(&ModelSource::path(&source)) {
            Err(inspected) => {
                assert_eq!(inspected.code(), case.code, "{}: {inspected}", case.name)
            }
            Ok(_) => assert_eq!(case.code, ErrorCode::UnsupportedDtype, "{}", case.name),
        }
        let snap = manager.snapshot();
        assert_eq!(snap.state, State::Failed, "{}", case.name);
        assert_eq!(snap.error.as_ref(), Some(&err));
        assert_eq!(manager.resident_bytes(), 0, "{}", case.name);

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
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "m", 1, 8, 64 * 1024);
    let gate = Gate::new();
    let manager = ModelManager::builder()
        .chunk_size(64 * 1024)
        .read_threads(1)
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
    assert_eq!(err.code(), ErrorCode::InvalidModel, "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
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

/// A hub cache whose `refs/main` is a FIFO, then `/dev/zero`: refused as
/// not a regular file, without blocking or reading without end. The only
/// test here that sets `HF_HUB_CACHE`.
#[test]
fn hub_refs_that_are_not_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("models--acme--tiny");
    std::fs::create_dir_all(repo.join("snapshots")).unwrap();
    let refs = repo.join("refs").join("main");
    fifo(&refs);
    std::env::set_var("HF_HUB_CACHE", dir.path());
    let inspect = || {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(model_manager::inspect(&ModelSource::hub("acme/tiny"))));
        let Ok(result) = rx.recv_timeout(BOUND) else {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "hub inspect: hung for {BOUND:?}");
            std::process::exit(101);
        };
        result.unwrap_err()
    };
    let err = inspect();
    assert_eq!(err.code(), ErrorCode::InvalidConfig, "{err}");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert!(err.to_string().contains("refs/main"), "{err}");

    std::fs::remove_file(&refs).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &refs).unwrap();
    let err = inspect();
    assert_eq!(err.code(), ErrorCode::InvalidConfig, "{err}");
    assert!(err.to_string().contains("not a regular file"), "{err}");
}
