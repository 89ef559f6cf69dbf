"""The recording file format (``.edgerec``): MQTT messages as they were received.

A recording is a preamble followed by self-delimiting, checksummed records, written append-only::

    "EDGEREC1" | u32 header length | u32 header CRC-32 | header (msgpack map)
    { u32 body length | u32 body CRC-32 | body (msgpack) } ...

The parts live in their own modules and are gathered here: the constants, the error and the
header in :mod:`~edge_runtime.replay.header`, :class:`RecordingWriter` in
:mod:`~edge_runtime.replay.writer`, :class:`RecordingReader` (with what a read reports:
:class:`Tail`, :class:`RecordingInfo`) in :mod:`~edge_runtime.replay.reader`.
``docs/recording-format.md`` describes the format byte by byte.
"""

from edge_runtime.replay.header import (
    FORMAT_VERSION,
    MAGIC,
    MAX_BODY_BYTES,
    RecordingError,
    RecordingHeader,
)
from edge_runtime.replay.reader import (
    RecordingInfo,
    RecordingReader,
    Tail,
    TailReason,
    is_recording,
)
from edge_runtime.replay.writer import RecordingWriter

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_BODY_BYTES",
    "RecordingError",
    "RecordingHeader",
    "RecordingInfo",
    "RecordingReader",
    "RecordingWriter",
    "Tail",
    "TailReason",
    "is_recording",
]
