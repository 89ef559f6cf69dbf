"""What both kinds of replay share: the timeline of replayed messages, its pacing against the
wall clock, the read-ahead worker thread and the progress reports.

The timeline is the recording's messages in file order, their receive times shifted
(``time_shift``) and, for ``loop`` passes, each pass moved on by the recording's span plus one
mean message interval, so recorded time keeps going forward.  Payloads are never touched: a
replayed message is byte-for-byte the recorded one, with its QoS and retain flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import time
from collections.abc import AsyncGenerator, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, TypeVar

from edge_runtime.replay.reader import RecordingReader
from edge_runtime.types import RawMessage

__all__ = [
    "PROGRESS_EVERY_S",
    "Pacer",
    "Recording",
    "ReplayProgress",
    "ReplayTimeline",
    "TimeShift",
    "check_speed",
    "open_recording",
    "progress_at",
    "read_ahead",
    "timeline",
]

TimeShift = Literal["none", "now"] | float
"""``"none"``: recorded times as they are; ``"now"``: the first message maps to the time the
replay starts; a number: seconds added to every recorded time."""

Recording = RecordingReader | str | os.PathLike[str]
"""A recording to replay: an open reader or the path of a file."""

PROGRESS_EVERY_S = 0.2
"""How often a replay reports its progress."""

_CHUNK = 4096
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ReplayProgress:
    """Where a replay stands; handed to the ``progress`` callback a few times a second."""

    messages: int
    """Messages published (or yielded) so far, all passes together."""
    pass_index: int
    """The pass in progress, from 0."""
    passes: int | None
    """Passes asked for; None = loop until stopped."""
    fraction: float
    """Share of the current pass done."""
    elapsed_s: float
    recorded_s: float
    """Recorded time covered since the first message."""
    lag_s: float
    """How far behind its schedule the replay is (0 at maximum speed)."""


def open_recording(recording: Recording) -> RecordingReader:
    return recording if isinstance(recording, RecordingReader) else RecordingReader(recording)


def check_speed(speed: float) -> bool:
    """Whether ``speed`` paces the replay (0 and ``inf``: as fast as possible); raises
    :class:`ValueError` for a negative or NaN speed."""
    if speed < 0 or math.isnan(speed):
        raise ValueError(f"speed must be >= 0 (0 or inf = as fast as possible), not {speed}")
    return 0 < speed < math.inf


class ReplayTimeline:
    """The replayed sequence of messages across passes, with shifted receive times."""

    def __init__(
        self,
        reader: RecordingReader,
        *,
        passes: int | None,
        time_shift: TimeShift,
        loop_gap_s: float | None,
    ) -> None:
        if passes is not None and passes < 1:
            raise ValueError("loop must be >= 1 pass (or None/0 for endless)")
        if isinstance(time_shift, str) and time_shift not in ("none", "now"):
            raise ValueError(f"time_shift must be 'none', 'now' or seconds, not {time_shift!r}")
        self.reader = reader
        self.passes = passes
        self.time_shift = time_shift
        self.loop_gap_s = loop_gap_s
        self.pass_index = 0

    def __iter__(self) -> Iterator[RawMessage]:
        offset: float | None = None
        while self.passes is None or self.pass_index < self.passes:
            first = top = None
            count = 0
            for msg in self.reader:
                t = msg.received_at
                if offset is None:
                    shift = self.time_shift
                    offset = (
                        0.0
                        if shift == "none"
                        else time.time() - t
                        if shift == "now"
                        else float(shift)
                    )
                if first is None:
                    first = top = t
                top = max(top, t) if top is not None else t
                count += 1
                msg.received_at = t + offset  # a fresh object: not shared with anyone yet
                yield msg
            if count == 0 or first is None or top is None or offset is None:
                return  # an empty recording: nothing to loop over
            gap = self.loop_gap_s
            if gap is None:
                gap = (top - first) / (count - 1) if count > 1 else 1.0
            offset += (top - first) + max(gap, 1e-6)
            self.pass_index += 1


def timeline(
    recording: Recording,
    *,
    loop: int | None = 1,
    time_shift: TimeShift = "none",
    loop_gap_s: float | None = None,
) -> Iterator[RawMessage]:
    """The messages a replay would send, synchronously (for tests and tools); ``loop`` None
    (or 0) repeats forever."""
    return iter(
        ReplayTimeline(
            open_recording(recording),
            passes=loop or None,
            time_shift=time_shift,
            loop_gap_s=loop_gap_s,
        )
    )


async def read_ahead(source: Iterable[T], size: int = _CHUNK) -> AsyncGenerator[list[T], None]:
    """Pull ``source`` in a worker thread, ``size`` items at a time, one chunk ahead."""
    items = iter(source)

    def take() -> list[T]:
        return list(itertools.islice(items, size))

    ahead = asyncio.ensure_future(asyncio.to_thread(take))
    try:
        while True:
            chunk = await ahead
            if not chunk:
                return
            ahead = asyncio.ensure_future(asyncio.to_thread(take))
            yield chunk
    finally:
        ahead.cancel()  # a read already running in the thread finishes on its own


class Pacer:
    """Maps recorded time to the wall clock at ``speed`` and sleeps until a time is due."""

    def __init__(self, speed: float, stop: asyncio.Event | None) -> None:
        self.paced = check_speed(speed)
        self.speed = speed
        self.stop = stop
        self.loop = asyncio.get_running_loop()
        self.wall0 = self.loop.time()
        self.rec0: float | None = None
        self.lag = 0.0

    async def until(self, recorded: float) -> None:
        if self.rec0 is None:  # the schedule starts with the first message, not before
            self.rec0 = recorded
            self.wall0 = self.loop.time()
        if not self.paced:
            return
        delay = self.wall0 + (recorded - self.rec0) / self.speed - self.loop.time()
        if delay <= 0:
            self.lag = -delay
            return
        self.lag = 0.0
        if self.stop is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)

    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()


def progress_at(
    sent: int,
    per_pass: int,
    passes: int | None,
    *,
    elapsed: float,
    recorded: float,
    lag: float,
) -> ReplayProgress:
    """The progress report after ``sent`` messages of ``per_pass`` per pass."""
    pass_index, done_in_pass = divmod(sent, max(1, per_pass))
    if passes is not None and pass_index >= passes:  # the very end
        pass_index, done_in_pass = passes - 1, per_pass
    return ReplayProgress(
        messages=sent,
        pass_index=pass_index,
        passes=passes,
        fraction=done_in_pass / max(1, per_pass),
        elapsed_s=elapsed,
        recorded_s=recorded,
        lag_s=lag,
    )
