//! Single weights files whose bytes are wrong: headers, offsets, dtypes,
//! and files that are not safetensors at all.

use model_manager::ErrorCode;

use super::{file, good_tensor_header, raw, Case};

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "header length larger than the file",
            build: |d| {
                let mut b = raw(good_tensor_header(), 16);
                b[..8].copy_from_slice(&10_000u64.to_le_bytes());
                file(d, "long-header.safetensors", &b)
            },
            code: ErrorCode::InvalidModel,
            says: &["the file is cut short", "header length 10000 is larger than the file"],
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
            says: &["not a safetensors file", "100000000-byte limit"],
            names: "huge-header.safetensors",
        },
        Case {
            name: "header JSON invalid",
            build: |d| file(d, "bad-json.safetensors", &raw("{\"w\": [1, 2", 16)),
            code: ErrorCode::InvalidModel,
            says: &["JSON"],
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
            says: &["UTF-8"],
            names: "latin1.safetensors",
        },
        Case {
            name: "offsets out of range",
            build: |d| {
                let h = r#"{"w":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}"#;
                file(d, "out-of-range.safetensors", &raw(h, 16))
            },
            code: ErrorCode::InvalidModel,
            says: &["truncated"],
            names: "out-of-range.safetensors",
        },
        Case {
            name: "offsets overlapping",
            build: |d| {
                let h = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#;
                file(d, "overlap.safetensors", &raw(h, 24))
            },
            code: ErrorCode::InvalidModel,
            says: &["tensor \"b\": data offsets overlap"],
            names: "overlap.safetensors",
        },
        Case {
            name: "offsets not matching shape x dtype",
            build: |d| {
                let h = r#"{"w":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}}"#;
                file(d, "mismatch.safetensors", &raw(h, 16))
            },
            code: ErrorCode::InvalidModel,
            says: &["do not match"],
            names: "mismatch.safetensors",
        },
        Case {
            name: "shape overflows",
            build: |d| {
                let h = r#"{"w":{"dtype":"F32","shape":[18446744073709551615,4],"data_offsets":[0,16]}}"#;
                file(d, "overflow.safetensors", &raw(h, 16))
            },
            code: ErrorCode::InvalidModel,
            says: &["overflow"],
            names: "overflow.safetensors",
        },
        Case {
            name: "unknown dtype",
            build: |d| {
                let h = r#"{"w":{"dtype":"Q4","shape":[4],"data_offsets":[0,16]}}"#;
                file(d, "q4.safetensors", &raw(h, 16))
            },
            code: ErrorCode::UnsupportedDtype,
            says: &["Q4"],
            names: "q4.safetensors",
        },
        Case {
            name: "dtype the device cannot hold",
            build: |d| {
                let h = r#"{"w":{"dtype":"BOOL","shape":[4],"data_offsets":[0,4]}}"#;
                file(d, "bool.safetensors", &raw(h, 4))
            },
            code: ErrorCode::UnsupportedDtype,
            says: &["BOOL"],
            names: "bool.safetensors",
        },
        Case {
            name: "file truncated after the header",
            build: |d| file(d, "no-data.safetensors", &raw(good_tensor_header(), 0)),
            code: ErrorCode::InvalidModel,
            says: &["truncated"],
            names: "no-data.safetensors",
        },
        Case {
            name: "empty file",
            build: |d| file(d, "empty.safetensors", b""),
            code: ErrorCode::InvalidModel,
            says: &["not a safetensors file: 0 bytes, too short for a header"],
            names: "empty.safetensors",
        },
        Case {
            name: "offsets that overflow",
            build: |d| {
                let h = r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[18446744073709551600,18446744073709551615]}}"#;
                file(d, "offsets-overflow.safetensors", &raw(h, 16))
            },
            code: ErrorCode::InvalidModel,
            says: &[
                "tensor \"w\": data offsets [18446744073709551600, 18446744073709551615] are out of range",
                "beyond the end of the file, which holds 16 bytes of data",
            ],
            names: "offsets-overflow.safetensors",
        },
        Case {
            name: "offsets beyond u64",
            build: |d| {
                let h =
                    r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,184467440737095516150]}}"#;
                file(d, "offsets-beyond.safetensors", &raw(h, 16))
            },
            code: ErrorCode::InvalidModel,
            says: &["tensor \"w\"", "is not a valid byte offset (a whole number from 0 to"],
            names: "offsets-beyond.safetensors",
        },
        Case {
            name: "a negative offset",
            build: |d| {
                let h = r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[-16,0]}}"#;
                file(d, "negative.safetensors", &raw(h, 16))
            },
            code: ErrorCode::InvalidModel,
            says: &["data offset -16 is not a valid byte offset"],
            names: "negative.safetensors",
        },
        Case {
            name: "a text file",
            build: |d| file(d, "notes.txt", b"These are not the weights you are looking for.\n"),
            code: ErrorCode::InvalidModel,
            says: &[
                "not a safetensors file",
                "an 8-byte header length and a JSON header",
                "it begins with text: \"These are not the weight\u{2026}\"",
            ],
            names: "notes.txt",
        },
        Case {
            name: "a text file too short for a header",
            build: |d| file(d, "hello.safetensors", b"hello\n"),
            code: ErrorCode::InvalidModel,
            says: &["too short for a header", "it begins with text: \"hello\\n\""],
            names: "hello.safetensors",
        },
        Case {
            name: "PyTorch weights: a zip archive",
            build: |d| file(d, "pytorch_model.bin", b"PK\x03\x04\x14\x00\x00\x00archive/data.pkl"),
            code: ErrorCode::InvalidModel,
            says: &["not a readable PyTorch archive (a zip)"],
            names: "pytorch_model.bin",
        },
        Case {
            name: "PyTorch weights: a pickle",
            build: |d| file(d, "weights.pt", b"\x80\x02\x8a\x0alz\xfc\x9cF\xf9 j\xa8P\x19."),
            code: ErrorCode::InvalidModel,
            says: &[
                "it is a bare Python pickle, as PyTorch before 1.6 saves weights",
                "torch.save(torch.load(\"weights.pt\"), \"weights.pt\")",
            ],
            names: "weights.pt",
        },
        Case {
            name: "binary that is nothing known",
            build: |d| file(d, "noise.safetensors", &[1, 0, 0, 0, 0, 0, 0, 0, 0xfe, 0xff]),
            code: ErrorCode::InvalidModel,
            says: &["not a safetensors file", "its first bytes are 01 00 00 00 00 00 00 00"],
            names: "noise.safetensors",
        },
    ]
}
