"""Reading a recording: its header at once, its messages in file order, and a summary of it.

A crash or Ctrl-C can leave a torn last record: the reader returns every complete record before
it and reports the rest as the tail (its offset, size and why it stopped), so a recording is
readable however it ended.
"""

from __future__ import annotations

import os
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgpack

from edge_runtime.replay.header import (
    FORMAT_VERSION,
    FRAME,
    MAGIC,
    MAX_BODY_BYTES,
    MESSAGE_TAG,
    PREAMBLE,
    QOS_MASK,
    RETAIN_BIT,
    RecordingError,
    RecordingHeader,
)
from edge_runtime.types import RawMessage

__all__ = ["RecordingInfo", "RecordingReader", "Tail", "TailReason", "is_recording"]

_READ_CHUNK = 1 << 20

TailReason = Literal["truncated", "bad_length", "bad_crc", "bad_record"]


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
                head = fh.read(len(MAGIC) + PREAMBLE.size)
                if len(head) < len(MAGIC) or head[: len(MAGIC)] != MAGIC:
                    raise RecordingError(
                        self.path, "not an edge-runtime recording (no EDGEREC1 magic)"
                    )
                if len(head) < len(MAGIC) + PREAMBLE.size:
                    raise RecordingError(self.path, "the header is truncated")
                length, crc = PREAMBLE.unpack_from(head, len(MAGIC))
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
        self.data_offset: int = len(MAGIC) + PREAMBLE.size + int(length)
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
                            ref, payload, flags & QOS_MASK, flags & RETAIN_BIT != 0, t_us / 1e6
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
        frame = FRAME.unpack_from
        head = FRAME.size
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
        head = FRAME.size
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
                count += buf[pos + head] == MESSAGE_TAG
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
