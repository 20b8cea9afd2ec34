"""The package's classes: asyncio, context managers and typed values around
the Rust extension (``_model_manager``), which translates the core.

Nothing here decides anything about a model's life: every command goes to
the core, and every outcome (a state, an error) is the core's.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator
from typing import Any

from . import _model_manager as _mm
from ._model_manager import Hub, Lease, ModelManagerError, Pending, Tensor
from ._records import (
    ComponentInfo,
    ModelInfo,
    ModelStatus,
    PoolCounters,
    PoolEvent,
    PoolSnapshot,
    Progress,
    Snapshot,
    Source,
    State,
    StateEvent,
)
from ._ops import ProgressCallback, _await, _dtype_name, _Owner, _progress_callback, _Stream, _wait

__all__ = [
    "ComponentInfo",
    "Hub",
    "Lease",
    "ModelInfo",
    "ModelManager",
    "ModelManagerError",
    "ModelPool",
    "ModelStatus",
    "PoolCounters",
    "PoolEvent",
    "PoolSnapshot",
    "Progress",
    "Snapshot",
    "State",
    "StateEvent",
    "Tensor",
]



# -- the manager ------------------------------------------------------------


class ModelManager(_Owner):
    """Owns the life of one model at a time: load, lease, unload, shutdown.

    A thin translation of the core's `ModelManager`: latest request wins,
    leases keep the model loaded, unload frees every byte, shutdown is
    bounded. Thread-safe; async methods run on any asyncio event loop.
    """

    def __init__(
        self,
        memory_budget: int | None = None,
        dtype: object = None,
        device: object = "cpu",
        *,
        chunk_size: int | None = None,
        read_threads: int | None = None,
        drain_timeout: float | None = None,
        return_memory_to_os: bool = True,
    ) -> None:
        self._inner = _mm.Manager(
            device=str(device),
            memory_budget=memory_budget,
            dtype=_dtype_name(dtype),
            chunk_size=chunk_size,
            read_threads=read_threads,
            drain_timeout=drain_timeout,
            return_memory_to_os=return_memory_to_os,
        )
        super().__init__(self._inner)

    # -- state ---------------------------------------------------------------

    @property
    def current_state(self) -> Any:
        """The lifecycle state (`State`). Lock-free."""
        return State(self._inner.current_state())

    @property
    def sample_size(self) -> int | None:
        """`sample_size` from the ready model's config; None unless ready."""
        return self._inner.sample_size()

    @property
    def resident_bytes(self) -> int:
        return self._inner.resident_bytes()

    @property
    def outstanding_leases(self) -> int:
        return self._inner.outstanding_leases()

    @property
    def device(self) -> str:
        return self._inner.device()

    def snapshot(self) -> Snapshot:
        """State, generation, progress, error and memory at one instant."""
        return Snapshot._from(self._inner.snapshot())

    def info(self) -> dict[str, Any] | None:
        """The ready model's config facts (sample_size, config, bytes,
        tensors); None unless ready."""
        return self._inner.info()

    # -- commands ------------------------------------------------------------

    async def load_model_async(
        self, source: Source, progress: ProgressCallback | bool | None = None
    ) -> ModelInfo:
        """Load `source` (latest request wins) and return what it holds once
        ready. `progress` is called on this event loop's thread, batched.
        Cancelling the awaiting task cancels the load: it returns once the
        load has freed what it read (the state is back to Idle)."""
        loop = asyncio.get_running_loop()
        callback = _progress_callback(progress)
        relay = None
        if callback is not None:
            holder: list[Pending] = []

            def deliver() -> None:
                d = holder[0].progress()
                if d is not None:
                    callback(Progress(**d))

            relay = (loop, deliver)
        pending = self._inner.load(source, relay)
        if callback is not None:
            holder.append(pending)
        return ModelInfo._from(await _await(pending))

    def load_model(
        self, source: Source, progress: ProgressCallback | bool | None = None
    ) -> ModelInfo:
        """`load_model_async` for scripts and threads: blocks with the GIL
        released; Ctrl-C cancels the load (then raises KeyboardInterrupt).
        `progress` is called on this thread."""
        callback = _progress_callback(progress)
        pending = self._inner.load(source)
        last: list[dict[str, Any] | None] = [None]

        def tick() -> None:
            d = pending.progress()
            if callback is not None and d is not None and d != last[0]:
                last[0] = d
                callback(Progress(**d))

        return ModelInfo._from(_wait(pending, tick if callback is not None else None))

    async def unload_model_async(self, timeout: float | None = None) -> None:
        """Unload: takes effect at once; returns when every lease (and every
        exported array) is released and the memory freed. With `timeout`,
        raises LeasesOutstanding (or Timeout) after it; the unload goes on."""
        await _await(self._inner.unload(timeout))

    def unload_model(self, timeout: float | None = None) -> None:
        """`unload_model_async`, blocking with the GIL released."""
        _wait(self._inner.unload(timeout))

    def cancel(self) -> None:
        """Cancel the load in flight (InvalidTransition when none is)."""
        self._inner.cancel()

    def reset(self) -> None:
        """Acknowledge a failure: Failed -> Idle."""
        self._inner.reset()

    def acquire(self) -> Lease:
        """A lease on the ready model (NotReady unless ready)."""
        return self._inner.acquire()

    def events(self) -> _Stream:
        """Every transition from now on, in order: `async for event in
        manager.events()` (or `for`, from a thread). Ends at shutdown."""
        return self._stream(self._inner.subscribe(), StateEvent._from)

    def __repr__(self) -> str:
        return f"ModelManager(state={self._inner.current_state()!r}, device={self.device!r})"


