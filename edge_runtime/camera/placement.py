"""Where a frame lands inside the model input, and mapping boxes back out of it.

A frame of ``w x h`` pixels becomes one ``W x H`` slot of the input tensor (``InputSpec``):

- ``letterbox``: scaled by ``min(W / w, H / h)`` so that its aspect ratio is kept, rounded to
  whole pixels, and centred; the bands left over are padded (``InputSpec.pad_value``);
- ``stretch``: resized to ``W x H``, each axis by its own factor.

The placement is a pure function of the frame size and the input spec, so the preprocessing
(:class:`~edge_runtime.camera.preprocess.Normaliser`) and the box decoder compute the same numbers
independently and nothing but the frame sizes has to travel with a batch.  Everything here is
vectorised over the frames of a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edge_runtime.camera.model_config import InputSpec

__all__ = ["Placement", "place_frames"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Placement:
    """Per frame (rows): ``frame`` (width, height) in frame pixels; ``size`` (width, height)
    of the resized frame and ``offset`` (left, top) of its top-left corner, in input pixels;
    ``scale`` (x, y) input pixels per frame pixel (``size / frame``)."""

    frame: I64
    size: I64
    offset: I64
    scale: F64

    def content_box(self) -> F64:
        """(n, 4) x1, y1, x2, y2 of the frame's picture inside the input, in input pixels."""
        return np.concatenate([self.offset, self.offset + self.size], axis=1).astype(np.float64)

    def clip_to_content(self, boxes: NDArray[np.floating], image_idx: I64) -> None:
        """Clip xyxy ``boxes`` (in input pixels) in place to their frame's picture, so a box
        never reaches into the letterbox padding; ``image_idx`` is each box's frame."""
        content = self.content_box()[image_idx]
        np.clip(boxes[:, 0::2], content[:, 0:1], content[:, 2:3], out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], content[:, 1:2], content[:, 3:4], out=boxes[:, 1::2])

    def to_frame(self, boxes: NDArray[np.floating], image_idx: I64) -> NDArray[np.float32]:
        """xyxy boxes in input pixels -> frame pixels (padding offset removed, divided by the
        scale, clipped to the frame), for all boxes at once; ``image_idx`` is each box's
        frame."""
        offset = np.tile(self.offset, 2)[image_idx]
        scale = np.tile(self.scale, 2)[image_idx]
        limit = np.tile(self.frame, 2)[image_idx]
        out = (boxes.astype(np.float64) - offset) / scale
        np.clip(out, 0.0, limit, out=out)
        return out.astype(np.float32)

    def to_input(self, boxes: NDArray[np.floating], image_idx: I64) -> NDArray[np.float32]:
        """The inverse of :meth:`to_frame` (without clipping): frame pixels -> input pixels."""
        offset = np.tile(self.offset, 2)[image_idx]
        scale = np.tile(self.scale, 2)[image_idx]
        return (boxes.astype(np.float64) * scale + offset).astype(np.float32)


def place_frames(spec: InputSpec, frame_sizes: ArrayLike) -> Placement:
    """The placement of frames of ``frame_sizes`` ((n, 2) width, height) in ``spec``'s input."""
    frame = np.asarray(frame_sizes, np.int64).reshape(-1, 2)
    if frame.shape[0] and int(frame.min()) < 1:
        raise ValueError(f"frame sizes must be at least 1x1 pixels, got {frame.tolist()}")
    target = np.array([spec.width, spec.height], np.int64)
    if spec.resize == "stretch":
        size = np.broadcast_to(target, frame.shape).copy()
        offset = np.zeros_like(frame)
    else:
        fit = np.min(target / frame, axis=1, keepdims=True)
        size = np.clip(np.rint(frame * fit), 1, target).astype(np.int64)
        offset = (target - size) // 2
    return Placement(frame=frame, size=size, offset=offset, scale=size / frame)
