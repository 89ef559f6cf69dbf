"""Data that flows through pipelines: reading batches in, summaries out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["KeyTable", "RawMessage", "ReadingBatch", "Stat", "Summary", "SummaryKind"]

Stat = float | int | None
SummaryKind = Literal["summary", "correction", "alert"]


class KeyTable(dict[str, int]):
    """Interns key strings to dense int32 codes, shared by all batches of one pipeline.

    Decoding maps keys with ``map(table.__getitem__, keys)`` so a new key costs one insertion
    and a known key one C-level dict lookup; ``names[code]`` maps back.
    """

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __missing__(self, key: str) -> int:
        code = len(self.names)
        self.names.append(key)
        self[key] = code
        return code

    def encode(self, keys: Sequence[str]) -> npt.NDArray[np.int32]:
        return np.fromiter(map(self.__getitem__, keys), dtype=np.int32, count=len(keys))

    def prefixed(self, prefix: str) -> _PrefixTable:
        """A view that maps ``name`` to the code of ``prefix + name`` without building the
        joined string for names seen before (SenML base name + name)."""
        views: dict[str, _PrefixTable] = self.__dict__.setdefault("_views", {})
        view = views.get(prefix)
        if view is None:
            if len(views) > 4096:
                views.clear()
            view = views[prefix] = _PrefixTable(self, prefix)
        return view


class _PrefixTable(dict[str, int]):
    def __init__(self, table: KeyTable, prefix: str) -> None:
        super().__init__()
        self.table = table
        self.prefix = prefix

    def __missing__(self, name: str) -> int:
        code = self[name] = self.table[self.prefix + name]
        return code


@dataclass(slots=True)
class RawMessage:
    """One message as the transport received it; the only message type past the ingest layer.

    Treat it as immutable (it is not frozen only because frozen dataclasses cost several times
    more to build, and one is built per message)."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    received_at: float = 0.0


@dataclass(slots=True, frozen=True)
class ReadingBatch:
    """Readings decoded from a micro-batch of messages, as parallel numpy arrays.

    ``values`` is float64 and holds NaN for a missing value; ``times`` are event times in
    seconds since the epoch; ``keys`` are codes into ``key_table``.
    """

    keys: npt.NDArray[np.int32]
    values: npt.NDArray[np.float64]
    times: npt.NDArray[np.float64]
    key_table: KeyTable
    received_at: float = 0.0
    replayed: bool = False

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @classmethod
    def empty(cls, key_table: KeyTable, received_at: float = 0.0) -> ReadingBatch:
        return cls(
            keys=np.empty(0, dtype=np.int32),
            values=np.empty(0, dtype=np.float64),
            times=np.empty(0, dtype=np.float64),
            key_table=key_table,
            received_at=received_at,
        )


@dataclass(slots=True)
class Summary:
    """A distilled result a pipeline emits; the uplink wraps it into an envelope. Treat it as
    immutable (not frozen for construction speed: one is built per window and key).

    ``revision`` is 0 for the first emission of a window and grows with each correction, so
    that ``(pipeline, key, window_start, window_end, kind, revision)`` identifies it for good.
    """

    pipeline: str
    key: str
    window_start: float
    window_end: float
    stats: Mapping[str, Stat]
    kind: SummaryKind = "summary"
    revision: int = 0
    attrs: Mapping[str, Any] = field(default_factory=dict)
