//! Bad input of every kind, through the built binary: each ends with
//! exactly one line on stderr, starting `error:`, that names the problem,
//! and a non-zero exit status; never a panic (status 101), never a hang.
//!
//! The model files are those of the library's own table
//! (`tests/bad_input/` in the repository root), each given to `load` and
//! to `inspect`, then the command line's own mistakes.
//!
//! `cargo test -p model-manager-cli --test bad_input -- --nocapture` prints
//! every stderr line the binary gives.

#![cfg(unix)] // FIFOs, symlinks and /dev/zero

#[path = "../common/mod.rs"]
mod common;
mod common_mistakes;
mod library_files;
mod library_folders;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use common::{model_file, raw, write, Sandbox};

/// The cap on JSON files, as documented on `ModelSource`.
const MAX_JSON_BYTES: u64 = 64 << 20;

fn good_tensor_header() -> &'static str {
    r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#
}

fn folder(dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
    let root = dir.join("model");
    std::fs::create_dir_all(&root).unwrap();
    for (name, bytes) in files {
        write(&root.join(name), bytes);
    }
    root
}

/// A FIFO at `path` (nothing ever writes to it).
fn fifo(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
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

/// A bad model given to `load` and `inspect`.
struct Model {
    name: &'static str,
    /// Builds the input under the given folder; returns what to give the
    /// command.
    build: fn(&Path) -> PathBuf,
    /// What the error line must say, besides `error: `.
    says: &'static [&'static str],
    /// Whether `inspect`, which reads headers only, refuses it too (a dtype
    /// the device cannot hold is found by a load only).
    inspect_refuses: bool,
}

fn models() -> Vec<Model> {
    let mut all = common_mistakes::models();
    all.extend(library_files::models());
    all.extend(library_folders::models());
    all
}

/// Checks one failing run and records its line for the listing.
fn refused(s: &Sandbox, case: &str, args: Vec<OsString>, says: &[&str], seen: &mut Vec<String>) {
    let run = s.run(&args);
    let line = run.error_line();
    for word in says {
        assert!(
            line.contains(word),
            "{case}: {}: {line:?} should say {word:?}",
            run.what
        );
    }
    assert_ne!(run.code(), Some(0));
    seen.push(format!(
        "{case:<48} {:<6} {}",
        args[0].to_string_lossy(),
        line.replace(&s.path().display().to_string(), "$DIR")
    ));
}

#[test]
fn bad_models_give_one_error_line_to_load_and_inspect() {
    let mut seen = Vec::new();
    for model in models() {
        let s = Sandbox::new();
        let path = (model.build)(s.path());
        refused(
            &s,
            model.name,
            vec!["load".into(), path.clone().into()],
            model.says,
            &mut seen,
        );
        if model.inspect_refuses {
            refused(
                &s,
                model.name,
                vec!["inspect".into(), path.clone().into()],
                model.says,
                &mut seen,
            );
        } else {
            s.run(["inspect".as_ref(), path.as_os_str()]).success();
        }
        // The pool reports a model that fails the same way.
        let spec = format!("m={}", path.display());
        refused(
            &s,
            model.name,
            vec!["pool".into(), "--budget".into(), "1GiB".into(), spec.into()],
            model.says,
            &mut seen,
        );
    }
    eprintln!("{}", seen.join("\n"));
}

#[test]
fn a_hub_repo_not_in_the_cache() {
    let s = Sandbox::new();
    let mut seen = Vec::new();
    let cache = s.hub().display().to_string();
    for command in ["load", "inspect"] {
        for (arg, fetch) in [
            ("acme/absent", "`model-manager pull acme/absent`"),
            ("acme/absent@v2", "`model-manager pull acme/absent@v2`"),
        ] {
            refused(
                &s,
                "a repo id not in the hub cache",
                vec![command.into(), arg.into()],
                &[
                    "the hub repo acme/absent is not in the cache at",
                    &cache,
                    "(set by HF_HUB_CACHE)",
                    "reads the cache only",
                    fetch,
                    "HF_HUB_CACHE (or HF_HOME)",
                ],
                &mut seen,
            );
        }
    }
    // In the cache, at a revision it does not have.
    common::hub_entry(&s.hub(), "acme/tiny");
    refused(
        &s,
        "a revision not in the hub cache",
        vec!["load".into(), "acme/tiny@v9".into()],
        &[
            "revision v9 of acme/tiny is not in the hub cache",
            "refs: main, v1",
            "snapshots: 0123456789abcdef0123456789abcdef01234567/",
            "`hf download acme/tiny --revision v9`",
        ],
        &mut seen,
    );
    refused(
        &s,
        "a revision that is no revision",
        vec!["inspect".into(), "acme/tiny@..".into()],
        &[".."],
        &mut seen,
    );
    eprintln!("{}", seen.join("\n"));
}

