"""The package's classes: asyncio, context managers and typed values around
the Rust extension (``_model_manager``), which translates the core.

Nothing here decides anything about a model's life: every command goes to
the core, and every outcome (a state, an error) is the core's.
"""

from __future__ import annotations

import asyncio
import atexit
import enum
import importlib
import os
import threading
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Union

from . import _model_manager as _mm
from ._model_manager import Hub, Lease, ModelManagerError, Pending, Tensor

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

# The lifecycle's states, from the core's table: `State.READY.value == "ready"`.
State = enum.Enum(  # type: ignore[misc]
    "State", [(name.upper(), name) for name in _mm.STATES], module="model_manager"
)

Source = Union[str, "os.PathLike[str]", bytes, bytearray, dict[str, bytes], Hub]


@dataclass(frozen=True)
class Progress:
    """How far a load has come."""

    bytes_done: int
    bytes_total: int
    tensors_done: int
    tensors_total: int
    current: str | None

    @property
    def fraction(self) -> float:
        """Fraction done in [0, 1], by bytes (1.0 for an empty model)."""
        return 1.0 if self.bytes_total == 0 else self.bytes_done / self.bytes_total


@dataclass(frozen=True)
class Snapshot:
    """The manager at one instant (the core's `Snapshot`)."""

    state: Any
    generation: int
    model: str | None
    progress: Progress
    error: ModelManagerError | None
    resident_bytes: int
    unreclaimed_bytes: int

    @staticmethod
    def _from(d: dict[str, Any]) -> Snapshot:
        return Snapshot(
            state=State(d["state"]),
            generation=d["generation"],
            model=d["model"],
            progress=Progress(**d["progress"]),
            error=d["error"],
            resident_bytes=d["resident_bytes"],
            unreclaimed_bytes=d["unreclaimed_bytes"],
        )


@dataclass(frozen=True)
class StateEvent:
    """One transition: `from_state -> to_state` caused by `command`."""

    from_state: Any
    to_state: Any
    command: str
    snapshot: Snapshot
    missed: int
    """Events dropped before this one because the reader fell behind."""

    @staticmethod
    def _from(d: dict[str, Any]) -> StateEvent:
        return StateEvent(
            from_state=State(d["from_state"]),
            to_state=State(d["to_state"]),
            command=d["command"],
            snapshot=Snapshot._from(d["snapshot"]),
            missed=d["missed"],
        )


@dataclass(frozen=True)
class ComponentInfo:
    """One component of a loaded model."""

    config: Any
    tensors: int
    bytes: int


@dataclass(frozen=True)
class ModelInfo:
    """What a load produced."""

    snapshot: Snapshot
    sample_size: int | None
    config: Any
    bytes: int
    tensors: int
    components: dict[str, ComponentInfo]

    @staticmethod
    def _from(d: dict[str, Any]) -> ModelInfo:
        return ModelInfo(
            snapshot=Snapshot._from(d["snapshot"]),
            sample_size=d["sample_size"],
            config=d["config"],
            bytes=d["bytes"],
            tensors=d["tensors"],
            components={k: ComponentInfo(**v) for k, v in d["components"].items()},
        )


@dataclass(frozen=True)
class ModelStatus:
    """One model of a pool (the core's `ModelStatus`)."""

    id: str
    state: Any
    version: int | None
    loading_version: int | None
    source: str
    charged_bytes: int
    resident_bytes: int
    leases: int
    waiters: int
    idle_for: float | None
    keep_alive: float | None
    expires_in: float | None
    pinned: bool
    last_error: ModelManagerError | None

    @staticmethod
    def _from(d: dict[str, Any]) -> ModelStatus:
        fields: dict[str, Any] = dict(d)
        fields["state"] = State(d["state"])
        return ModelStatus(**fields)


@dataclass(frozen=True)
class PoolCounters:
    loads: int
    hits: int
    misses: int
    evictions: int
    expirations: int
    failures: int


