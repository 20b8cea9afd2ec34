"""The typed values the package hands out: states, snapshots, events,
progress, model info and pool status, built from the core's dicts."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from typing import Any, Union

from . import _model_manager as _mm
from ._model_manager import Hub, ModelManagerError

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
    parked: bool
    """Not on the device, its copy in host memory (a CUDA pool's host tier)
    made; the next acquire loads it back from there."""
    parked_bytes: int
    """Bytes of host tier it holds: its copy (kept while it is back on the
    device, as long as the tier has room), or the copy being made."""

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
    parks: int
    resumes: int


@dataclass(frozen=True)
class PoolSnapshot:
    """Every model's status, the charges and the counters."""

    budget: int
    charged: int
    queued: list[tuple[str, int]]
    unreclaimed_bytes: int
    retained_bytes: int
    host_budget: int
    """The host tier's budget (0: none)."""
    parked: int
    """Bytes charged against the host budget now."""
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
            retained_bytes=d["retained_bytes"],
            host_budget=d["host_budget"],
            parked=d["parked"],
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
