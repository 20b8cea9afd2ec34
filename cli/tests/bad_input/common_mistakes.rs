//! The inputs users get wrong most: a path that is not there, a folder
//! without safetensors weights, a file that is not safetensors.

use super::common::{model_file, model_folder, raw, write};
use super::{folder, Model};

pub(super) fn models() -> Vec<Model> {
    vec![
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
            says: &[
                "/model: no weights found: looked for",
                "model_index.json",
                "diffusion_pytorch_model.safetensors",
                ".safetensors.index.json",
                "the folder is empty",
            ],
            inspect_refuses: true,
        },
        Model {
            name: "folder with only config.json",
            build: |d| folder(d, &[("config.json", b"{}")]),
            says: &["no weights found", "the folder holds config.json"],
            inspect_refuses: true,
        },
        Model {
            name: "folder with only a damaged pytorch_model.bin",
            build: |d| folder(d, &[("pytorch_model.bin", b"PK\x03\x04 not safetensors")]),
            says: &[
                "pytorch_model.bin",
                "not a readable PyTorch archive (a zip)",
            ],
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
            says: &[
                "notes.txt: not a safetensors file",
                "it begins with text: \"These are not the weight",
            ],
            inspect_refuses: true,
        },
        Model {
            name: "a text file named .safetensors",
            build: |d| write(&d.join("notes.safetensors"), "hello\n"),
            says: &[
                "notes.safetensors",
                "too short for a header",
                "\"hello\\n\"",
            ],
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
            says: &[
                "cut-header.safetensors",
                "cut short",
                "larger than the file",
            ],
            inspect_refuses: true,
        },
        Model {
            name: "offsets that overflow",
            build: |d| {
                let h = r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[18446744073709551600,18446744073709551615]}}"#;
                write(&d.join("offsets-overflow.safetensors"), raw(h, 16))
            },
            says: &[
                "offsets-overflow.safetensors",
                "out of range: beyond the end of the file",
            ],
            inspect_refuses: true,
        },
        Model {
            name: "offsets beyond u64",
            build: |d| {
                let h =
                    r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,184467440737095516150]}}"#;
                write(&d.join("offsets-beyond.safetensors"), raw(h, 16))
            },
            says: &["offsets-beyond.safetensors", "is not a valid byte offset"],
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
    ]
}
