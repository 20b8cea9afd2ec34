"""Errors: classes from the core's table, and every bad input of the core's
bad-input table (tests/bad_input.rs) raising the right subclass, naming the
file and the problem, with the manager usable afterwards."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

import model_manager as mm
from model_manager import _model_manager as core

from conftest import write

GOOD = '{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'
MAX_JSON = 64 << 20


def raw(header: str | bytes, data: int) -> bytes:
    h = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(h)) + h + b"\x07" * data


def test_one_class_per_core_code() -> None:
    assert [(n, c) for n, c in core.ERROR_CODES] == list(mm.ERROR_CODES.items())
    for name, code in mm.ERROR_CODES.items():
        cls = getattr(mm, name)
        assert cls.__name__ == name and cls.code == code
        assert issubclass(cls, mm.ModelManagerError)
        assert mm.error_class(code) is cls
        assert name in mm.__all__
    assert [s.value for s in mm.State] == list(core.STATES)
    assert mm.POOL_EVENT_KINDS == tuple(core.POOL_EVENT_KINDS)


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def folder(d: Path, files: dict[str, bytes]) -> Path:
    root = d / "model"
    for name, data in files.items():
        write(root / name, data)
    root.mkdir(exist_ok=True)
    return root


def sparse(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)


def long_header(d: Path) -> Path:
    b = bytearray(raw(GOOD, 16))
    b[:8] = struct.pack("<Q", 10_000)
    return write(d / "long-header.safetensors", bytes(b))


def huge_header(d: Path) -> Path:
    b = bytearray(raw(GOOD, 16))
    b[:8] = struct.pack("<Q", 2**64 - 1)
    return write(d / "huge-header.safetensors", bytes(b))


def latin1(d: Path) -> Path:
    b = bytearray(raw('{"w":"\u00e9"}', 0))
    b[10] = 0xFF
    return write(d / "latin1.safetensors", bytes(b))


def symlinked_shard(d: Path) -> Path:
    outside = write(d / "secret.safetensors", raw(GOOD, 16))
    root = folder(d, {"model.safetensors.index.json": b'{"weight_map":{"w":"shard.safetensors"}}'})
    os.symlink(outside, root / "shard.safetensors")
    return root


def config_to_dev_zero(d: Path) -> Path:
    root = folder(d, {"model.safetensors": raw(GOOD, 16)})
    os.symlink("/dev/zero", root / "config.json")
    return root


def config_fifo(d: Path) -> Path:
    root = folder(d, {"model.safetensors": raw(GOOD, 16)})
    fifo(root / "config.json")
    return root


def config_to_outside_fifo(d: Path) -> Path:
    root = folder(d, {"model.safetensors": raw(GOOD, 16)})
    fifo(d / "outside.fifo")
    os.symlink(d / "outside.fifo", root / "config.json")
    return root


def model_index_fifo(d: Path) -> Path:
    root = folder(d, {"model.safetensors": raw(GOOD, 16)})
    fifo(root / "model_index.json")
    return root


def big_config(d: Path) -> Path:
    root = folder(d, {"model.safetensors": raw(GOOD, 16)})
    sparse(root / "config.json", MAX_JSON + 1)
    return root


def big_index(d: Path) -> Path:
    root = folder(d, {"model-1.safetensors": raw(GOOD, 16)})
    sparse(root / "model.safetensors.index.json", 1 << 40)
    return root


def weights_fifo(d: Path) -> Path:
    root = folder(d, {"config.json": b"{}"})
    fifo(root / "model.safetensors")
    return root


def shard_fifo(d: Path) -> Path:
    root = folder(d, {"model.safetensors.index.json": b'{"weight_map":{"w":"shard.safetensors"}}'})
    fifo(root / "shard.safetensors")
    return root


def weights_folder(d: Path) -> Path:
    root = folder(d, {"config.json": b"{}"})
    (root / "model.safetensors").mkdir()
    return root


Case = tuple[str, Callable[[Path], Path], type[mm.ModelManagerError], str, str]

CASES: list[Case] = [
    ("header length larger than the file", long_header, mm.InvalidModel, "larger than the file", "long-header.safetensors"),
    ("header length beyond any limit", huge_header, mm.InvalidModel, "limit", "huge-header.safetensors"),
    ("header JSON invalid", lambda d: write(d / "bad-json.safetensors", raw('{"w": [1, 2', 16)), mm.InvalidModel, "JSON", "bad-json.safetensors"),
    ("header not UTF-8", latin1, mm.InvalidModel, "UTF-8", "latin1.safetensors"),
    ("offsets out of range", lambda d: write(d / "out-of-range.safetensors", raw('{"w":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}', 16)), mm.InvalidModel, "truncated", "out-of-range.safetensors"),
    ("offsets overlapping", lambda d: write(d / "overlap.safetensors", raw('{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}', 24)), mm.InvalidModel, "overlap", "overlap.safetensors"),
    ("offsets not matching shape x dtype", lambda d: write(d / "mismatch.safetensors", raw('{"w":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}}', 16)), mm.InvalidModel, "do not match", "mismatch.safetensors"),
    ("shape overflows", lambda d: write(d / "overflow.safetensors", raw('{"w":{"dtype":"F32","shape":[18446744073709551615,4],"data_offsets":[0,16]}}', 16)), mm.InvalidModel, "overflow", "overflow.safetensors"),
    ("unknown dtype", lambda d: write(d / "q4.safetensors", raw('{"w":{"dtype":"Q4","shape":[4],"data_offsets":[0,16]}}', 16)), mm.UnsupportedDtype, "Q4", "q4.safetensors"),
    ("dtype the device cannot hold", lambda d: write(d / "bool.safetensors", raw('{"w":{"dtype":"BOOL","shape":[4],"data_offsets":[0,4]}}', 4)), mm.UnsupportedDtype, "BOOL", "bool.safetensors"),
    ("file truncated after the header", lambda d: write(d / "no-data.safetensors", raw(GOOD, 0)), mm.InvalidModel, "truncated", "no-data.safetensors"),
    ("empty file", lambda d: write(d / "empty.safetensors", b""), mm.InvalidModel, "too short", "empty.safetensors"),
    ("index naming a missing shard", lambda d: folder(d, {"model-1.safetensors": raw(GOOD, 16), "model.safetensors.index.json": b'{"weight_map":{"w":"model-1.safetensors","v":"model-2.safetensors"}}'}), mm.MissingFile, "no such file", "model-2.safetensors"),
    ("shard name with ..", lambda d: (write(d / "outside.safetensors", raw(GOOD, 16)), folder(d, {"model.safetensors.index.json": b'{"weight_map":{"w":"../outside.safetensors"}}'}))[1], mm.PathEscape, "outside the model folder", "outside.safetensors"),
    ("absolute shard path", lambda d: folder(d, {"model.safetensors.index.json": b'{"weight_map":{"w":"/etc/passwd"}}'}), mm.PathEscape, "outside the model folder", "/etc/passwd"),
    ("symlinked shard pointing outside", symlinked_shard, mm.PathEscape, "outside the model folder", "shard.safetensors"),
    ("index whose shard lacks a tensor it names", lambda d: folder(d, {"a.safetensors": raw(GOOD, 16), "model.safetensors.index.json": b'{"weight_map":{"w":"a.safetensors","ghost":"a.safetensors"}}'}), mm.InvalidModel, "ghost", "a.safetensors"),
    ("a tensor in two shards", lambda d: folder(d, {"a.safetensors": raw(GOOD, 16), "b.safetensors": raw('{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"x":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}}', 32), "model.safetensors.index.json": b'{"weight_map":{"w":"a.safetensors","x":"b.safetensors"}}'}), mm.InvalidModel, "also in another file", "b.safetensors"),
    ("config.json invalid", lambda d: folder(d, {"model.safetensors": raw(GOOD, 16), "config.json": b'{"sample_size": 64,'}), mm.InvalidConfig, "invalid config", "config.json"),
    ("index.json invalid", lambda d: folder(d, {"model.safetensors.index.json": b"[1,2,3]"}), mm.InvalidConfig, "weight_map", "model.safetensors.index.json"),
    ("a folder with no weights", lambda d: folder(d, {"config.json": b"{}"}), mm.MissingFile, "no weights found", "config.json"),
    ("a pipeline component that leaves the folder", lambda d: folder(d, {"model_index.json": b'{"_class_name":"X","../unet":["diffusers","UNet"]}'}), mm.PathEscape, "outside the model folder", "../unet"),
    ("a pipeline with no weights", lambda d: folder(d, {"model_index.json": b'{"scheduler":["diffusers","DDIM"]}', "scheduler/scheduler_config.json": b"{}"}), mm.InvalidModel, "no component with weights", "model_index.json"),
    ("model_index.json invalid", lambda d: folder(d, {"model_index.json": b'{"unet": '}), mm.InvalidConfig, "invalid config", "model_index.json"),
    ("config.json symlinked to /dev/zero", config_to_dev_zero, mm.PathEscape, "outside the model folder", "config.json"),
    ("config.json a FIFO", config_fifo, mm.InvalidConfig, "not a regular file", "config.json"),
    ("config.json symlinked to a FIFO outside the folder", config_to_outside_fifo, mm.PathEscape, "outside the model folder", "config.json"),
    ("model_index.json a FIFO", model_index_fifo, mm.InvalidConfig, "not a regular file", "model_index.json"),
    ("config.json larger than the JSON cap", big_config, mm.InvalidConfig, "67108864 bytes (64 MiB)", "config.json"),
    ("shard index larger than the JSON cap", big_index, mm.InvalidConfig, "67108864 bytes (64 MiB)", "model.safetensors.index.json"),
    ("model.safetensors a FIFO", weights_fifo, mm.InvalidModel, "not a regular file", "model.safetensors"),
    ("a FIFO as the model file", lambda d: fifo(d / "pipe.safetensors"), mm.InvalidModel, "not a regular file", "pipe.safetensors"),
    ("/dev/zero as the model file", lambda d: Path("/dev/zero"), mm.InvalidModel, "not a regular file", "/dev/zero"),
    ("a shard that is a FIFO", shard_fifo, mm.InvalidModel, "not a regular file", "shard.safetensors"),
    ("model.safetensors a folder", weights_folder, mm.InvalidModel, "not a regular file", "model.safetensors"),
    ("a missing file", lambda d: d / "absent.safetensors", mm.MissingFile, "no such file", "absent.safetensors"),
]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, model_file: Path) -> None:
    name, build, cls, problem, names = case
    source = build(tmp_path)
    with mm.ModelManager() as manager:
        with pytest.raises(cls) as err:
            manager.load_model(source)
        message = str(err.value)
        assert problem in message, message
        assert names in message, message
        assert err.value.code == cls.code
        snap = manager.snapshot()
        assert snap.state is mm.State.FAILED
        assert isinstance(snap.error, cls)
        assert snap.resident_bytes == 0
        assert manager.load_model(model_file).tensors == 2, "usable afterwards"


def test_bad_bytes_in_memory(manager: mm.ModelManager) -> None:
    with pytest.raises(mm.InvalidModel):
        manager.load_model(raw('{"w": [1, 2', 16))
    with pytest.raises(mm.InvalidConfig):
        manager.load_model({"model.safetensors": raw(GOOD, 16), "config.json": b"{"})


def test_bad_arguments() -> None:
    with pytest.raises(mm.InvalidArgument, match="unknown device"):
        mm.ModelManager(device="tpu")
    with pytest.raises(mm.InvalidArgument):
        mm.ModelManager(dtype="int8")
    with pytest.raises(mm.InvalidArgument):
        mm.ModelManager(dtype="nonsense")
    with pytest.raises(ValueError):
        mm.ModelManager(drain_timeout=-1)
    with pytest.raises(OverflowError):
        mm.ModelManager(memory_budget=-5)


def test_insufficient_memory(model_file: Path) -> None:
    with mm.ModelManager(memory_budget=16) as manager:
        with pytest.raises(mm.InsufficientMemory) as err:
            manager.load_model(model_file)
        assert err.value.details["needed"] > err.value.details["available"]


def test_errors_carry_plain_details(manager: mm.ModelManager, tmp_path: Path) -> None:
    with pytest.raises(mm.MissingFile) as err:
        manager.load_model(tmp_path / "nothing.safetensors")
    assert err.value.details["path"].endswith("nothing.safetensors")
    assert "MissingFile" in repr(err.value)
    assert json.dumps(err.value.details)
    # A folder with nothing to load names the folder too.
    with pytest.raises(mm.MissingFile) as err:
        manager.load_model(tmp_path)
    assert err.value.details["path"] == str(tmp_path)