#[test]
fn bad_options_and_arguments() {
    let s = Sandbox::new();
    let file = model_file(s.path()).display().to_string();
    let m = format!("m={file}");
    let no_id = format!("={file}");
    let cases: Vec<(&str, Vec<&str>, &[&str])> = vec![
        (
            "unknown dtype",
            vec!["load", &file, "--dtype", "f8"],
            &["f8", "f32, f16 or bf16"],
        ),
        (
            "empty dtype",
            vec!["load", &file, "--dtype", ""],
            &["dtype"],
        ),
        (
            "a CUDA device on a CPU build",
            vec!["load", &file, "--device", "cuda:0"],
            &[
                "cuda:0: model-manager was built without the `cuda` feature",
                "`cargo run -p model-manager-cli --features cuda -- ...`",
            ],
        ),
        (
            "a device that is none",
            vec!["load", &file, "--device", "nonsense"],
            &["nonsense"],
        ),
        (
            "a CUDA device with no number",
            vec!["load", &file, "--device", "cuda:x"],
            &["cuda:x"],
        ),
        ("an empty model argument", vec!["load", ""], &["error: "]),
        ("load without a model", vec!["load"], &["MODEL"]),
        ("inspect without a model", vec!["inspect"], &["MODEL"]),
        (
            "an unknown flag",
            vec!["load", &file, "--fast"],
            &["--fast"],
        ),
        ("an unknown subcommand", vec!["frobnicate"], &["frobnicate"]),
        ("a misspelt subcommand", vec!["lod", &file], &["lod"]),
        (
            "a bad budget",
            vec!["pool", "--budget", "12XB", &m],
            &["12XB"],
        ),
        (
            "a budget that is no number",
            vec!["pool", "--budget", "lots", &m],
            &["lots"],
        ),
        (
            "a budget larger than any memory",
            vec!["pool", "--budget", "99999999999999999999TiB", &m],
            &["TiB"],
        ),
        (
            "a budget of nothing",
            vec!["pool", "--budget", "0", &m],
            &["error: "],
        ),
        ("pool without a budget", vec!["pool", &m], &["--budget"]),
        (
            "pool without models",
            vec!["pool", "--budget", "1GiB"],
            &["MODELS"],
        ),
        (
            "a bad keep-alive",
            vec!["pool", "--budget", "1GiB", "--keep-alive", "5 parsecs", &m],
            &["parsecs"],
        ),
        (
            "a keep-alive that is no number",
            vec!["pool", "--budget", "1GiB", "--keep-alive", "soon", &m],
            &["soon"],
        ),
        (
            "a keep-alive beyond any clock",
            vec![
                "pool",
                "--budget",
                "1GiB",
                "--keep-alive",
                "99999999999999999999999h",
                &m,
            ],
            &["99999999999999999999999h"],
        ),
        (
            "pool with a malformed ID=MODEL",
            vec!["pool", "--budget", "1GiB", &file],
            &["ID=MODEL"],
        ),
        (
            "pool with an empty id",
            vec!["pool", "--budget", "1GiB", &no_id],
            &["error: "],
        ),
        (
            "pool with an id twice",
            vec!["pool", "--budget", "1GiB", &m, &m],
            &["\"m\""],
        ),
        (
            "pool with a budget too small",
            vec!["pool", "--budget", "100", &m],
            &["m: "],
        ),
        (
            "pool with a missing model",
            vec!["pool", "--budget", "1GiB", "m=absent.safetensors"],
            &["absent.safetensors", "no such file"],
        ),
        (
            "pool with a repo not in the cache",
            vec!["pool", "--budget", "1GiB", "m=acme/absent"],
            &["m: ", "absent"],
        ),
    ];
    let mut seen = Vec::new();
    for (case, args, says) in cases {
        refused(
            &s,
            case,
            args.iter().map(OsString::from).collect(),
            says,
            &mut seen,
        );
    }
    eprintln!("{}", seen.join("\n"));
}

/// A reader that goes away (`model-manager inspect --all ... | head -1`)
/// ends the command quietly, not with a panic over the broken pipe.
#[test]
fn a_closed_stdout_is_no_panic() {
    let s = Sandbox::new();
    let tensors: Vec<_> = (0..5000)
        .map(|i| common::f32_tensor(&format!("layer.{i}.weight"), &[2]))
        .collect();
    let big = write(
        &s.path().join("many.safetensors"),
        common::safetensors(&tensors),
    );
    for args in [
        vec![
            "inspect".into(),
            "--all".into(),
            big.clone().into_os_string(),
        ],
        vec!["--help".into()],
    ] {
        let mut child = s
            .std_cmd(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the binary starts");
        drop(child.stdout.take());
        let output = common::wait_bounded(child, "model-manager with its stdout closed");
        common::assert_no_panic("model-manager with its stdout closed", &output);
        assert_eq!(
            String::from_utf8_lossy(&output.stderr),
            "",
            "{args:?}: nothing on stderr"
        );
    }
}
