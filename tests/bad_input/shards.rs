//! Sharded models whose index or shard names are wrong.

use model_manager::ErrorCode;

use super::{file, folder, good_tensor_header, index_naming, raw, Case};

pub(super) fn cases() -> Vec<Case> {
    vec![
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
            says: &["no such file"],
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
            says: &["outside the model folder"],
            names: "/model/../outside.safetensors",
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
            says: &["outside the model folder"],
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
            says: &["outside the model folder"],
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
            says: &["ghost"],
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
            says: &["also in another file"],
            names: "b.safetensors",
        },
        Case {
            name: "shard name going down and back up",
            build: |d| index_naming(d, "a/../model.safetensors"),
            code: ErrorCode::PathEscape,
            says: &["outside the model folder"],
            names: "a/../model.safetensors",
        },
        Case {
            name: "empty shard name",
            build: |d| index_naming(d, ""),
            code: ErrorCode::InvalidConfig,
            says: &["names no file"],
            names: "model.safetensors.index.json",
        },
        Case {
            name: "shard name .",
            build: |d| index_naming(d, "."),
            code: ErrorCode::InvalidConfig,
            says: &["names no file"],
            names: "model.safetensors.index.json",
        },
        Case {
            name: "shard name ./",
            build: |d| index_naming(d, "./"),
            code: ErrorCode::InvalidConfig,
            says: &["names no file"],
            names: "model.safetensors.index.json",
        },
        Case {
            name: "shard name with a backslash",
            build: |d| index_naming(d, "..\\model.safetensors"),
            code: ErrorCode::PathEscape,
            says: &["outside the model folder"],
            names: "model.safetensors",
        },
    ]
}
