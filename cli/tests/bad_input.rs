//! Bad input of every kind, through the built binary: each ends with
//! exactly one line on stderr, starting `error:`, that names the problem,
//! and a non-zero exit status; never a panic (status 101), never a hang.
//!
//! The model files are those of the library's own table
//! (`tests/bad_input.rs` in the repository root), each given to `load` and
//! to `inspect`, then the command line's own mistakes.
//!
//! `cargo test -p model-manager-cli --test bad_input -- --nocapture` prints
//! every stderr line the binary gives.

#![cfg(unix)] // FIFOs, symlinks and /dev/zero

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use common::{model_file, model_folder, raw, write, Sandbox};

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
    vec![
        // The inputs users get wrong most.
        Model {
            name: "missing file",
            build: |d| d.join("nothing-here.safetensors"),
            says: &["nothing-here.safetensors", "no such file"],
            inspect_refuses: true,
        },
        Model {
            name: "missing path that looks like a folder",
            build: |d| d.join("nothing-here"),
            says: &["nothing-here", "no such file"],
            inspect_refuses: true,
        },
        Model {
            name: "empty folder",
            build: |d| folder(d, &[]),
            // Today: `<folder>/model.safetensors: no such file`.
            says: &["model"],
            inspect_refuses: true,
        },
        Model {
            name: "folder with only config.json",
            build: |d| folder(d, &[("config.json", b"{}")]),
            // Today: `<folder>/model.safetensors: no such file`.
            says: &["model"],
            inspect_refuses: true,
        },
        Model {
            name: "folder with only pytorch_model.bin",
            build: |d| folder(d, &[("pytorch_model.bin", b"PK\x03\x04 not safetensors")]),
            // Today: `<folder>/model.safetensors: no such file`.
            says: &["model"],
            inspect_refuses: true,
        },
        Model {
            name: "a text file",
            build: |d| {
                write(
                    &d.join("notes.txt"),
                    "These are not the weights you are looking for.\n",
                )
            },
            says: &["notes.txt"],
            inspect_refuses: true,
        },
        Model {
            name: "a text file named .safetensors",
            build: |d| write(&d.join("notes.safetensors"), "hello\n"),
            says: &["notes.safetensors"],
            inspect_refuses: true,
        },
        Model {
            name: "a safetensors file cut short in its data",
            build: |d| {
                let mut bytes = std::fs::read(model_file(d)).unwrap();
                bytes.truncate(bytes.len() - 10);
                write(&d.join("cut.safetensors"), bytes)
            },
            says: &["cut.safetensors", "truncated"],
            inspect_refuses: true,
        },
        Model {
            name: "a safetensors file cut short in its header",
            build: |d| {
                let mut bytes = std::fs::read(model_file(d)).unwrap();
                bytes.truncate(40);
                write(&d.join("cut-header.safetensors"), bytes)
            },
            says: &["cut-header.safetensors", "larger than the file"],
            inspect_refuses: true,
        },
        Model {
            name: "offsets that overflow",
            build: |d| {
                let h = r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[18446744073709551600,18446744073709551615]}}"#;
                write(&d.join("offsets-overflow.safetensors"), raw(h, 16))
            },
            says: &["offsets-overflow.safetensors"],
            inspect_refuses: true,
        },
        Model {
            name: "offsets beyond u64",
            build: |d| {
                let h =
                    r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,184467440737095516150]}}"#;
                write(&d.join("offsets-beyond.safetensors"), raw(h, 16))
            },
            says: &["offsets-beyond.safetensors"],
            inspect_refuses: true,
        },
        Model {
            name: "malformed config.json",
            build: |d| {
                let root = model_folder(d, "model", 8);
                write(&root.join("config.json"), "{\"sample_size\": 64,");
                root
            },
            says: &["config.json", "invalid config"],
            inspect_refuses: true,
        },
        // The library's own table of bad inputs (tests/bad_input.rs).
        Model {
            name: "header length larger than the file",
            build: |d| {
                let mut b = raw(good_tensor_header(), 16);
                b[..8].copy_from_slice(&10_000u64.to_le_bytes());
                write(&d.join("long-header.safetensors"), b)
            },
            says: &["long-header.safetensors", "larger than the file"],
            inspect_refuses: true,
        },
        Model {
            name: "header length beyond any limit",
            build: |d| {
                let mut b = raw(good_tensor_header(), 16);
                b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                write(&d.join("huge-header.safetensors"), b)
            },
            says: &["huge-header.safetensors", "limit"],
            inspect_refuses: true,
        },
        Model {
            name: "header JSON invalid",
            build: |d| write(&d.join("bad-json.safetensors"), raw("{\"w\": [1, 2", 16)),
            says: &["bad-json.safetensors", "JSON"],
            inspect_refuses: true,
        },
        Model {
            name: "header not UTF-8",
            build: |d| {
                let mut b = raw("{\"w\":\"\u{e9}\"}", 0);
                b[10] = 0xff;
                write(&d.join("latin1.safetensors"), b)
            },
            says: &["latin1.safetensors", "UTF-8"],
            inspect_refuses: true,
        },
        Model {
            name: "offsets out of range",
            build: |d| {
                let h = r#"{"w":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}"#;
                write(&d.join("out-of-range.safetensors"), raw(h, 16))
            },
            says: &["out-of-range.safetensors", "truncated"],
            inspect_refuses: true,
        },
        Model {
            name: "offsets overlapping",
            build: |d| {
                let h = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#;
                write(&d.join("overlap.safetensors"), raw(h, 24))
            },
            says: &["overlap.safetensors", "overlap"],
            inspect_refuses: true,
        },
        Model {
            name: "offsets not matching shape x dtype",
            build: |d| {
                let h = r#"{"w":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}}"#;
                write(&d.join("mismatch.safetensors"), raw(h, 16))
            },
            says: &["mismatch.safetensors", "do not match"],
            inspect_refuses: true,
        },
        Model {
            name: "shape overflows",
            build: |d| {
                let h = r#"{"w":{"dtype":"F32","shape":[18446744073709551615,4],"data_offsets":[0,16]}}"#;
                write(&d.join("overflow.safetensors"), raw(h, 16))
            },
            says: &["overflow.safetensors", "overflow"],
            inspect_refuses: true,
        },
        Model {
            name: "unknown dtype in the file",
            build: |d| {
                let h = r#"{"w":{"dtype":"Q4","shape":[4],"data_offsets":[0,16]}}"#;
                write(&d.join("q4.safetensors"), raw(h, 16))
            },
            says: &["q4.safetensors", "Q4"],
            inspect_refuses: true,
        },
        Model {
            name: "dtype the device cannot hold",
            build: |d| {
                let h = r#"{"w":{"dtype":"BOOL","shape":[4],"data_offsets":[0,4]}}"#;
                write(&d.join("bool.safetensors"), raw(h, 4))
            },
            says: &["bool.safetensors", "BOOL"],
            inspect_refuses: false,
        },
        Model {
            name: "file truncated after the header",
            build: |d| write(&d.join("no-data.safetensors"), raw(good_tensor_header(), 0)),
            says: &["no-data.safetensors", "truncated"],
            inspect_refuses: true,
        },
        Model {
            name: "empty file",
            build: |d| write(&d.join("empty.safetensors"), b""),
            says: &["empty.safetensors", "too short"],
            inspect_refuses: true,
        },
        Model {
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
            says: &["model-2.safetensors", "no such file"],
            inspect_refuses: true,
        },
        Model {
            name: "shard name with ..",
            build: |d| {
                write(
                    &d.join("outside.safetensors"),
                    raw(good_tensor_header(), 16),
                );
                folder(
                    d,
                    &[(
                        "model.safetensors.index.json",
                        br#"{"weight_map":{"w":"../outside.safetensors"}}"#,
                    )],
                )
            },
            says: &["outside.safetensors", "outside the model folder"],
            inspect_refuses: true,
        },
        Model {
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
            says: &["/etc/passwd", "outside the model folder"],
            inspect_refuses: true,
        },
        Model {
            name: "symlinked shard pointing outside",
            build: |d| {
                let outside = write(&d.join("secret.safetensors"), raw(good_tensor_header(), 16));
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
            says: &["shard.safetensors", "outside the model folder"],
            inspect_refuses: true,
        },
        Model {
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
            says: &["a.safetensors", "ghost"],
            inspect_refuses: true,
        },
        Model {
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
            says: &["b.safetensors", "also in another file"],
            inspect_refuses: true,
        },
        Model {
            name: "index.json invalid",
            build: |d| folder(d, &[("model.safetensors.index.json", b"[1,2,3]")]),
            says: &["model.safetensors.index.json", "weight_map"],
            inspect_refuses: true,
        },
        Model {
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
            says: &["../unet", "outside the model folder"],
            inspect_refuses: true,
        },
        Model {
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
            says: &["model_index.json", "no component with weights"],
            inspect_refuses: true,
        },
        Model {
            name: "model_index.json invalid",
            build: |d| folder(d, &[("model_index.json", b"{\"unet\": ")]),
            says: &["model_index.json", "invalid config"],
            inspect_refuses: true,
        },
        Model {
            name: "config.json symlinked to /dev/zero",
            build: |d| {
                let root = folder(d, &[("model.safetensors", &raw(good_tensor_header(), 16))]);
                std::os::unix::fs::symlink("/dev/zero", root.join("config.json")).unwrap();
                root
            },
            says: &["config.json", "outside the model folder"],
            inspect_refuses: true,
        },
        Model {
            name: "config.json a FIFO",
            build: |d| {
                let root = folder(d, &[("model.safetensors", &raw(good_tensor_header(), 16))]);
                fifo(&root.join("config.json"));
                root
            },
            says: &["config.json", "not a regular file"],
            inspect_refuses: true,
        },
        Model {
            name: "config.json symlinked to a FIFO outside the folder",
            build: |d| {
                let root = folder(d, &[("model.safetensors", &raw(good_tensor_header(), 16))]);
                fifo(&d.join("outside.fifo"));
                std::os::unix::fs::symlink(d.join("outside.fifo"), root.join("config.json"))
                    .unwrap();
                root
            },
            says: &["config.json", "outside the model folder"],
            inspect_refuses: true,
        },
        Model {
            name: "model_index.json a FIFO",
            build: |d| {
                let root = folder(d, &[("model.safetensors", &raw(good_tensor_header(), 16))]);
                fifo(&root.join("model_index.json"));
                root
            },
            says: &["model_index.json", "not a regular file"],
            inspect_refuses: true,
        },
        Model {
            name: "config.json larger than the JSON cap",
            build: |d| {
                let root = folder(d, &[("model.safetensors", &raw(good_tensor_header(), 16))]);
                sparse(&root.join("config.json"), MAX_JSON_BYTES + 1);
                root
            },
            says: &["config.json", "67108864 bytes (64 MiB)"],
            inspect_refuses: true,
        },
        Model {
            name: "shard index larger than the JSON cap",
            build: |d| {
                let root = folder(
                    d,
                    &[("model-1.safetensors", &raw(good_tensor_header(), 16))],
                );
                sparse(&root.join("model.safetensors.index.json"), 1 << 40);
                root
            },
            says: &["model.safetensors.index.json", "67108864 bytes (64 MiB)"],
            inspect_refuses: true,
        },
        Model {
            name: "model.safetensors a FIFO",
            build: |d| {
                let root = folder(d, &[("config.json", b"{}")]);
                fifo(&root.join("model.safetensors"));
                root
            },
            says: &["model.safetensors", "not a regular file"],
            inspect_refuses: true,
        },
        Model {
            name: "a FIFO as the model file",
            build: |d| {
                let path = d.join("pipe.safetensors");
                fifo(&path);
                path
            },
            says: &["pipe.safetensors", "not a regular file"],
            inspect_refuses: true,
        },
        Model {
            name: "/dev/zero as the model file",
            build: |_| PathBuf::from("/dev/zero"),
            says: &["/dev/zero", "not a regular file"],
            inspect_refuses: true,
        },
        Model {
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
            says: &["shard.safetensors", "not a regular file"],
            inspect_refuses: true,
        },
        Model {
            name: "model.safetensors a folder",
            build: |d| {
                let root = folder(d, &[("config.json", b"{}")]);
                std::fs::create_dir(root.join("model.safetensors")).unwrap();
                root
            },
            says: &["model.safetensors", "not a regular file"],
            inspect_refuses: true,
        },
        Model {
            name: "shard name going down and back up",
            build: |d| index_naming(d, "a/../model.safetensors"),
            says: &["a/../model.safetensors", "outside the model folder"],
            inspect_refuses: true,
        },
        Model {
            name: "empty shard name",
            build: |d| index_naming(d, ""),
            says: &["model.safetensors.index.json", "names no file"],
            inspect_refuses: true,
        },
        Model {
            name: "shard name .",
            build: |d| index_naming(d, "."),
            says: &["model.safetensors.index.json", "names no file"],
            inspect_refuses: true,
        },
        Model {
            name: "shard name ./",
            build: |d| index_naming(d, "./"),
            says: &["model.safetensors.index.json", "names no file"],
            inspect_refuses: true,
        },
        Model {
            name: "shard name with a backslash",
            build: |d| index_naming(d, "..\\model.safetensors"),
            says: &["model.safetensors", "outside the model folder"],
            inspect_refuses: true,
        },
        Model {
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
            says: &["model_index.json", "names no file"],
            inspect_refuses: true,
        },
    ]
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
    for command in ["load", "inspect"] {
        for arg in ["acme/absent", "acme/absent@v2"] {
            refused(
                &s,
                "a repo id not in the hub cache",
                vec![command.into(), arg.into()],
                &["absent"],
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
        &["v9"],
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
            &["cuda"],
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
