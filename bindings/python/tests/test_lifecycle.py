"""The manager's lifecycle from Python: sources, events in order, progress,
unload, context managers, shutdown."""

from __future__ import annotations

import asyncio
import gc
import json
import os
from pathlib import Path

import numpy as np
import pytest

import model_manager as mm
from model_manager import State

from conftest import pipeline_folder, safetensors_bytes, slow_manager, small_tensors, write


def test_seed_names_and_a_blocking_load(manager: mm.ModelManager, model_file: Path) -> None:
    assert manager.current_state is State.IDLE
    assert manager.sample_size is None
    info = manager.load_model(model_file)
    assert manager.current_state is State.READY
    assert info.tensors == 2
    assert info.bytes == (8 * 4 + 8) * 4
    assert info.components["model"].tensors == 2
    assert info.snapshot.state is State.READY
    snap = manager.snapshot()
    assert snap.resident_bytes == info.bytes
    manager.unload_model()
    assert manager.current_state is State.IDLE
    assert manager.snapshot().resident_bytes == 0


async def test_a_pipeline_folder_with_configs(manager: mm.ModelManager, pipeline: Path) -> None:
    info = await manager.load_model_async(pipeline)
    assert set(info.components) == {"unet", "vae", "scheduler"}
    assert info.components["scheduler"].tensors == 0, "recorded, not loaded"
    assert info.components["unet"].config == {"sample_size": 32}
    assert info.sample_size == 32 == manager.sample_size
    assert info.config["_class_name"] == "StableDiffusionPipeline"
    with manager.acquire() as lease:
        assert set(lease.components()) == {"unet", "vae", "scheduler"}
        assert lease.keys("unet") == ["bias", "weight"]
        assert lease.config("vae") == {"latent_channels": 4}
        expected = small_tensors(1)["weight"]
        assert np.array_equal(np.from_dlpack(lease.tensor("unet", "weight")), expected)
    await manager.unload_model_async()


async def test_bytes_and_files_in_memory(manager: mm.ModelManager, tmp_path: Path) -> None:
    data = safetensors_bytes(small_tensors())
    info = await manager.load_model_async(data)
    assert info.tensors == 2
    await manager.unload_model_async()
    files = {
        "config.json": json.dumps({"sample_size": 7}).encode(),
        "model.safetensors": data,
    }
    info = await manager.load_model_async(files)
    assert info.sample_size == 7
    await manager.unload_model_async()


