"""The pool from Python: the same semantics as Rust, C and JS."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

import model_manager as mm
from model_manager import State

from conftest import safetensors_bytes, write

MIB = 1 << 20


def model(tmp_path: Path, name: str, value: float = 0.0) -> Path:
    """A model of 1 MiB of tensor data."""
    return write(tmp_path / f"{name}.safetensors", safetensors_bytes({"w": np.full(MIB // 4, value, np.float32)}))


@pytest.fixture
def two(tmp_path: Path) -> tuple[Path, Path]:
    return model(tmp_path, "a", 1.0), model(tmp_path, "b", 2.0)


async def test_eviction_of_the_least_recently_used(two: tuple[Path, Path]) -> None:
    async with mm.ModelPool(budget=MIB + MIB // 2) as pool:
        events = pool.events()
        pool.add("a", two[0])
        pool.add("b", two[1])
        with await pool.acquire_async("a") as lease:
            assert lease.id == "a" and lease.version == 1
            assert np.from_dlpack(lease.tensor("model", "w"))[0] == 1.0
        with await pool.acquire_async("b") as lease:
            assert np.from_dlpack(lease.tensor("model", "w"))[0] == 2.0
        a = pool.status("a")
        assert a is not None and a.state is State.IDLE
        snap = pool.snapshot()
        assert snap.counters.evictions == 1
        assert snap.charged <= snap.budget
        assert "evictions" in pool.metrics_text()
    seen = [(e.id, e.kind, e.reason, e.for_id) async for e in events]
    assert ("a", "unloading", "evicted", "b") in seen
    assert seen.index(("a", "unloading", "evicted", "b")) < seen.index(("b", "ready", None, None))
    assert {kind for _, kind, _, _ in seen} <= set(mm.POOL_EVENT_KINDS)


def test_a_wait_that_times_out_names_what_blocked_it(two: tuple[Path, Path]) -> None:
    with mm.ModelPool(budget=MIB + MIB // 2, admission_timeout=0.3) as pool:
        pool.add("a", two[0])
        pool.add("b", two[1])
        held = pool.acquire("a")
        started = time.monotonic()
        with pytest.raises(mm.MemoryBusy) as err:
            pool.acquire("b")
        assert 0.2 < time.monotonic() - started < 5
        blocked = err.value.details["blocked_by"]
        assert [(b["id"], b["leases"], b["state"]) for b in blocked] == [("a", 1, "ready")]
        assert '"a"' in str(err.value)
        held.release()
        assert pool.acquire("b", timeout=10).id == "b"


def test_a_pinned_model_is_never_evicted(two: tuple[Path, Path]) -> None:
    # retry_cooldown=0: the refused load is tried again at once once unpinned.
    with mm.ModelPool(budget=MIB + MIB // 2, retry_cooldown=0) as pool:
        pool.add("a", two[0], pinned=True)
        pool.add("b", two[1])
        pool.acquire("a").release()
        with pytest.raises(mm.InsufficientMemory) as err:
            pool.acquire("b")
        assert err.value.details["pinned"] > 0
        pool.unpin("a")
        pool.acquire("b").release()
        status = pool.status("a")
        assert status is not None and status.state is State.IDLE


async def test_keep_alive_expires_an_unused_model(two: tuple[Path, Path]) -> None:
    async with mm.ModelPool(budget=8 * MIB) as pool:
        pool.add("a", two[0], keep_alive=0.1)
        (await pool.acquire_async("a")).release()
        deadline = time.monotonic() + 5
        while (s := pool.status("a")) is not None and s.state is not State.IDLE:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert pool.snapshot().counters.expirations == 1
        pool.keep_alive("a", None)
        (await pool.acquire_async("a")).release()
        status = pool.status("a")
        assert status is not None and status.keep_alive is None


async def test_reload_keeps_old_leases_on_their_version(tmp_path: Path, two: tuple[Path, Path]) -> None:
    async with mm.ModelPool(budget=8 * MIB) as pool:
        pool.add("a", two[0])
        old = await pool.acquire_async("a")
        version = await pool.reload_async("a", two[1])
        assert version == 2
        new = await pool.acquire_async("a")
        assert (old.version, new.version) == (1, 2)
        assert np.from_dlpack(old.tensor("model", "w"))[0] == 1.0
        assert np.from_dlpack(new.tensor("model", "w"))[0] == 2.0
        old.release()
        new.release()
        await pool.remove_async("a")
        assert pool.status("a") is None


async def test_cancelling_an_acquire_leaves_no_trace(two: tuple[Path, Path]) -> None:
    async with mm.ModelPool(budget=MIB + MIB // 2, admission_timeout=30) as pool:
        pool.add("a", two[0])
        pool.add("b", two[1])
        held = await pool.acquire_async("a")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(pool.acquire_async("b"), 0.2)
        status = pool.status("b")
        assert status is not None and status.waiters == 0
        held.release()


def test_unknown_ids_and_a_closed_pool(two: tuple[Path, Path]) -> None:
    pool = mm.ModelPool(budget=8 * MIB)
    with pytest.raises(mm.UnknownModel) as err:
        pool.acquire("nope")
    assert err.value.details == {"id": "nope"}
    with pytest.raises(mm.UnknownModel):
        pool.pin("nope")
    with pytest.raises(mm.NotReady):
        pool.add("a", two[0]) or pool.try_acquire("a")
    assert pool.shutdown(timeout=10)
    with pytest.raises(mm.ShutDown):
        pool.acquire("a")


async def test_working_memory_is_reserved_with_a_lease(two: tuple[Path, Path]) -> None:
    # Room for both models, or one with a reserve of one model's bytes
    # (a headroom of one model is left to other processes).
    async with mm.ModelPool(budget=3 * MIB + MIB // 2, headroom=MIB, admission_timeout=0.3) as pool:
        assert pool.budget == 2 * MIB + MIB // 2
        pool.add("a", two[0])
        pool.add("b", two[1])
        with await pool.acquire_async("b") as lease:
            assert lease.working_bytes == 0
        with await pool.acquire_async("a", working_bytes=MIB) as lease:
            assert lease.working_bytes == MIB
            snap = pool.snapshot()
            assert snap.charged == 2 * MIB and snap.counters.evictions == 1
            # b waits for the reserve, then gives up naming what held it.
            with pytest.raises(mm.MemoryBusy):
                await pool.acquire_async("b")
        assert pool.snapshot().charged == MIB
        with pytest.raises(mm.InsufficientMemory):
            pool.acquire("a", working_bytes=2 * MIB)
    with pytest.raises(mm.InvalidArgument):
        mm.ModelPool(budget=MIB, headroom=2 * MIB)


async def test_the_host_tier_is_a_device_pools(two: tuple[Path, Path]) -> None:
    # On the CPU the models are in host memory already: refused.
    with pytest.raises(mm.InvalidArgument, match="host tier"):
        mm.ModelPool(budget=MIB, host_budget=MIB)
    with pytest.raises(OverflowError):
        mm.ModelPool(budget=MIB, host_budget=-1)
    async with mm.ModelPool(budget=8 * MIB) as pool:
        pool.add("a", two[0])
        pool.acquire("a").release()
        snap = pool.snapshot()
        assert (snap.host_budget, snap.parked) == (0, 0)
        assert (snap.counters.parks, snap.counters.resumes) == (0, 0)
        a = snap.model("a")
        assert a is not None and (a.parked, a.parked_bytes) == (False, 0)
        assert "model_manager_pool_parked_bytes 0" in pool.metrics_text()


async def test_a_pipeline_is_one_model_per_component(pipeline: Path, two: tuple[Path, Path]) -> None:
    async with mm.ModelPool(budget=8 * MIB) as pool:
        ids = pool.add_pipeline("sd", pipeline)
        assert sorted(ids) == ["sd/unet", "sd/vae"]
        with await pool.acquire_async("sd/unet") as lease:
            assert lease.id == "sd/unet"
            assert lease.components() == ["unet"]
        vae = pool.status("sd/vae")
        assert vae is not None and vae.state is State.IDLE
        with pytest.raises(mm.InvalidArgument):
            pool.add_pipeline("sd", pipeline)  # taken: nothing added
        with pytest.raises(mm.InvalidArgument):
            pool.add_pipeline("one", two[0])  # not a pipeline
        assert len(pool.snapshot().models) == 2
