"""Cancellation the asyncio way, Ctrl-C in scripts, and exiting mid-load."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import model_manager as mm
from model_manager import State

from conftest import python_env, slow_manager


async def _until_reading(manager: mm.ModelManager) -> None:
    while manager.snapshot().progress.bytes_done == 0:
        await asyncio.sleep(0.001)


async def test_cancelling_the_task_cancels_the_load(slow_file: Path) -> None:
    manager = slow_manager()
    task = asyncio.ensure_future(manager.load_model_async(slow_file))
    await _until_reading(manager)
    assert manager.current_state is State.LOADING
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    snap = manager.snapshot()
    assert snap.state is State.IDLE
    assert snap.resident_bytes == 0, "memory back before the cancellation propagates"
    manager.shutdown()


async def test_wait_for_timeout_cancels_the_load(slow_file: Path) -> None:
    manager = slow_manager()
    events = manager.events()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(manager.load_model_async(slow_file), timeout=0.05)
    assert manager.current_state is State.IDLE
    assert manager.snapshot().resident_bytes == 0
    manager.shutdown()
    seen = [(e.from_state, e.to_state, e.command) async for e in events]
    assert seen == [(State.IDLE, State.LOADING, "load"), (State.LOADING, State.IDLE, "cancel")]


async def test_cancel_method_resolves_the_awaiter_with_cancelled(slow_file: Path) -> None:
    manager = slow_manager()
    task = asyncio.ensure_future(manager.load_model_async(slow_file))
    await _until_reading(manager)
    manager.cancel()
    with pytest.raises(mm.Cancelled):
        await task
    assert manager.snapshot().resident_bytes == 0
    with pytest.raises(mm.InvalidTransition):
        manager.cancel()
    manager.shutdown()


def _script(body: str) -> str:
    return textwrap.dedent(body)


@pytest.mark.timeout(60)
def test_ctrl_c_cancels_a_blocking_load(slow_file: Path) -> None:
    code = _script(
        f"""
        import model_manager as mm, sys
        m = mm.ModelManager(chunk_size=4096, read_threads=1)
        print("start", flush=True)
        try:
            m.load_model({str(slow_file)!r})
        except KeyboardInterrupt:
            s = m.snapshot()
            print("interrupted", s.state.value, s.resident_bytes, flush=True)
            sys.exit(0)
        print("loaded", flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=python_env()
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "start"
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.strip() == "interrupted idle 0", (out, err)


@pytest.mark.timeout(60)
def test_ctrl_c_stops_waiting_for_events() -> None:
    code = _script(
        """
        import model_manager as mm, sys
        m = mm.ModelManager()
        try:
            print("start", flush=True)
            for event in m.events():
                print(event, flush=True)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(0)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=python_env()
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "start"
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.strip() == "interrupted", (out, err)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["asyncio", "thread"])
def test_a_process_that_exits_mid_load_exits_cleanly(slow_file: Path, how: str) -> None:
    if how == "asyncio":
        body = f"""
        import asyncio, model_manager as mm
        m = mm.ModelManager(chunk_size=4096, read_threads=1)
        async def main():
            task = asyncio.ensure_future(m.load_model_async({str(slow_file)!r}))
            while m.snapshot().progress.bytes_done == 0:
                await asyncio.sleep(0.001)
            print(m.current_state.value, flush=True)
        asyncio.run(main())
        """
    else:
        body = f"""
        import threading, time, model_manager as mm
        m = mm.ModelManager(chunk_size=4096, read_threads=1)
        def load():
            try:
                m.load_model({str(slow_file)!r})
            except mm.ModelManagerError:
                pass
        threading.Thread(target=load, daemon=True).start()
        while m.snapshot().progress.bytes_done == 0:
            time.sleep(0.001)
        print(m.current_state.value, flush=True)
        """
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", _script(body)], capture_output=True, text=True, timeout=30, env=python_env()
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "loading", "the process exited mid-load"
    assert "panic" not in proc.stderr.lower(), proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert time.monotonic() - started < 20


@pytest.mark.timeout(60)
def test_exit_with_a_pending_unload_and_a_live_array(model_file: Path) -> None:
    body = f"""
    import numpy as np, model_manager as mm, threading
    m = mm.ModelManager(drain_timeout=0.2)
    m.load_model({str(model_file)!r})
    lease = m.acquire()
    kept = np.from_dlpack(lease.tensor("model", "weight"))
    lease.release()
    threading.Thread(target=m.unload_model, daemon=True).start()
    print("exiting", flush=True)
    """
    proc = subprocess.run(
        [sys.executable, "-c", _script(body)], capture_output=True, text=True, timeout=30, env=python_env()
    )
    assert proc.returncode == 0, proc.stderr
    assert "panic" not in proc.stderr.lower(), proc.stderr
    assert os.path.exists(model_file)
