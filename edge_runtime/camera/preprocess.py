"""JPEG validation and decoding, and writing frames into a preallocated input batch.

Everything here is synchronous and meant to run in worker threads: ``cv2.imdecode`` and
``cv2.resize`` release the GIL.  A JPEG is checked *before* it is decoded: start-of-image marker,
end-of-image marker (cv2 happily returns a half-grey picture for a truncated file), and the frame
size from the SOF header against :class:`FrameLimits` (so a tiny payload announcing a huge image
is refused without allocating it).  :class:`Normaliser` fits a decoded frame into its slot of the
input tensor, letterboxed (aspect ratio kept, padded) or stretched as the model's
:class:`InputSpec` says; :mod:`edge_runtime.camera.placement` holds the geometry it shares with
the box decoder.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_runtime.camera.errors import FrameError
from edge_runtime.camera.model_config import FrameLimits, InputSpec
from edge_runtime.camera.placement import place_frames

__all__ = [
    "FrameBatch",
    "Normaliser",
    "decode_jpeg",
    "jpeg_size",
    "resize_normalise_into",
]

log = logging.getLogger(__name__)

U8 = NDArray[np.uint8]
F32 = NDArray[np.float32]

_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"
# start-of-frame markers carry the image size; C4 (DHT), C8 (JPG) and CC (DAC) share the range
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn and TEM carry no length


def jpeg_size(data: bytes | memoryview) -> tuple[int, int]:
    """(width, height) from the first start-of-frame segment, walking the marker segments."""
    pos = 2
    end = len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            raise FrameError("corrupt", f"expected a JPEG marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker == 0xDA:  # start of scan before any frame header
            break
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2:
            raise FrameError("corrupt", f"JPEG segment with invalid length {length}")
        if marker in _SOF_MARKERS:
            if pos + 9 > end:
                break
            height = (data[pos + 5] << 8) | data[pos + 6]
            width = (data[pos + 7] << 8) | data[pos + 8]
            return width, height
        pos += 2 + length
    raise FrameError("corrupt", "no JPEG frame header (SOF) found before the image data")


def decode_jpeg(payload: bytes | bytearray | memoryview, limits: FrameLimits) -> U8:
    """Validate and decode one JPEG frame to a BGR uint8 image (height, width, 3).

    Raises :class:`FrameError` with reason ``empty``, ``too_large``, ``not_jpeg``,
    ``truncated``, ``bad_size`` or ``corrupt``.
    """
    data = memoryview(payload).cast("B")
    size = len(data)
    if size == 0:
        raise FrameError("empty", "the frame payload is empty")
    if size > limits.max_bytes:
        raise FrameError("too_large", f"{size} bytes is above max_bytes = {limits.max_bytes}")
    if bytes(data[:2]) != _SOI:
        raise FrameError("not_jpeg", f"payload starts with {bytes(data[:4]).hex()}, not FFD8")
    # some encoders pad after the end-of-image marker; tolerate NUL padding only
    last = size
    while last > 2 and data[last - 1] == 0:
        last -= 1
    if last < 4 or bytes(data[last - 2 : last]) != _EOI:
        raise FrameError("truncated", f"no end-of-image marker (FFD9) after {size} bytes")
    width, height = jpeg_size(data)
    if width == 0 or height == 0 or width < limits.min_width or height < limits.min_height:
        raise FrameError(
            "bad_size",
            f"{width}x{height} is below the minimum {limits.min_width}x{limits.min_height}",
        )
    if width > limits.max_width or height > limits.max_height:
        raise FrameError(
            "too_large",
            f"{width}x{height} is above max_width x max_height = "
            f"{limits.max_width}x{limits.max_height}",
        )
    buf = np.frombuffer(data[:last], dtype=np.uint8)
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise FrameError("corrupt", f"OpenCV could not decode the JPEG: {exc}") from exc
    if image is None:
        raise FrameError("corrupt", "OpenCV could not decode the JPEG data")
    if image.shape[:2] != (height, width) or image.ndim != 3 or image.shape[2] != 3:
        raise FrameError(
            "corrupt",
            f"decoded {image.shape} but the header announces {width}x{height}x3",
        )
    return np.asarray(image, dtype=np.uint8)


class Normaliser:
    """Resizes a frame into one input slot (letterbox or stretch, per :class:`InputSpec`) with a
    precomputed per-channel affine map ``(x - mean) / std`` in the model's channel order.

    Stateless after construction, so one instance may serve several decode threads at once.
    """

    __slots__ = ("_offset", "_pad", "_scale", "_spec", "_swap", "height", "width")

    def __init__(self, spec: InputSpec):
        self._spec = spec
        self.width = spec.width
        self.height = spec.height
        self._swap = spec.channel_order == "RGB"
        std = np.asarray(spec.std, np.float32)
        mean = np.asarray(spec.mean, np.float32)
        self._scale = (1.0 / std).reshape(3, 1, 1).astype(np.float32)
        self._offset = (-mean / std).reshape(3, 1, 1)
        # the padding, normalised like a pixel of that value (mean/std are in channel_order)
        self._pad = ((np.float32(spec.pad_value) - mean) / std).reshape(3, 1, 1)

    @property
    def spec(self) -> InputSpec:
        return self._spec

    def __call__(self, image: U8, out: F32) -> None:
        """Write ``image`` (H, W, 3 BGR uint8) into ``out`` (3, height, width float32)."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
        if out.shape != (3, self.height, self.width) or out.dtype != np.float32:
            raise ValueError(
                f"batch slot has shape {out.shape} {out.dtype}, expected "
                f"(3, {self.height}, {self.width}) float32"
            )
        place = place_frames(self._spec, (image.shape[1], image.shape[0]))
        width, height = (int(v) for v in place.size[0])
        left, top = (int(v) for v in place.offset[0])
        resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        chw = resized.transpose(2, 0, 1)
        if self._swap:
            chw = chw[::-1]
        right, bottom = left + width, top + height
        region = out[:, top:bottom, left:right]
        # one fused pass: uint8 * float32 -> float32 written straight into the slot
        np.multiply(chw, self._scale, out=region)
        region += self._offset
        # letterbox bands (empty slices when the frame fills the input): always rewritten, a
        # reused slot may hold a frame of another shape
        out[:, :top] = self._pad
        out[:, bottom:] = self._pad
        out[:, top:bottom, :left] = self._pad
        out[:, top:bottom, right:] = self._pad


