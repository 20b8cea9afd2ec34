//! The library's own table of bad inputs (`tests/bad_input/` in the
//! repository root): folders, shards, pipelines, hostile files.

use std::path::PathBuf;

use super::common::{raw, write};
use super::{fifo, folder, good_tensor_header, index_naming, sparse, Model, MAX_JSON_BYTES};

pub(super) fn models() -> Vec<Model> {
    vec![
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
            says: &["/model/../outside.safetensors", "outside the model folder"],
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
            says: &["/model/../unet", "outside the model folder"],
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
            says: &[
                "model_index.json",
                "no component with weights: looked in scheduler/",
            ],
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
            says: &["/model/a/../model.safetensors", "outside the model folder"],
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
