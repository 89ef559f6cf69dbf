"""Writing a recording: buffered, append-only, every record framed with its length and CRC-32.

A message body is ``[dt_us, topic, payload, flags]``: microseconds since the previous message's
receive time (since the header's ``t0_us`` for the first), the topic (a string the first time
it appears, then its index in order of first appearance), the payload bytes and ``qos | retain
<< 2``.  A writer that closes cleanly appends a ``{"type": "close", ...}`` map record.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import msgpack

from edge_runtime.replay.header import (
    FRAME,
    MAX_BODY_BYTES,
    RecordingError,
    RecordingHeader,
    frame,
    preamble,
)
from edge_runtime.replay.reader import RecordingReader
from edge_runtime.types import RawMessage

__all__ = ["RecordingWriter"]

_CLOSE_RESERVE = 64  # room kept under max_bytes for the closing record


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
        start = preamble(self.header)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._write_all(start)
        self._size = len(start)
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
        if (
            max_bytes is not None
            and self.size + FRAME.size + len(body) + _CLOSE_RESERVE > max_bytes
        ):
            return False
        if ref is None:
            self._topics[topic] = len(self._topics)
        self._buf += frame(body)
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
        self._buf += frame(mark)
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