@dataclass(frozen=True)
class PoolSnapshot:
    """Every model's status, the charges and the counters."""

    budget: int
    charged: int
    queued: list[tuple[str, int]]
    unreclaimed_bytes: int
    models: list[ModelStatus]
    counters: PoolCounters

    def model(self, id: str) -> ModelStatus | None:
        return next((m for m in self.models if m.id == id), None)

    @staticmethod
    def _from(d: dict[str, Any]) -> PoolSnapshot:
        return PoolSnapshot(
            budget=d["budget"],
            charged=d["charged"],
            queued=list(d["queued"]),
            unreclaimed_bytes=d["unreclaimed_bytes"],
            models=[ModelStatus._from(m) for m in d["models"]],
            counters=PoolCounters(**d["counters"]),
        )


@dataclass(frozen=True)
class PoolEvent:
    """What happened to a model of a pool; `kind` is one of the core's
    `PoolEventKind::NAMES`, `reason` one of `UnloadReason::NAMES`."""

    id: str
    version: int
    kind: str
    bytes: int | None
    error: ModelManagerError | None
    reason: str | None
    for_id: str | None
    missed: int


# -- operations in flight -----------------------------------------------------


def _take(pending: Pending) -> Any:
    """The result of a finished operation, a lease left unclaimed released."""
    try:
        value = pending.result()
    except BaseException:
        return None
    if isinstance(value, Lease):
        value.release()
    return None


async def _await(pending: Pending) -> Any:
    """Await a core operation. Cancelling the awaiting task cancels it as
    the core defines (a load stops and frees what it read; a wait stops)
    and waits for that to be done before the cancellation propagates."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def wake(future: asyncio.Future[None] = done) -> None:
        if not future.done():
            future.set_result(None)

    pending.notify(loop, wake)
    try:
        await done
    except asyncio.CancelledError:
        pending.cancel()
        settled = loop.create_future()
        pending.notify(loop, lambda: None if settled.done() else settled.set_result(None))
        try:
            await settled
        except asyncio.CancelledError:
            pass
        if pending.done():
            _take(pending)
        raise
    return pending.result()


def _wait(pending: Pending, on_tick: Callable[[], None] | None = None) -> Any:
    """Wait for a core operation from a thread, the GIL released. Ctrl-C
    (KeyboardInterrupt) cancels it as `_await` does, then propagates."""
    try:
        while not pending.wait(0.05):
            if on_tick is not None:
                on_tick()
    except KeyboardInterrupt:
        pending.cancel()
        pending.wait(30.0)
        if pending.done():
            _take(pending)
        raise
    if on_tick is not None:
        on_tick()
    return pending.result()


ProgressCallback = Callable[[Progress], object]


def _progress_callback(progress: ProgressCallback | bool | None) -> ProgressCallback | None:
    if progress is None or progress is False:
        return None
    if progress is True:
        try:
            tqdm = importlib.import_module("tqdm").tqdm
        except ImportError:
            warnings.warn("progress=True draws a bar with tqdm, which is not installed", stacklevel=3)
            return None
        bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc="loading")

        def draw(p: Progress) -> None:
            if bar.total != p.bytes_total:
                bar.total = p.bytes_total
            bar.update(p.bytes_done - bar.n)
            if p.bytes_total and p.bytes_done >= p.bytes_total:
                bar.close()

        return draw
    if not callable(progress):
        raise TypeError("progress must be a callable, True (a tqdm bar) or None")
    return progress


# -- event streams ----------------------------------------------------------


class _Stream:
    """An event stream: `async for` on an event loop, or `for` / `next()`
    from a thread."""

    def __init__(self, events: _mm.Events, convert: Callable[[dict[str, Any]], Any]) -> None:
        self._events = events
        self._convert = convert
        self._queue: asyncio.Queue[dict[str, Any] | None] | None = None
        self._ended = False

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> Any:
        if self._ended:
            raise StopAsyncIteration
        if self._queue is None:
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
            self._events.start(loop, queue.put_nowait)
            self._queue = queue
        item = await self._queue.get()
        if item is None:
            self._ended = True
            raise StopAsyncIteration
        return self._convert(item)

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self.next()
            if item is None:
                return
            yield item

    def next(self, timeout: float | None = None) -> Any:
        """The next event from a thread (GIL released), waiting at most
        `timeout` seconds; `None` if none came or the stream ended."""
        if self._ended:
            return None
        d = self._events.next(timeout)
        return None if d is None else self._convert(d)

    def close(self) -> None:
        """End the stream after the events already published."""
        self._events.close()

    async def aclose(self) -> None:
        self.close()


# -- exit -------------------------------------------------------------------

_live: weakref.WeakSet[ModelManager | ModelPool] = weakref.WeakSet()


def _shutdown_all() -> None:
    """At exit, before threads are joined: shut every manager and pool down
    (bounded by the core), so that no load outlives the program."""
    for owner in list(_live):
        try:
            owner.shutdown()
        except BaseException:
            pass


def _quiesce() -> None:
    """Last, at exit: no thread of the extension enters Python any more."""
    _shutdown_all()
    _mm.quiesce(2.0)


_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    _register(_shutdown_all)
atexit.register(_quiesce)


def _dtype_name(dtype: object) -> str | None:
    """`"f16"`, `"float16"`, `torch.float16`, `numpy.float16`: the core's name."""
    if dtype is None:
        return None
    name = str(getattr(dtype, "__name__", dtype)).rsplit(".", 1)[-1].lower()
    return {
        "float32": "f32",
        "float": "f32",
        "float16": "f16",
        "half": "f16",
        "bfloat16": "bf16",
    }.get(name, name)


