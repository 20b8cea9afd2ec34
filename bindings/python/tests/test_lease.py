"""Leases and zero-copy tensors (DLPack)."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import numpy as np
import pytest

import model_manager as mm
from model_manager import State

from conftest import safetensors_bytes, small_tensors, write


async def test_numpy_shares_the_lease_memory_read_only(manager: mm.ModelManager, model_file: Path) -> None:
    await manager.load_model_async(model_file)
    with manager.acquire() as lease:
        t = lease.tensor("model", "weight")
        assert (t.dtype, t.shape, t.nbytes) == ("f32", (8, 4), 128)
        assert t.__dlpack_device__() == (1, 0)
        a = np.from_dlpack(t)
        b = np.from_dlpack(lease.tensor("model", "weight"))
        assert a.ctypes.data == t.data_ptr == b.ctypes.data, "no copy"
        np.testing.assert_array_equal(a, small_tensors()["weight"])
        assert not a.flags.writeable
        with pytest.raises(ValueError):
            a[0, 0] = 1.0
        copied = np.from_dlpack(t, copy=True)
        assert copied.ctypes.data != t.data_ptr and copied.flags.writeable
        np.testing.assert_array_equal(copied, a)
        del a, b
    await manager.unload_model_async()


async def test_unload_waits_for_a_live_array(manager: mm.ModelManager, model_file: Path) -> None:
    await manager.load_model_async(model_file)
    with manager.acquire() as lease:
        array = np.from_dlpack(lease.tensor("model", "bias"))
    assert lease.released
    assert manager.outstanding_leases == 1, "the array holds the lease"
    unload = asyncio.ensure_future(manager.unload_model_async())
    await asyncio.sleep(0.2)
    assert not unload.done()
    assert manager.current_state is State.UNLOADING
    np.testing.assert_array_equal(array, small_tensors()["bias"]), "still readable"
    del array
    gc.collect()
    await asyncio.wait_for(unload, 5)
    assert manager.current_state is State.IDLE
    assert manager.snapshot().resident_bytes == 0


async def test_a_lease_used_after_release_raises(manager: mm.ModelManager, model_file: Path) -> None:
    await manager.load_model_async(model_file)
    lease = manager.acquire()
    tensor = lease.tensor("model", "weight")
    lease.release()
    lease.release()
    for call in (
        lease.components,
        lambda: lease.keys("model"),
        lambda: lease.tensor("model", "weight"),
        lambda: np.from_dlpack(tensor),
        lambda: tensor.data_ptr,
    ):
        with pytest.raises(ValueError, match="released"):
            call()
    await manager.unload_model_async(timeout=5)


async def test_unknown_names_raise_key_error(manager: mm.ModelManager, model_file: Path) -> None:
    await manager.load_model_async(model_file)
    with manager.acquire() as lease:
        with pytest.raises(KeyError):
            lease.tensor("model", "nope")
        with pytest.raises(KeyError):
            lease.keys("unet")
        with pytest.raises(BufferError):
            lease.tensor("model", "weight").__dlpack__(dl_device=(2, 0))


async def test_dlpack_device_and_copy_rules(manager: mm.ModelManager, model_file: Path) -> None:
    await manager.load_model_async(model_file)
    with manager.acquire() as lease:
        t = lease.tensor("model", "weight")
        assert t.device == "cpu"
        # Its own device: the manager's memory, copy=False allowed.
        same = np.from_dlpack(t, device="cpu", copy=False)
        assert same.ctypes.data == t.data_ptr
        # Another device: no copy there (a copy goes to the host only).
        for copy in (None, True, False):
            with pytest.raises(BufferError):
                t.__dlpack__(dl_device=(2, 0), copy=copy)
        del same
    # A copy holds no lease: the unload does not wait for it.
    with manager.acquire() as lease:
        copied = np.from_dlpack(lease.tensor("model", "weight"), copy=True)
    assert manager.outstanding_leases == 0
    await asyncio.wait_for(manager.unload_model_async(), 5)
    np.testing.assert_array_equal(copied, small_tensors()["weight"])


async def test_acquire_when_not_ready(manager: mm.ModelManager) -> None:
    with pytest.raises(mm.NotReady) as err:
        manager.acquire()
    assert err.value.details == {"state": "idle"}


async def test_f16_and_bf16(manager: mm.ModelManager, tmp_path: Path) -> None:
    half = np.arange(6, dtype=np.float16).reshape(2, 3)
    bf16_bits = np.array([0x3F80, 0x4000, 0xC040], dtype=np.uint16)  # 1.0, 2.0, -3.0
    path = write(
        tmp_path / "m.safetensors",
        safetensors_bytes({"half": half, "bf": ("BF16", [3], bf16_bits.tobytes())}),
    )
    await manager.load_model_async(path)
    with manager.acquire() as lease:
        h = np.from_dlpack(lease.tensor("model", "half"))
        assert h.dtype == np.float16
        np.testing.assert_array_equal(h, half)
        bf = lease.tensor("model", "bf")
        assert bf.dtype == "bf16"
        with pytest.raises((BufferError, TypeError, RuntimeError, ValueError)):
            np.from_dlpack(bf)  # numpy has no bfloat16
        bits = np.from_dlpack(bf.bits())
        assert bits.dtype == np.uint16 and bits.ctypes.data == bf.data_ptr
        np.testing.assert_array_equal(bits, bf16_bits)
        as_f32 = (bits.astype(np.uint32) << 16).view(np.float32)
        np.testing.assert_array_equal(as_f32, [1.0, 2.0, -3.0])
        assert bf.tolist() == [1.0, 2.0, -3.0]
        del h, bits


async def test_legacy_capsule_for_older_consumers(manager: mm.ModelManager, model_file: Path) -> None:
    await manager.load_model_async(model_file)
    with manager.acquire() as lease:
        t = lease.tensor("model", "weight")
        legacy = t.__dlpack__()
        versioned = t.__dlpack__(max_version=(1, 0))
        assert "dltensor" in repr(legacy) and "dltensor_versioned" not in repr(legacy)
        assert "dltensor_versioned" in repr(versioned)
        del legacy, versioned
    gc.collect()
    await manager.unload_model_async(timeout=5)
