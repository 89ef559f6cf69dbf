"""Clocks injected into plugins and components, so that time is testable."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """Where a component reads the time from.

    ``time()`` is wall-clock seconds since the epoch (for event time and envelopes);
    ``monotonic()`` never goes backwards (for timeouts and rates).
    """

    def time(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to; for tests and the plugin harness."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._mono = 0.0

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a ManualClock cannot go backwards")
        self._now += seconds
        self._mono += seconds

    def set(self, now: float) -> None:
        """Jump the wall clock to ``now`` (monotonic time moves by the same amount, never back)."""
        self._mono += max(0.0, now - self._now)
        self._now = now
