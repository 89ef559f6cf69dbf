"""A recording as a site runtime's message source: ``SiteRuntime(loaded, source=ReplaySource(p))``.

:class:`ReplaySource` yields ``(batch, clock_time)``.  Batches are cut at fixed steps of
recorded time (and at ``batch_max`` messages), never by wall-clock time, and ``clock_time`` is
the recorded time at the end of each batch: the runtime's clock follows the recording, so the
same recording gives the same summaries at any speed.  Reading the file runs in a worker
thread, a few batches ahead of use.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator

from edge_runtime.replay.header import RecordingHeader
from edge_runtime.replay.timeline import (
    PROGRESS_EVERY_S,
    Pacer,
    Recording,
    ReplayProgress,
    ReplayTimeline,
    TimeShift,
    check_speed,
    open_recording,
    progress_at,
    read_ahead,
)
from edge_runtime.types import RawMessage

__all__ = ["ReplaySource"]

_BATCHES_PER_READ = 16


class ReplaySource:
    """A recording as a site runtime's message source: ``async for batch, clock in source``.

    Wire it as ``SiteRuntime(loaded, source=ReplaySource(path, speed=0))``: the runtime
    dispatches each batch through its normal routing, decoders and pipelines, sets its
    (manual) clock to ``clock`` and ticks the pipelines at that time.

    Batches are deterministic: recorded time (after ``time_shift``) is cut into steps of
    ``batch_interval_s`` counted from the first message; a batch holds one step's messages
    (split every ``batch_max`` messages) and its clock time is the end of the step (or, for a
    split-off part, the time of its last message).  When the recording is silent for more than
    a step, one empty batch ticks the pipelines at the start of the step that holds the next
    message.  Times never go backwards (a message recorded out of order is batched with the
    messages around it).  ``speed`` only paces the batches (each is released when its clock
    time is due); 0 or ``inf`` yields as fast as the runtime takes them.

    A time-compressed recording (an importer's ``--compress``: its header's ``time_scale`` says
    how many seconds of the data one recorded second stands for) is expanded back to the data's
    own clock from its first message on, so it yields the summaries of a real-time recording.
    """

    def __init__(
        self,
        recording: Recording,
        *,
        speed: float = 0.0,
        loop: int | None = 1,
        time_shift: TimeShift = "none",
        loop_gap_s: float | None = None,
        batch_interval_s: float = 0.1,
        batch_max: int = 1000,
        progress: Callable[[ReplayProgress], None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        if batch_interval_s <= 0 or batch_max < 1:
            raise ValueError("batch_interval_s must be > 0 and batch_max >= 1")
        check_speed(speed)
        self.reader = open_recording(recording)
        self.speed = speed
        self.batch_interval_s = batch_interval_s
        self.batch_max = batch_max
        self.progress = progress
        self.stop = stop
        self.passes = loop or None
        self.time_shift = time_shift
        self.loop_gap_s = loop_gap_s
        ReplayTimeline(  # checks loop and time_shift now, not at the first iteration
            self.reader, passes=self.passes, time_shift=time_shift, loop_gap_s=loop_gap_s
        )
        self.time_scale = _time_scale(self.reader.header)
        self.messages = 0
        self.batches = 0
        self.clock: float | None = None
        """Clock time of the last batch yielded."""

    @property
    def header(self) -> RecordingHeader:
        return self.reader.header

    def batches_of(
        self, messages: Iterable[RawMessage]
    ) -> Iterator[tuple[list[RawMessage], float]]:
        """The batching on its own (synchronous): ``(batch, clock_time)`` in order."""
        step = self.batch_interval_s
        origin: float | None = None
        edge = 0.0  # end of the current step
        clock = -math.inf  # the latest recorded time seen (never goes back)
        batch: list[RawMessage] = []
        scale = self.time_scale
        for msg in messages:
            t = msg.received_at
            if origin is None:
                origin = t
                edge = origin + step
            if scale != 1.0:
                t = msg.received_at = origin + (t - origin) * scale
            clock = max(clock, t)
            if clock >= edge:
                if batch:
                    yield batch, edge
                    batch = []
                nxt = origin + (math.floor((clock - origin) / step) + 1) * step
                if nxt - edge > step * 1.5:  # silent steps between: one tick before the data
                    yield [], nxt - step
                edge = nxt
            batch.append(msg)
            if len(batch) >= self.batch_max:
                yield batch, clock
                batch = []
        if batch:
            yield batch, edge

    async def __aiter__(self) -> AsyncIterator[tuple[list[RawMessage], float]]:
        """Each iteration replays the recording from its start."""
        line = ReplayTimeline(
            self.reader, passes=self.passes, time_shift=self.time_shift, loop_gap_s=self.loop_gap_s
        )
        self.messages = self.batches = 0
        self.clock = None
        pacer = Pacer(self.speed, self.stop)
        started = last_report = time.monotonic()
        total = 0
        if self.progress is not None:
            total = await asyncio.to_thread(self.reader.count_messages)
        groups = read_ahead(self.batches_of(line), _BATCHES_PER_READ)
        async with contextlib.aclosing(groups):
            async for group in groups:
                for batch, clock in group:
                    await pacer.until(clock)
                    if pacer.stopped():
                        return
                    self.messages += len(batch)
                    self.batches += 1
                    self.clock = clock
                    now = time.monotonic()
                    if self.progress is not None and now - last_report >= PROGRESS_EVERY_S:
                        last_report = now
                        self.progress(
                            progress_at(
                                self.messages,
                                total,
                                self.passes,
                                elapsed=now - started,
                                recorded=clock - (pacer.rec0 or clock),
                                lag=pacer.lag,
                            )
                        )
                    yield batch, clock
                    if not pacer.paced:
                        await asyncio.sleep(0)  # let the runtime's other tasks run between batches
        if self.progress is not None and self.clock is not None:
            self.progress(
                progress_at(
                    self.messages,
                    total,
                    self.passes,
                    elapsed=time.monotonic() - started,
                    recorded=self.clock - (pacer.rec0 or self.clock),
                    lag=0.0,
                )
            )


def _time_scale(header: RecordingHeader) -> float:
    """Seconds of data per recorded second (1 unless the recording was compressed)."""
    scale = header.meta.get("time_scale", 1.0)
    if isinstance(scale, int | float) and math.isfinite(scale) and scale > 0:
        return float(scale)
    return 1.0
