"""Latency percentiles over a bounded ring of recent samples, and the video stage counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

__all__ = ["LatencyTracker", "VideoStats"]


class LatencyTracker:
    """The last ``capacity`` latency samples (seconds) in a ring; p50/p99 over them."""

    __slots__ = ("_count", "_ring", "total")

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._ring = np.zeros(capacity, np.float64)
        self._count = 0
        self.total = 0

    def __len__(self) -> int:
        return min(self._count, self._ring.shape[0])

    def add(self, seconds: float) -> None:
        self._ring[self._count % self._ring.shape[0]] = seconds
        self._count += 1
        self.total += 1

    def percentiles(self, *qs: float) -> tuple[float, ...]:
        """The requested percentiles (0-100) in seconds; NaN when there are no samples."""
        n = len(self)
        if n == 0:
            return tuple(float("nan") for _ in qs)
        values = np.percentile(self._ring[:n], qs)
        return tuple(float(v) for v in np.atleast_1d(values))

    def clear(self) -> None:
        self._count = 0


@dataclass
class VideoStats:
    """Counters of the video stage (all updated on the event loop).

    ``frames_in`` counts every frame offered; each one then ends as exactly one of
    ``frames_sampled_out`` (over the camera's rate cap), ``frames_skipped`` (replaced in its
    slot by a newer frame before inference took it), ``frames_bad`` (by reason),
    ``frames_inferred`` or ``frames_failed`` (the inference call raised), or is still pending.
    """

    frames_in: int = 0
    frames_sampled_out: int = 0
    frames_skipped: int = 0
    frames_inferred: int = 0
    frames_failed: int = 0
    batches: int = 0
    infer_busy_s: float = 0.0  # summed wall time of inference calls (all workers)
    frames_bad: Counter[str] = field(default_factory=Counter)
    latency: LatencyTracker = field(default_factory=LatencyTracker)

    @property
    def mean_batch(self) -> float:
        return self.frames_inferred / self.batches if self.batches else 0.0