async def test_a_hub_cache_entry_offline(
    manager: mm.ModelManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = cache / "models--acme--tiny" / "snapshots" / commit
    pipeline_folder(snapshot)
    write(cache / "models--acme--tiny" / "refs" / "main", commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    info = await manager.load_model_async("acme/tiny")
    assert info.sample_size == 32
    assert manager.snapshot().model == "acme/tiny@main"
    await manager.unload_model_async()
    info = await manager.load_model_async(mm.Hub("acme/tiny", revision=commit))
    assert info.tensors == 4
    await manager.unload_model_async()
    with pytest.raises(mm.MissingFile):
        await manager.load_model_async(mm.Hub("acme/absent"))


async def test_events_yield_every_transition_in_order(
    manager: mm.ModelManager, model_file: Path
) -> None:
    events = manager.events()
    await manager.load_model_async(model_file)
    with pytest.raises(mm.InvalidModel):
        await manager.load_model_async(b"not a model")
    manager.reset()
    await manager.load_model_async(model_file)
    await manager.unload_model_async()
    manager.shutdown()
    seen = [(e.from_state.value, e.to_state.value, e.command) async for e in events]
    assert seen == [
        ("idle", "loading", "load"),
        ("loading", "ready", "finish loading"),
        ("ready", "unloading", "unload"),
        ("unloading", "idle", "drain"),
        ("idle", "loading", "load"),
        ("loading", "failed", "fail"),
        ("failed", "idle", "reset"),
        ("idle", "loading", "load"),
        ("loading", "ready", "finish loading"),
        ("ready", "unloading", "unload"),
        ("unloading", "idle", "drain"),
    ]


def test_events_from_a_thread(manager: mm.ModelManager, model_file: Path) -> None:
    events = manager.events()
    manager.load_model(model_file)
    first = events.next(timeout=5)
    second = events.next(timeout=5)
    assert (first.to_state, second.to_state) == (State.LOADING, State.READY)
    assert second.snapshot.resident_bytes > 0
    assert events.next(timeout=0.05) is None


async def test_progress_is_monotonic_and_ends_with_the_load(tmp_path: Path) -> None:
    path = write(
        tmp_path / "m.safetensors",
        safetensors_bytes({f"t{i}": np.full(64 << 10, i, np.float32) for i in range(16)}),
    )
    seen: list[mm.Progress] = []
    thread_ids: set[int] = set()
    import threading

    def on_progress(p: mm.Progress) -> None:
        seen.append(p)
        thread_ids.add(threading.get_ident())

    with mm.ModelManager(chunk_size=16 << 10, read_threads=1) as manager:
        info = await manager.load_model_async(path, progress=on_progress)
        count = len(seen)
        await asyncio.sleep(0.05)
        assert len(seen) == count, "no progress after the load returned"
    assert seen, "progress was reported"
    done = [p.bytes_done for p in seen]
    assert done == sorted(done)
    assert seen[-1].bytes_done == seen[-1].bytes_total == info.bytes
    assert seen[-1].fraction == 1.0
    assert thread_ids == {threading.get_ident()}, "delivered on the event loop's thread"


def test_blocking_progress(model_file: Path) -> None:
    seen: list[mm.Progress] = []
    with mm.ModelManager() as manager:
        manager.load_model(model_file, progress=seen.append)
    assert seen[-1].bytes_done == seen[-1].bytes_total > 0


def test_context_manager_shuts_down(model_file: Path) -> None:
    with mm.ModelManager() as manager:
        manager.load_model(model_file)
    with pytest.raises(mm.ShutDown) as err:
        manager.load_model(model_file)
    assert err.value.code == mm.ERROR_CODES["ShutDown"]
    assert manager.current_state is State.IDLE
    assert manager.snapshot().resident_bytes == 0
    assert manager.shutdown() is True, "idempotent"


async def test_async_context_manager(model_file: Path) -> None:
    async with mm.ModelManager() as manager:
        await manager.load_model_async(model_file)
        events = manager.events()
    assert [e async for e in events][-1].to_state is State.IDLE


async def test_latest_request_wins(tmp_path: Path, model_file: Path, slow_file: Path) -> None:
    manager = slow_manager()
    first = asyncio.ensure_future(manager.load_model_async(slow_file))
    while manager.snapshot().progress.bytes_done == 0:
        await asyncio.sleep(0.001)
    info = await manager.load_model_async(model_file)
    with pytest.raises(mm.Superseded):
        await first
    assert info.tensors == 2
    assert manager.snapshot().model == str(model_file)
    manager.shutdown()


async def test_unload_waits_for_leases_and_times_out_naming_them(
    manager: mm.ModelManager, model_file: Path
) -> None:
    await manager.load_model_async(model_file)
    lease = manager.acquire()
    with pytest.raises(mm.LeasesOutstanding) as err:
        await manager.unload_model_async(timeout=0.1)
    assert err.value.details["count"] == 1
    assert manager.current_state is State.UNLOADING
    events = manager.events()
    lease.release()
    # The unload went on: it ends once the lease is released.
    async for event in events:
        if event.to_state is State.IDLE:
            break
    assert manager.snapshot().resident_bytes == 0


async def test_dtype_conversion(model_file: Path) -> None:
    async with mm.ModelManager(dtype="float16") as manager:
        await manager.load_model_async(model_file)
        with manager.acquire() as lease:
            t = lease.tensor("model", "weight")
            assert t.dtype == "f16"
            a = np.from_dlpack(t)
            assert a.dtype == np.float16
            np.testing.assert_array_equal(a, small_tensors()["weight"].astype(np.float16))
            del a


def test_shutdown_releases_everything_even_with_a_leaked_array(model_file: Path) -> None:
    manager = mm.ModelManager(drain_timeout=0.2)
    manager.load_model(model_file)
    with manager.acquire() as lease:
        kept = np.from_dlpack(lease.tensor("model", "weight"))
    assert manager.shutdown(timeout=10) is True
    snap = manager.snapshot()
    assert snap.resident_bytes == 0
    assert snap.unreclaimed_bytes > 0, "the array's memory is reported, not hidden"
    del kept
    gc.collect()
    assert manager.snapshot().unreclaimed_bytes == 0


def test_source_kinds_are_checked(manager: mm.ModelManager) -> None:
    with pytest.raises(TypeError):
        manager.load_model(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        manager.load_model({"model.safetensors": "text"})  # type: ignore[dict-item]
    assert os.path.exists("/") and manager.current_state is State.IDLE