# -- the manager ------------------------------------------------------------


class ModelManager:
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
        self._streams: weakref.WeakSet[_Stream] = weakref.WeakSet()
        _live.add(self)

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
        stream = _Stream(self._inner.subscribe(), StateEvent._from)
        self._streams.add(stream)
        return stream

    def shutdown(self, timeout: float | None = None) -> bool:
        """Cancel any load, drain leases (bounded by `drain_timeout`),
        unload and join the manager's threads; every later command raises
        ShutDown. Idempotent; blocks with the GIL released, bounded like
        the core (drain_timeout + 1.5 s). With `timeout`, returns False if
        it has not finished by then (it goes on)."""
        pending = self._inner.shutdown()
        try:
            finished = pending.wait(timeout)
        finally:
            if pending.done():
                self._end_streams()
        return finished

    async def shutdown_async(self) -> None:
        await _await(self._inner.shutdown())
        self._end_streams()

    def _end_streams(self) -> None:
        for stream in list(self._streams):
            stream.close()

    def __enter__(self) -> ModelManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    async def __aenter__(self) -> ModelManager:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown_async()

    def __repr__(self) -> str:
        return f"ModelManager(state={self._inner.current_state()!r}, device={self.device!r})"


class _Default(enum.Enum):
    KEEP_ALIVE = "the pool's keep-alive"


# -- the pool ---------------------------------------------------------------


class ModelPool:
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
        )
        self._streams: weakref.WeakSet[_Stream] = weakref.WeakSet()
        _live.add(self)

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
        if isinstance(keep_alive, _Default):
            self._inner.add(id, source, None, True, pinned)
        else:
            self._inner.add(id, source, keep_alive, False, pinned)

    async def acquire_async(self, id: str, timeout: float | None = None) -> Lease:
        """A lease on `id`: at once if ready, else after its load (joined if
        in flight). With `timeout`, Timeout after it (the load goes on)."""
        lease: Lease = await _await(self._inner.acquire(id, timeout))
        return lease

    def acquire(self, id: str, timeout: float | None = None) -> Lease:
        """`acquire_async`, blocking with the GIL released."""
        lease: Lease = _wait(self._inner.acquire(id, timeout))
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
        stream = _Stream(self._inner.subscribe(), lambda d: PoolEvent(**d))
        self._streams.add(stream)
        return stream

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop every load, drain every model's leases (bounded), free them
        and join the pool's threads. Idempotent."""
        pending = self._inner.shutdown()
        try:
            finished = pending.wait(timeout)
        finally:
            if pending.done():
                for stream in list(self._streams):
                    stream.close()
        return finished

    async def shutdown_async(self) -> None:
        await _await(self._inner.shutdown())
        for stream in list(self._streams):
            stream.close()

    def __enter__(self) -> ModelPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    async def __aenter__(self) -> ModelPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown_async()


# Used by `async for` type hints in the stubs.
EventStream = _Stream
_AsyncIter = AsyncIterator
