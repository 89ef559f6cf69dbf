"""A token bucket: the sender's limit on how fast the backlog is sent (``backlog_rate_per_s``)."""

from __future__ import annotations

from edge_runtime.clock import Clock

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` banked (monotonic clock)."""

    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock.monotonic()

    def available(self) -> float:
        now = self._clock.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        return self._tokens

    def take(self, count: int) -> None:
        self.available()
        self._tokens -= count

    def wait_s(self, count: float) -> float:
        """Seconds until ``count`` tokens are banked."""
        return max(0.0, (min(count, self.burst) - self.available()) / self.rate)
