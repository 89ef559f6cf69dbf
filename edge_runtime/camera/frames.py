"""Frames as they enter the video stage, MQTT frame payloads, and the per-camera rate cap.

A camera publishes either the bare JPEG bytes or a msgpack map ``{"ts": float, "jpeg": bytes}``
carrying the capture time (seconds since the epoch).  :func:`parse_payload` tells the two apart
by their first byte (a JPEG starts with ``FF D8``, a msgpack map with ``80``-``8F``, ``DE`` or
``DF``; a PNG's ``89 'PNG'`` is recognised and left to the decoder to refuse as ``not_jpeg``)
and only unpacks the msgpack envelope; the JPEG itself is checked and decoded later, in
a worker thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import msgpack
import numpy as np
from numpy.typing import NDArray

from edge_runtime.errors import EdgeRuntimeError

__all__ = [
    "PAYLOAD_ERROR_REASONS",
    "FpsSampler",
    "Frame",
    "PayloadError",
    "PayloadErrorReason",
    "parse_payload",
]

PayloadErrorReason = Literal["bad_msgpack", "no_jpeg", "bad_ts"]
PAYLOAD_ERROR_REASONS: tuple[PayloadErrorReason, ...] = ("bad_msgpack", "no_jpeg", "bad_ts")

_MSGPACK_MAP_FIRST_BYTES = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}
_PNG_SIGNATURE = b"\x89PNG"  # 0x89 also opens a msgpack fixmap: tell a PNG frame apart


class PayloadError(EdgeRuntimeError):
    """A frame message is not a JPEG nor a well-formed msgpack frame envelope.

    ``reason`` is a stable metrics label (one of :data:`PAYLOAD_ERROR_REASONS`).
    """

    def __init__(self, reason: PayloadErrorReason, message: str):
        self.reason: PayloadErrorReason = reason
        super().__init__(f"{reason}: {message}")


@dataclass(slots=True, frozen=True)
class Frame:
    """One frame of one camera, before decoding.

    ``ts`` is the capture time (the msgpack ``ts``, the media time of a file, or the receipt
    time when the camera sends none); ``received_at`` is the wall-clock time the runtime got it,
    the start of the frame-to-result latency.  Exactly one of ``jpeg`` (compressed, from MQTT)
    and ``image`` (BGR uint8, already decoded by an OpenCV source) is set.
    """

    camera: str
    ts: float
    received_at: float
    jpeg: bytes | None = None
    image: NDArray[np.uint8] | None = None

    @property
    def nbytes(self) -> int:
        if self.jpeg is not None:
            return len(self.jpeg)
        return 0 if self.image is None else int(self.image.nbytes)


def parse_payload(payload: bytes) -> tuple[float | None, bytes]:
    """``(capture ts or None, jpeg bytes)`` of one MQTT frame message.

    Anything that is not a msgpack map is returned as is, to be validated as a JPEG by the
    decoder (which rejects random bytes, PNGs and the like as ``not_jpeg``).
    """
    if (
        not payload
        or payload[0] not in _MSGPACK_MAP_FIRST_BYTES
        or payload.startswith(_PNG_SIGNATURE)
    ):
        return None, payload
    try:
        doc = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise PayloadError("bad_msgpack", f"cannot unpack the msgpack envelope: {exc}") from exc
    if not isinstance(doc, dict):
        raise PayloadError("bad_msgpack", f"expected a msgpack map, got {type(doc).__name__}")
    jpeg = doc.get("jpeg")
    if not isinstance(jpeg, bytes | bytearray):
        got = "nothing" if jpeg is None else type(jpeg).__name__
        raise PayloadError("no_jpeg", f'the msgpack map needs "jpeg" as binary, got {got}')
    ts = doc.get("ts")
    if ts is None:
        return None, bytes(jpeg)
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise PayloadError("bad_ts", f'"ts" must be a finite number of seconds, got {ts!r}')
    return float(ts), bytes(jpeg)


class FpsSampler:
    """Keeps at most ``max_fps`` frames per second of capture time, on an even grid.

    A frame is kept when its timestamp reaches the next grid point (less a 10 % tolerance for
    timestamp jitter); each kept frame moves the grid point one interval on, so over any
    stretch of ``T`` seconds at most ``T * max_fps + 1`` frames pass, and a 30 fps stream capped
    at 10 keeps every third frame.  After a gap the grid restarts at the next frame.
    """

    __slots__ = ("_due", "_interval", "_tolerance")

    def __init__(self, max_fps: float | None):
        self._interval = 0.0 if max_fps is None else 1.0 / max_fps
        self._tolerance = 0.1 * self._interval
        self._due = -math.inf

    def accept(self, ts: float) -> bool:
        if self._interval == 0.0:
            return True
        if ts < self._due - self._tolerance:
            return False
        late = ts - self._due
        self._due = self._due + self._interval if late < self._interval else ts + self._interval
        return True
