//! The library's own table of bad inputs (`tests/bad_input/` in the
//! repository root): single files.

use super::common::{raw, write};
use super::{good_tensor_header, Model};

pub(super) fn models() -> Vec<Model> {
    vec![
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
            says: &["huge-header.safetensors", "not a safetensors file", "limit"],
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
    ]
}
