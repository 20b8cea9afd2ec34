//! Model folders and pipelines with nothing to load, malformed JSON, or
//! names that leave the folder; paths that are not there.

use std::path::PathBuf;

use model_manager::ErrorCode;

use super::{folder, good_tensor_header, raw, Case};

pub(super) fn cases() -> Vec<Case> {
    vec![
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
            says: &["invalid config"],
            names: "config.json",
        },
        Case {
            name: "index.json invalid",
            build: |d| folder(d, &[("model.safetensors.index.json", b"[1,2,3]")]),
            code: ErrorCode::InvalidConfig,
            says: &["weight_map"],
            names: "model.safetensors.index.json",
        },
        Case {
            name: "a folder with no weights",
            build: |d| folder(d, &[("config.json", b"{}")]),
            code: ErrorCode::MissingFile,
            says: &[
                "/model: no weights found: looked for a diffusers pipeline's model_index.json, \
                 model.safetensors or diffusion_pytorch_model.safetensors (or their sharded \
                 .safetensors.index.json), a single .safetensors file, PyTorch's \
                 pytorch_model.bin or diffusion_pytorch_model.bin (or their .bin.index.json), \
                 or a single .bin, .pt or .pth file",
                "the folder holds config.json",
            ],
            names: "model",
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
            says: &["outside the model folder"],
            // The folder, and the entry as written.
            names: "/model/../unet",
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
            says: &[
                "the pipeline has no component with weights: looked in scheduler/ for \
                 model.safetensors or diffusion_pytorch_model.safetensors",
            ],
            names: "model_index.json",
        },
        Case {
            name: "model_index.json invalid",
            build: |d| folder(d, &[("model_index.json", b"{\"unet\": ")]),
            code: ErrorCode::InvalidConfig,
            says: &["invalid config"],
            names: "model_index.json",
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
            says: &["names no file"],
            names: "model_index.json",
        },
        Case {
            name: "missing path",
            build: |d| d.join("nothing-here"),
            code: ErrorCode::MissingFile,
            says: &["no such file"],
            names: "nothing-here",
        },
        Case {
            name: "an empty folder",
            build: |d| folder(d, &[]),
            code: ErrorCode::MissingFile,
            says: &[
                "no weights found",
                "model_index.json",
                "the folder is empty",
            ],
            names: "model",
        },
        Case {
            name: "a folder with only PyTorch weights, damaged",
            build: |d| folder(d, &[("pytorch_model.bin", b"PK\x03\x04 not safetensors")]),
            code: ErrorCode::InvalidModel,
            says: &["not a readable PyTorch archive (a zip)"],
            names: "pytorch_model.bin",
        },
        Case {
            name: "a folder of many files, none weights",
            build: |d| {
                let root = folder(d, &[("a/config.json", b"{}")]);
                for i in 0..10 {
                    std::fs::write(root.join(format!("f{i}.json")), b"{}").unwrap();
                }
                root
            },
            code: ErrorCode::MissingFile,
            // Folders end with `/`; eight names, the rest counted.
            says: &[
                "the folder holds a/, f0.json, f1.json,",
                "f6.json and 3 more",
            ],
            names: "model",
        },
        Case {
            name: "several .safetensors files and no index",
            build: |d| {
                folder(
                    d,
                    &[
                        ("a.safetensors", &raw(good_tensor_header(), 16)),
                        ("b.safetensors", &raw(good_tensor_header(), 16)),
                    ],
                )
            },
            code: ErrorCode::MissingFile,
            says: &[
                "the folder holds a.safetensors, b.safetensors",
                "no model.safetensors.index.json to list them, give the path of the one to load",
            ],
            names: "model",
        },
        Case {
            name: "a pipeline whose PyTorch weights are damaged",
            build: |d| {
                folder(
                    d,
                    &[
                        ("model_index.json", br#"{"unet":["diffusers","UNet"]}"#),
                        ("unet/config.json", b"{}"),
                        ("unet/diffusion_pytorch_model.bin", b"PK\x03\x04"),
                    ],
                )
            },
            code: ErrorCode::InvalidModel,
            says: &["not a readable PyTorch archive (a zip)"],
            names: "diffusion_pytorch_model.bin",
        },
        Case {
            name: "a path that reads as a hub repo id",
            build: |_| PathBuf::from("acme/no-such-model"),
            code: ErrorCode::MissingFile,
            says: &[
                "no such file or folder",
                "to load the hub repo acme/no-such-model from the local cache, use \
                 ModelSource::hub(\"acme/no-such-model\")",
            ],
            names: "acme/no-such-model",
        },
        Case {
            name: "a path that reads as a hub repo id at a revision",
            build: |_| PathBuf::from("acme/no-such-model@v2"),
            code: ErrorCode::MissingFile,
            says: &["ModelSource::hub_revision(\"acme/no-such-model\", \"v2\")"],
            names: "acme/no-such-model@v2",
        },
    ]
}
