"""The ``window`` table: how a window store cuts event time into windows and treats late data."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from edge_runtime.aggregation.stats import ALL_STATS, StatName

__all__ = ["LatePolicy", "WindowKind", "WindowSpec"]

WindowKind = Literal["tumbling", "hopping"]
LatePolicy = Literal["drop", "correct"]

MAX_WINDOWS_PER_READING = 1000
_REL_TOL = 1e-9


class WindowSpec(BaseModel):
    """Windows ``[offset + k·hop, offset + k·hop + size)`` in event time, per key.

    A window closes (and its summary is emitted) when the watermark, the largest event time
    seen minus ``allowed_lateness_s``, reaches its end.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: WindowKind = Field(
        default="tumbling",
        description="'tumbling': back-to-back windows of size_s, each reading in exactly one; "
        "'hopping': windows of size_s starting every hop_s, each reading in size_s/hop_s of them.",
    )
    size_s: float = Field(
        default=60.0, gt=0, description="Length of a window in seconds of event time."
    )
    hop_s: float | None = Field(
        default=None,
        gt=0,
        validate_default=True,
        description="Hopping windows only: seconds between the starts of successive windows. "
        "size_s must be a whole multiple of it. Leave unset for tumbling windows.",
    )
    offset_s: float = Field(
        default=0.0,
        ge=0,
        description="Shift of the window grid from the Unix epoch, in seconds (e.g. 43200 with "
        "size_s 86400 makes days run from noon UTC). Must be smaller than the hop (or size).",
    )
    allowed_lateness_s: float = Field(
        default=5.0,
        ge=0,
        description="How far event time may run behind the newest reading before a window "
        "closes: a window closes when (newest event time - allowed_lateness_s) >= its end.",
    )
    late_policy: LatePolicy = Field(
        default="drop",
        description="What to do with a reading whose window has already closed: 'drop' it "
        "(counted as late_dropped) or 'correct' the window and emit a correction summary.",
    )
    correction_horizon_s: float = Field(
        default=3600.0,
        ge=0,
        description="late_policy 'correct' only: how long after a window's end (in event time) "
        "its readings are kept so that late readings can correct it; later ones are dropped.",
    )
    idle_timeout_s: float | None = Field(
        default=60.0,
        gt=0,
        description="When no reading has arrived for this many seconds of processing time, the "
        "watermark moves on with the clock so that open windows still close. null: never.",
    )
    max_future_s: float | None = Field(
        default=300.0,
        ge=0,
        description="Readings stamped more than this many seconds ahead of the site clock are "
        "dropped (counted as future_dropped). null: accept any future time.",
    )
    max_open_windows: int = Field(
        default=100_000,
        ge=1,
        description="Memory bound: at most this many (key, window) pairs are open at once; "
        "beyond it the oldest windows are closed early (counted as forced_close).",
    )
    stats: list[StatName] = Field(
        default_factory=lambda: list(ALL_STATS),
        min_length=1,
        description="Statistics in each summary, from: count, missing, sum, min, max, mean, "
        "stddev (population), p50, p95, p99. Default: all of them.",
    )

    @field_validator("hop_s")
    @classmethod
    def _check_hop(cls, hop: float | None, info: ValidationInfo) -> float | None:
        kind = info.data.get("kind")
        size = info.data.get("size_s")
        if kind == "tumbling":
            if hop is not None and size is not None and not _close(hop, size):
                raise ValueError(
                    "hop_s is only used by hopping windows: remove it, or set kind = 'hopping'"
                )
            return None
        if hop is None:
            raise ValueError("hopping windows need hop_s: set it to the seconds between starts")
        if size is None:
            return hop
        if hop > size:
            raise ValueError(f"hop_s ({hop:g}) must not exceed size_s ({size:g}); lower it")
        per_reading = round(size / hop)
        if not _close(per_reading * hop, size):
            raise ValueError(
                f"size_s ({size:g}) must be a whole multiple of hop_s ({hop:g}); choose a hop_s "
                f"that divides it, e.g. {' or '.join(_dividing_hops(size, hop))}"
            )
        if per_reading > MAX_WINDOWS_PER_READING:
            raise ValueError(
                f"size_s / hop_s = {per_reading} windows per reading; at most "
                f"{MAX_WINDOWS_PER_READING} are supported: raise hop_s"
            )
        return hop

    @field_validator("offset_s")
    @classmethod
    def _check_offset(cls, offset: float, info: ValidationInfo) -> float:
        step = info.data.get("hop_s") or info.data.get("size_s")
        if step is not None and offset >= step:
            raise ValueError(
                f"offset_s ({offset:g}) must be smaller than the window step ({step:g}); the grid "
                f"repeats every step, so use offset_s = {offset % step:g}"
            )
        return offset

    @field_validator("stats")
    @classmethod
    def _check_stats(cls, stats: list[StatName]) -> list[StatName]:
        doubled = sorted({s for s in stats if stats.count(s) > 1})
        if doubled:
            raise ValueError(f"{doubled} listed more than once; list each statistic once")
        return stats

    @property
    def hop(self) -> float:
        """Seconds between window starts (the size, for tumbling windows)."""
        return self.hop_s if self.hop_s is not None else self.size_s

    @property
    def windows_per_reading(self) -> int:
        return round(self.size_s / self.hop)


def _dividing_hops(size: float, hop: float) -> list[str]:
    """The accepted hop_s values nearest to ``hop`` (one below, one above), written as a user
    would type them; a value is offered only if it passes the check above as written."""
    below: str | None = None
    above: str | None = None
    for n in range(1, MAX_WINDOWS_PER_READING + 1):
        text = f"{size / n:g}"
        candidate = float(text)
        if not _close(round(size / candidate) * candidate, size):
            continue  # size / n has no short exact form (20 / 3 = 6.66667 is not accepted)
        if candidate <= hop:
            below = below or text
        else:
            above = text
    return [t for t in (below, above) if t is not None]


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _REL_TOL * max(abs(a), abs(b))