def resize_normalise_into(image: U8, out: F32, spec: InputSpec) -> None:
    """Fit ``image`` to the model input (letterbox or stretch, per ``spec.resize``) and write
    it normalised into the slot ``out``.

    For a hot loop build one :class:`Normaliser` and call it instead.
    """
    Normaliser(spec)(image, out)


class FrameBatch:
    """A preallocated NCHW float32 input tensor plus the original size of each used slot.

    Slots are filled in order; a slot counts as used only once it has been completely written,
    so a frame that fails to decode never leaves stale pixels of an earlier frame in the batch.
    Not thread-safe: one owner fills it (decoding itself may happen in other threads).
    """

    def __init__(self, capacity: int, spec: InputSpec):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._normalise = Normaliser(spec)
        self._tensor: F32 = np.empty((capacity, 3, spec.height, spec.width), np.float32)
        self._sizes = np.zeros((capacity, 2), np.int64)
        self._count = 0

    @property
    def capacity(self) -> int:
        return int(self._tensor.shape[0])

    def __len__(self) -> int:
        return self._count

    @property
    def full(self) -> bool:
        return self._count == self.capacity

    @property
    def tensor(self) -> F32:
        """The used slots, (n, 3, H, W); a view, valid until the next :meth:`clear`."""
        return self._tensor[: self._count]

    @property
    def frame_sizes(self) -> NDArray[np.int64]:
        """(n, 2) original (width, height) of each used slot."""
        return self._sizes[: self._count]

    def add_image(self, image: U8) -> int:
        """Resize/normalise a decoded BGR image into the next slot; returns its index."""
        if self.full:
            raise IndexError(f"the batch is full ({self.capacity} frames); infer and clear it")
        slot = self._count
        self._normalise(image, self._tensor[slot])
        self._sizes[slot] = (image.shape[1], image.shape[0])
        self._count = slot + 1
        return slot

    def add_jpeg(self, payload: bytes | bytearray | memoryview, limits: FrameLimits) -> int:
        """Decode and add one JPEG; raises :class:`FrameError` and leaves the batch unchanged."""
        return self.add_image(decode_jpeg(payload, limits))

    def clear(self) -> None:
        self._count = 0
