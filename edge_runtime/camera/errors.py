"""Errors raised by the inference subsystem.

:class:`InferenceError` is the subsystem's base; it derives from the project root
:class:`edge_runtime.errors.EdgeRuntimeError`.  Bad frames from the network raise
:class:`FrameError` with a stable ``reason`` label that callers count and set aside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from edge_runtime.errors import EdgeRuntimeError

__all__ = [
    "FRAME_ERROR_REASONS",
    "FrameError",
    "FrameErrorReason",
    "InferenceError",
    "ModelChecksumError",
    "ModelLoadError",
]

FrameErrorReason = Literal["empty", "too_large", "not_jpeg", "truncated", "corrupt", "bad_size"]
FRAME_ERROR_REASONS: tuple[FrameErrorReason, ...] = (
    "empty",
    "too_large",
    "not_jpeg",
    "truncated",
    "corrupt",
    "bad_size",
)


class InferenceError(EdgeRuntimeError):
    """Base of the errors raised by :mod:`edge_runtime.camera`."""


class ModelLoadError(InferenceError):
    """A model file is missing, unreadable or not usable by onnxruntime; ``path`` names it."""

    def __init__(self, path: Path, message: str):
        self.path = path
        super().__init__(f"model {path}: {message}")


class ModelChecksumError(ModelLoadError):
    """The model file's sha256 differs from the one declared in the configuration."""

    def __init__(self, path: Path, expected: str, actual: str):
        self.expected = expected
        self.actual = actual
        super().__init__(
            path,
            f"sha256 mismatch: the configuration declares {expected} but the file has {actual}. "
            "Replace the file with the declared one, or, if the new file is intended, set "
            f'sha256 = "{actual}" in the model declaration.',
        )


class FrameError(InferenceError):
    """A frame payload was rejected before inference.

    ``reason`` is a short stable label (one of :data:`FRAME_ERROR_REASONS`) meant for metrics
    labels; the message carries the detail.
    """

    def __init__(self, reason: FrameErrorReason, message: str):
        self.reason: FrameErrorReason = reason
        super().__init__(f"{reason}: {message}")