class _Default(enum.Enum):
    KEEP_ALIVE = "the pool's keep-alive"


# -- the pool ---------------------------------------------------------------


def _keep_alive_args(keep_alive: float | None | _Default) -> tuple[float | None, bool]:
    """`add`'s keep-alive for the extension: (seconds or None, whether to
    use the pool's default instead)."""
    if isinstance(keep_alive, _Default):
        return None, True
    return keep_alive, False


class ModelPool(_Owner):
    """Several models under one memory budget, by ids the application
    chooses (the core's `ModelPool`): a leased model is never evicted, a
    pinned one never; a load that cannot fit waits, bounded by
    `admission_timeout`, then fails with MemoryBusy naming what held the
    memory."""

    def __init__(
        self,
        budget: int | None = None,
        *,
        device: object = "cpu",
        dtype: object = None,
        keep_alive: float | None = None,
        max_queue: int | None = None,
        concurrent_loads: int | None = None,
        admission_timeout: float | None = None,
        retry_cooldown: float | None = None,
        drain_timeout: float | None = None,
        chunk_size: int | None = None,
        read_threads: int | None = None,
        return_memory_to_os: bool = True,
        headroom: int = 0,
        host_budget: int = 0,
    ) -> None:
        self._inner = _mm.Pool(
            budget=budget,
            device=str(device),
            dtype=_dtype_name(dtype),
            keep_alive=keep_alive,
            max_queue=max_queue,
            concurrent_loads=concurrent_loads,
            admission_timeout=admission_timeout,
            retry_cooldown=retry_cooldown,
            drain_timeout=drain_timeout,
            chunk_size=chunk_size,
            read_threads=read_threads,
            return_memory_to_os=return_memory_to_os,
            headroom=headroom,
            host_budget=host_budget,
        )
        super().__init__(self._inner)

    def add(
        self,
        id: str,
        source: Source,
        *,
        keep_alive: float | None | _Default = _Default.KEEP_ALIVE,
        pinned: bool = False,
    ) -> None:
        """Make `source` known as `id` (loads nothing). `keep_alive`:
        seconds an unused model stays resident, None for forever; by
        default the pool's."""
        self._inner.add(id, source, *_keep_alive_args(keep_alive), pinned)

    def add_pipeline(
        self,
        id: str,
        source: Source,
        *,
        keep_alive: float | None | _Default = _Default.KEEP_ALIVE,
        pinned: bool = False,
    ) -> list[str]:
        """Make the diffusers pipeline `source` known as one model per
        component with weights, `id/component` ("sd/unet", "sd/vae", ...),
        each loaded, leased, evicted and reloaded on its own, as diffusers'
        `enable_model_cpu_offload` moves components. Reads its headers and
        configs now; all or nothing. Returns the ids, in load order."""
        ids: list[str] = self._inner.add_pipeline(id, source, *_keep_alive_args(keep_alive), pinned)
        return ids

    async def acquire_async(
        self, id: str, timeout: float | None = None, *, working_bytes: int = 0
    ) -> Lease:
        """A lease on `id`: at once if ready, else after its load (joined if
        in flight). With `timeout`, Timeout after it (the load goes on).
        `working_bytes`: memory reserved beside the model for its inference
        while the lease lives (unleased models are evicted to make room;
        MemoryBusy after the admission timeout, InsufficientMemory at once
        if it can never fit)."""
        lease: Lease = await _await(self._inner.acquire(id, timeout, working_bytes))
        return lease

    def acquire(
        self, id: str, timeout: float | None = None, *, working_bytes: int = 0
    ) -> Lease:
        """`acquire_async`, blocking with the GIL released."""
        lease: Lease = _wait(self._inner.acquire(id, timeout, working_bytes))
        return lease

    def try_acquire(self, id: str) -> Lease:
        """A lease if `id` is ready now, else NotReady. Never waits."""
        return self._inner.try_acquire(id)

    async def load_async(self, id: str) -> int:
        """Load `id` now and wait until ready; its version."""
        version: int = await _await(self._inner.load(id))
        return version

    def load(self, id: str) -> int:
        version: int = _wait(self._inner.load(id))
        return version

    async def reload_async(self, id: str, source: Source, *, unload_first: bool = False) -> int:
        """Load `source` as the next version of `id` beside the serving one
        (or, with `unload_first`, after unloading it); the new version."""
        version: int = await _await(self._inner.reload(id, source, unload_first))
        return version

    def reload(self, id: str, source: Source, *, unload_first: bool = False) -> int:
        version: int = _wait(self._inner.reload(id, source, unload_first))
        return version

    def cancel(self, id: str) -> bool:
        """Stop the load of `id` in flight; whether there was one."""
        return self._inner.cancel(id)

    async def unload_async(self, id: str) -> None:
        await _await(self._inner.unload(id))

    def unload(self, id: str) -> None:
        _wait(self._inner.unload(id))

    async def remove_async(self, id: str) -> None:
        await _await(self._inner.remove(id))

    def remove(self, id: str) -> None:
        _wait(self._inner.remove(id))

    def pin(self, id: str) -> None:
        self._inner.pin(id)

    def unpin(self, id: str) -> None:
        self._inner.unpin(id)

    def keep_alive(self, id: str, seconds: float | None) -> None:
        """Set `id`'s keep-alive (None: forever); a running clock restarts."""
        self._inner.set_keep_alive(id, seconds)

    def status(self, id: str) -> ModelStatus | None:
        d = self._inner.status(id)
        return None if d is None else ModelStatus._from(d)

    def snapshot(self) -> PoolSnapshot:
        return PoolSnapshot._from(self._inner.snapshot())

    def metrics_text(self) -> str:
        """Counters and gauges in the Prometheus text format."""
        return self._inner.metrics_text()

    @property
    def budget(self) -> int:
        return self._inner.budget()

    @property
    def charged(self) -> int:
        return self._inner.charged()

    def events(self) -> _Stream:
        """Every model's events from now on, in decision order."""
        return self._stream(self._inner.subscribe(), lambda d: PoolEvent(**d))


# Used by `async for` type hints in the stubs.
EventStream = _Stream
_AsyncIter = AsyncIterator
