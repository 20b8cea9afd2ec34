#!/usr/bin/env python3
"""Write the seed corpus of the fuzz targets under fuzz/corpus/<target>/.

header:        single safetensors files, valid and damaged.
folder,
inspect_path,
stream:        model folders in the archive format of fuzz/src/lib.rs
               (b"MMF1", then per file: u8 name length, name, u32 LE length,
               contents): a single model, sharded checkpoints (with "./"
               names), diffusers pipelines, and a few broken ones.
c_api:         a few byte strings (decoded with `arbitrary`).

Deterministic: running it again rewrites the same files.
"""

import json
import os
import struct
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

SIZES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I16": 2,
         "U8": 1, "U32": 4, "BOOL": 1, "F8_E4M3": 1}


def safetensors(tensors, metadata=None, pad=0):
    """tensors: list of (name, dtype, shape)."""
    header, offset = {}, 0
    for name, dtype, shape in tensors:
        n = SIZES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode() + b" " * pad
    return struct.pack("<Q", len(text)) + text + bytes(i % 251 for i in range(offset))


def raw(header_text, data_len):
    text = header_text.encode()
    return struct.pack("<Q", len(text)) + text + b"\x07" * data_len


def archive(files):
    out = b"MMF1"
    for name, contents in files.items():
        if isinstance(contents, str):
            contents = contents.encode()
        elif not isinstance(contents, bytes):
            contents = json.dumps(contents).encode()
        out += bytes([len(name)]) + name.encode() + struct.pack("<I", len(contents)) + contents
    return out


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


TWO = safetensors([("w", "F32", [2, 2]), ("b", "F32", [2])])

HEADERS = {
    "two-tensors": TWO,
    "metadata": safetensors([("w", "F16", [4])], {"format": "pt"}),
    "dtypes": safetensors([(f"t{i}", d, [2]) for i, d in enumerate(SIZES)]),
    "padded": safetensors([("w", "BF16", [3, 1])], pad=7),
    "scalar-and-empty": safetensors([("s", "F32", []), ("e", "F32", [0, 3])]),
    "empty-header": raw("{}", 0),
    "truncated": TWO[:-3],
    "overlap": raw('{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},'
                   '"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}', 24),
    "mismatch": raw('{"w":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}}', 16),
    "overflow": raw('{"w":{"dtype":"F32","shape":[18446744073709551615,4],'
                    '"data_offsets":[0,16]}}', 16),
    "unknown-dtype": raw('{"w":{"dtype":"Q4","shape":[4],"data_offsets":[0,16]}}', 16),
    "bad-json": raw('{"w": [1, 2', 16),
    "long-length": struct.pack("<Q", 10_000) + TWO[8:],
    "huge-length": struct.pack("<Q", 2**64 - 1) + TWO[8:],
    "short": b"\x01\x00\x00",
}

SHARD1 = safetensors([("w0", "F32", [4]), ("w1", "F32", [4])])
SHARD2 = safetensors([("w2", "F32", [4]), ("w3", "F16", [2, 2])])
INDEX = {"metadata": {"total_size": 56}, "weight_map": {
    "w0": "model-00001-of-00002.safetensors", "w1": "./model-00001-of-00002.safetensors",
    "w2": "model-00002-of-00002.safetensors", "w3": "./model-00002-of-00002.safetensors"}}
UNET = safetensors([("conv.weight", "F16", [2, 2]), ("conv.bias", "F16", [2])])
VAE = safetensors([("decoder.w", "F32", [3])])

FOLDERS = {
    "single": {"config.json": {"sample_size": 32, "hidden": [1, 2]}, "model.safetensors": TWO},
    "only-weights": {"weights.safetensors": TWO},
    "sharded": {"model.safetensors.index.json": INDEX,
                "model-00001-of-00002.safetensors": SHARD1,
                "model-00002-of-00002.safetensors": SHARD2,
                "config.json": {"sample_size": [64, 64]}},
    "diffusers": {
        "model_index.json": {"_class_name": "StableDiffusionPipeline",
                             "_diffusers_version": "0.30.0",
                             "unet": ["diffusers", "UNet2DConditionModel"],
                             "vae": ["diffusers", "AutoencoderKL"],
                             "scheduler": ["diffusers", "DDIMScheduler"],
                             "safety_checker": [None, None], "feature_extractor": None},
        "unet/config.json": {"sample_size": 96},
        "unet/diffusion_pytorch_model.safetensors": UNET,
        "vae/config.json": {"latent_channels": 4},
        "vae/diffusion_pytorch_model.safetensors": VAE,
        "scheduler/scheduler_config.json": {"num_train_timesteps": 1000},
    },
    "diffusers-sharded-transformer": {
        "model_index.json": {"transformer": ["diffusers", "Transformer"],
                             "text_encoder": ["transformers", "T5"]},
        "transformer/config.json": {"sample_size": 128},
        "transformer/diffusion_pytorch_model.safetensors.index.json": {"weight_map": {
            "w0": "diffusion_pytorch_model-00001-of-00002.safetensors",
            "w2": "diffusion_pytorch_model-00002-of-00002.safetensors"}},
        "transformer/diffusion_pytorch_model-00001-of-00002.safetensors": SHARD1,
        "transformer/diffusion_pytorch_model-00002-of-00002.safetensors": SHARD2,
        "text_encoder/config.json": {},
        "text_encoder/model.safetensors": VAE,
    },
    "missing-shard": {"model.safetensors.index.json": {"weight_map": {
        "w0": "model-00001-of-00002.safetensors", "w2": "model-00002-of-00002.safetensors"}},
        "model-00001-of-00002.safetensors": SHARD1},
    "escaping-names": {"model.safetensors.index.json": {"weight_map": {
        "w0": "../outside.safetensors", "w1": "/etc/passwd", "w2": "a/../b", "w3": "."}},
        "model_index.json": {"../unet": ["diffusers", "X"], ".": ["d", "x"]}},
    "bad-configs": {"config.json": "{\"sample_size\": ", "model.safetensors": TWO,
                    "model.safetensors.index.json": [1, 2, 3]},
    "index-lacks-tensor": {"model.safetensors.index.json": {"weight_map": {
        "w0": "a.safetensors", "ghost": "a.safetensors"}}, "a.safetensors": SHARD1},
}

C_API = {
    "zeros-64": bytes(64),
    "ones-64": b"\xff" * 64,
    "counting": bytes(range(256)),
    "words": b"cpu\x00cuda:1\x00metal\x00tiny\x00pipe\x00sample_size\x00unet/w\x00w\x00" * 2,
    "short": b"\x01\x02\x03",
}


def main():
    for name, data in HEADERS.items():
        write("header", name, data)
    for name, files in FOLDERS.items():
        data = archive(files)
        write("folder", name, data)
        write("inspect_path", name, data)
        write("stream", name, data)
    for name, data in C_API.items():
        write("c_api", name, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
