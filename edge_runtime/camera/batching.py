"""Preallocated batch tensors and filling them from frames in decode threads.

:func:`prepare_batch` decodes the JPEGs of a batch in a thread pool (``cv2.imdecode`` and
``cv2.resize`` release the GIL), each thread writing its frame resized (letterboxed or stretched,
as the model's ``InputSpec.resize`` says) and normalised straight into its slot of a
:class:`BatchBuffer`; the frame sizes kept beside the tensor are all the box decoder needs to map
boxes back to frame pixels.  A frame that fails (corrupt, truncated, not a JPEG,
wrong size) is recorded with its reason and its slot is dropped from the batch by moving the
later good slots down, so the tensor handed to inference holds exactly the good frames of
*this* batch and never pixels left over from an earlier one.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge_runtime.camera.boxes import Detections
from edge_runtime.camera.errors import FrameError
from edge_runtime.camera.frames import Frame
from edge_runtime.camera.model_config import FrameLimits, InputSpec
from edge_runtime.camera.preprocess import Normaliser, decode_jpeg

__all__ = ["BatchBuffer", "FrameResult", "PreparedBatch", "fill_slot", "prepare_batch"]

F32 = NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class FrameResult:
    """What became of one frame of a batch: its detections (boxes in frame pixels) and frame
    size (width, height), or the reason it was rejected."""

    frame: Frame
    detections: Detections | None = None
    frame_size: tuple[int, int] | None = None
    error: str | None = None


class BatchBuffer:
    """An NCHW float32 tensor for ``capacity`` frames plus their original sizes; reused."""

    def __init__(self, capacity: int, spec: InputSpec) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.normalise = Normaliser(spec)
        self.tensor: F32 = np.zeros((capacity, 3, spec.height, spec.width), np.float32)
        self.sizes = np.zeros((capacity, 2), np.int64)

    @property
    def capacity(self) -> int:
        return int(self.tensor.shape[0])


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A filled buffer: ``tensor[:n]`` and ``sizes[:n]`` hold the frames ``good`` (in that
    order); ``rejected`` are the frames that failed with their reasons."""

    seq: int
    buffer: BatchBuffer
    good: tuple[Frame, ...]
    rejected: tuple[FrameResult, ...]

    @property
    def tensor(self) -> F32:
        return self.buffer.tensor[: len(self.good)]

    @property
    def sizes(self) -> NDArray[np.int64]:
        return self.buffer.sizes[: len(self.good)]


def fill_slot(frame: Frame, buffer: BatchBuffer, slot: int, limits: FrameLimits) -> None:
    """Decode ``frame`` (if compressed) and write it into ``slot``; runs in a worker thread.

    Raises :class:`FrameError` before touching the slot when the frame is unusable.
    """
    if frame.image is not None:
        image = frame.image
    elif frame.jpeg is not None:
        image = decode_jpeg(frame.jpeg, limits)
    else:
        raise FrameError("empty", "the frame carries neither JPEG bytes nor an image")
    buffer.normalise(image, buffer.tensor[slot])
    buffer.sizes[slot] = (image.shape[1], image.shape[0])


async def prepare_batch(
    seq: int,
    frames: list[Frame],
    buffer: BatchBuffer,
    executor: Executor,
    limits: FrameLimits,
) -> PreparedBatch:
    """Fill ``buffer`` with ``frames`` using ``executor``'s threads; compact out bad frames."""
    if len(frames) > buffer.capacity:
        raise ValueError(f"{len(frames)} frames do not fit a buffer of {buffer.capacity}")
    loop = asyncio.get_running_loop()
    outcomes = await asyncio.gather(
        *(
            loop.run_in_executor(executor, fill_slot, frame, buffer, i, limits)
            for i, frame in enumerate(frames)
        ),
        return_exceptions=True,
    )
    good: list[Frame] = []
    rejected: list[FrameResult] = []
    for slot, (frame, outcome) in enumerate(zip(frames, outcomes, strict=True)):
        if isinstance(outcome, FrameError):
            rejected.append(FrameResult(frame, error=outcome.reason))
            continue
        if isinstance(outcome, BaseException):
            raise outcome  # a bug, not a bad frame: let it surface
        target = len(good)
        if target != slot:  # an earlier frame failed: move this one down over its slot
            buffer.tensor[target] = buffer.tensor[slot]
            buffer.sizes[target] = buffer.sizes[slot]
        good.append(frame)
    return PreparedBatch(seq, buffer, tuple(good), tuple(rejected))
