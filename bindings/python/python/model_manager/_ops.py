"""What the manager and the pool share: waiting on the core's operations
(asyncio and blocking), progress callbacks, event streams, shutdown at
exit, and the base class with their bounded shutdown and `with`."""

from __future__ import annotations

import asyncio
import atexit
import importlib
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Protocol, TypeVar

from . import _model_manager as _mm
from ._model_manager import Lease, Pending
from ._records import Progress

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

_live: weakref.WeakSet[_Owner] = weakref.WeakSet()


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


# -- what a manager and a pool share -----------------------------------------

_Owner_T = TypeVar("_Owner_T", bound="_Owner")


class _Shuts(Protocol):
    def shutdown(self) -> Pending: ...


class _Owner:
    """A core manager or pool: its event streams, its bounded shutdown,
    and `with` / `async with`, the same for both."""

    def __init__(self, core: _Shuts) -> None:
        self._core = core
        self._streams: weakref.WeakSet[_Stream] = weakref.WeakSet()
        _live.add(self)

    def _stream(self, subscription: Any, convert: Callable[[Any], Any]) -> _Stream:
        stream = _Stream(subscription, convert)
        self._streams.add(stream)
        return stream

    def _end_streams(self) -> None:
        for stream in list(self._streams):
            stream.close()

    def shutdown(self, timeout: float | None = None) -> bool:
        """Stop every load, drain leases (bounded by `drain_timeout`),
        free the memory and join the threads; every later command raises
        ShutDown. Idempotent; blocks with the GIL released, bounded like
        the core (drain_timeout + 1.5 s). With `timeout`, returns False if
        it has not finished by then (it goes on). Ends every `events()`
        stream after the events already published."""
        pending = self._core.shutdown()
        try:
            finished = pending.wait(timeout)
        finally:
            if pending.done():
                self._end_streams()
        return finished

    async def shutdown_async(self) -> None:
        await _await(self._core.shutdown())
        self._end_streams()

    def __enter__(self: _Owner_T) -> _Owner_T:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    async def __aenter__(self: _Owner_T) -> _Owner_T:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown_async()
