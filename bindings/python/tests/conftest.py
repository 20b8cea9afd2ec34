"""Helpers: safetensors files, model folders and diffusers-like pipelines
written by hand (no dependency beyond numpy), and a load slow enough to be
caught in flight."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import model_manager as mm

DTYPES = {
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.float64): "F64",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.uint8): "U8",
}


def safetensors_bytes(tensors: dict[str, Any]) -> bytes:
    """A safetensors file: values are numpy arrays, or `(dtype, shape, raw)`."""
    header: dict[str, Any] = {}
    data = b""
    for name, value in tensors.items():
        if isinstance(value, np.ndarray):
            dtype, shape, raw = DTYPES[value.dtype], list(value.shape), value.tobytes()
        else:
            dtype, shape, raw = value
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def small_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "weight": rng.standard_normal((8, 4)).astype(np.float32),
        "bias": rng.standard_normal(8).astype(np.float32),
    }


def pipeline_folder(root: Path, sample_size: int = 32) -> Path:
    """A diffusers-like pipeline: model_index.json, unet/ and vae/ with
    weights, a scheduler with a config only."""
    write(
        root / "model_index.json",
        json.dumps(
            {
                "_class_name": "StableDiffusionPipeline",
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
                "scheduler": ["diffusers", "DDIMScheduler"],
            }
        ),
    )
    write(root / "unet" / "config.json", json.dumps({"sample_size": sample_size}))
    write(root / "unet" / "diffusion_pytorch_model.safetensors", safetensors_bytes(small_tensors(1)))
    write(root / "vae" / "config.json", json.dumps({"latent_channels": 4}))
    write(root / "vae" / "diffusion_pytorch_model.safetensors", safetensors_bytes(small_tensors(2)))
    write(root / "scheduler" / "scheduler_config.json", json.dumps({"_class_name": "DDIMScheduler"}))
    return root


def big_file(path: Path, mib: int) -> Path:
    """One F32 tensor of `mib` MiB, its data a hole (sparse, no disk)."""
    n = mib << 18
    header = json.dumps({"big": {"dtype": "F32", "shape": [n], "data_offsets": [0, n * 4]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + n * 4)
    return path


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    return write(tmp_path / "model.safetensors", safetensors_bytes(small_tensors()))


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    return pipeline_folder(tmp_path / "pipeline")


@pytest.fixture
def slow_file(tmp_path: Path) -> Path:
    """A file whose load, with `slow_manager`, takes long enough to be
    cancelled in flight (hundreds of milliseconds at least)."""
    return big_file(tmp_path / "big.safetensors", 512)


def slow_manager(**kwargs: Any) -> mm.ModelManager:
    """Reads in 4 KiB chunks on one thread: progress and cancellation at
    every chunk, and a load of `slow_file` that takes a while."""
    return mm.ModelManager(chunk_size=4096, read_threads=1, **kwargs)


@pytest.fixture
def manager() -> Any:
    m = mm.ModelManager()
    yield m
    m.shutdown()


def python_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    return env
