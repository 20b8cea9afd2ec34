//! Files that could hang or exhaust a reader: FIFOs, devices, symlinks out
//! of the folder, JSON beyond the cap.

use std::path::PathBuf;

use model_manager::ErrorCode;

use super::{fifo, folder, good_tensor_header, raw, sparse, Case, MAX_JSON_BYTES};

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "config.json symlinked to /dev/zero",
            build: |d| {
                let root = folder(d, &[("model.safetensors", &raw(good_tensor_header(), 16))]);
                std::os::unix::fs::symlink("/dev/zero", root.join("config.json")).unwrap();
                root
            },
            code: ErrorCode::PathEscape,
            says: &["outside the model folder"],
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
            says: &["not a regular file"],
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
            says: &["outside the model folder"],
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
            says: &["not a regular file"],
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
            says: &["67108864 bytes (64 MiB)"],
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
            says: &["67108864 bytes (64 MiB)"],
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
            says: &["not a regular file"],
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
            says: &["not a regular file"],
            names: "pipe.safetensors",
        },
        Case {
            name: "/dev/zero as the model file",
            build: |_| PathBuf::from("/dev/zero"),
            code: ErrorCode::InvalidModel,
            says: &["not a regular file"],
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
            says: &["not a regular file"],
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
            says: &["not a regular file"],
            names: "model.safetensors",
        },
    ]
}
