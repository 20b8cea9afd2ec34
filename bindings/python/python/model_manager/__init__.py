"""model-manager for Python: owns the life of an ML model in an application.

Loads weights (safetensors files, model folders, diffusers pipelines, hub
cache entries, bytes) without blocking, with progress and asyncio
cancellation; hands them out under leases as zero-copy DLPack tensors;
unloads freeing every byte; shuts down within a bound. The lifecycle is the
Rust core's (model-manager); this package translates it.
"""

from __future__ import annotations

from . import _model_manager
from ._api import (
    ComponentInfo,
    EventStream,
    Hub,
    Lease,
    ModelInfo,
    ModelManager,
    ModelManagerError,
    ModelPool,
    ModelStatus,
    PoolCounters,
    PoolEvent,
    PoolSnapshot,
    Progress,
    Snapshot,
    State,
    StateEvent,
    Tensor,
)

__version__: str = _model_manager.__version__

#: The core's error codes, `{name: number}` (the same as C's and JS's).
ERROR_CODES: dict[str, int] = dict(_model_manager.ERROR_CODES)
#: The pool's event kinds and unload reasons, from the core's tables.
POOL_EVENT_KINDS: tuple[str, ...] = tuple(_model_manager.POOL_EVENT_KINDS)
UNLOAD_REASONS: tuple[str, ...] = tuple(_model_manager.UNLOAD_REASONS)

# One exception class per code of the core's table (`InvalidModel`,
# `Cancelled`, ...), each a subclass of ModelManagerError with `.code`.
_errors: dict[str, type[ModelManagerError]] = {
    cls.__name__: cls for cls in _model_manager.ERRORS.values()
}
globals().update(_errors)


def error_class(code: int) -> type[ModelManagerError]:
    """The exception class of a core error code."""
    cls: type[ModelManagerError] = _model_manager.ERRORS[code]
    return cls


__all__ = [
    "ERROR_CODES",
    "POOL_EVENT_KINDS",
    "UNLOAD_REASONS",
    "ComponentInfo",
    "EventStream",
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
    "error_class",
    *sorted(_errors),
]
