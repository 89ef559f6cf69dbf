"""The one retry rule of the runtime: exponential backoff with a cap and jitter.

Every reconnect loop (the MQTT links, the uplink sender, camera captures) waits
``uniform(d / 2, d)`` before attempt ``n``, where ``d = min(maximum, minimum * 2**n)``: the delay
doubles per failure up to the cap, and the random half spreads sites that lost the same broker
at the same moment so that they do not all come back together.
"""

from __future__ import annotations

import random

__all__ = ["Backoff", "backoff_delay"]


def backoff_delay(attempt: int, minimum: float, maximum: float) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
    ceiling = min(maximum, minimum * (2 ** min(max(attempt, 0), 30)))
    return random.uniform(ceiling / 2, ceiling)


class Backoff:
    """Counts consecutive failures; :meth:`next_delay` grows with them, :meth:`reset` after a
    success starts again from ``minimum``."""

    def __init__(self, minimum: float, maximum: float) -> None:
        if not 0 < minimum <= maximum:
            raise ValueError(f"backoff needs 0 < minimum <= maximum, got {minimum}, {maximum}")
        self.minimum = minimum
        self.maximum = maximum
        self.attempt = 0

    def next_delay(self) -> float:
        delay = backoff_delay(self.attempt, self.minimum, self.maximum)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
