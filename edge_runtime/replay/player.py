"""Play a recording back: to a broker (``edge-runtime replay``), or straight into a site runtime.

Both read the same timeline: the recording's messages in file order, their receive times
shifted (``time_shift``) and, for ``loop`` passes, each pass moved on by the recording's span
plus one mean message interval, so recorded time keeps going forward.  Payloads are never
touched: a replayed message is byte-for-byte the recorded one, with its QoS and retain flag.

* :func:`replay_to_broker` publishes on a schedule (``speed`` 1 = as recorded, N = N times
  faster, 0 or ``inf`` = as fast as the broker takes them); the first message goes out at once.
* :class:`ReplaySource` yields ``(batch, clock_time)`` for
  ``SiteRuntime(loaded, source=ReplaySource(...))``.  Batches are cut at fixed steps of recorded
  time (and at ``batch_max`` messages), never by wall-clock time, and ``clock_time`` is the
  recorded time at the end of each batch: the runtime's clock follows the recording, so the same
  recording gives the same summaries at any speed.

Reading the file runs in a worker thread, a few thousand records at a time, ahead of use.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import logging
import math
import os
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, TypeVar

from edge_runtime.errors import TransportError
from edge_runtime.mqtt.config import BrokerConfig
from edge_runtime.mqtt.link import MqttLink
from edge_runtime.replay.format import RecordingHeader, RecordingReader
from edge_runtime.types import RawMessage

__all__ = [
    "ReplayProgress",
    "ReplayResult",
    "ReplaySource",
    "TimeShift",
    "replay_to_broker",
    "timeline",
]

log = logging.getLogger(__name__)

TimeShift = Literal["none", "now"] | float
"""``"none"``: recorded times as they are; ``"now"``: the first message maps to the time the
replay starts; a number: seconds added to every recorded time."""

Recording = RecordingReader | str | os.PathLike[str]
_CHUNK = 4096
_BATCHES_PER_READ = 16
T = TypeVar("T")
_PROGRESS_EVERY_S = 0.2


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


@dataclass(frozen=True, slots=True)
class ReplayResult:
    messages: int
    passes: int
    elapsed_s: float
    recorded_s: float


def _open(recording: Recording) -> RecordingReader:
    return recording if isinstance(recording, RecordingReader) else RecordingReader(recording)


def _paced(speed: float) -> bool:
    if speed < 0 or math.isnan(speed):
        raise ValueError(f"speed must be >= 0 (0 or inf = as fast as possible), not {speed}")
    return 0 < speed < math.inf


class _Timeline:
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
        _Timeline(
            _open(recording), passes=loop or None, time_shift=time_shift, loop_gap_s=loop_gap_s
        )
    )


async def _chunks(source: Iterable[T], size: int = _CHUNK) -> AsyncGenerator[list[T], None]:
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


class _Pacer:
    """Maps recorded time to the wall clock at ``speed`` and sleeps until a time is due."""

    def __init__(self, speed: float, stop: asyncio.Event | None) -> None:
        self.paced = _paced(speed)
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


async def replay_to_broker(
    recording: Recording,
    broker: BrokerConfig,
    *,
    speed: float = 1.0,
    loop: int | None = 1,
    time_shift: TimeShift = "now",
    loop_gap_s: float | None = None,
    topic_prefix: str = "",
    progress: Callable[[ReplayProgress], None] | None = None,
    stop: asyncio.Event | None = None,
    client_id: str | None = None,
    max_inflight: int = 10,
    connect_timeout_s: float = 10.0,
) -> ReplayResult:
    """Publish a recording to ``broker`` with its payloads, QoS and retain flags.

    Messages go out in recorded order, paced at ``speed`` (the first at once); ``loop`` passes
    (None or 0: until ``stop`` is set).  ``topic_prefix`` is put in front of every topic (to
    replay next to live traffic).  QoS 1/2 publishes overlap up to ``max_inflight`` while keeping
    their order (aiomqtt warns above 10 pending publishes).  ``time_shift`` only changes the
    recorded times shown in progress: a broker stamps its own receive times.  Raises
    :class:`TransportError` if the broker cannot be reached or drops the connection.
    """
    _paced(speed)  # a bad speed fails before connecting
    reader = _open(recording)
    line = _Timeline(reader, passes=loop or None, time_shift=time_shift, loop_gap_s=loop_gap_s)
    link = MqttLink(
        broker.model_copy(update={"clean_start": True}),
        client_id=client_id or f"edge-replay-{uuid.uuid4().hex[:8]}",
        role="replay target",
    )
    sent = total = 0
    started = time.monotonic()
    last_report = started
    recorded = 0.0
    async with link:
        try:
            await asyncio.wait_for(link.wait_connected(), connect_timeout_s)
        except TimeoutError as exc:
            raise TransportError(
                f"cannot reach the broker {broker.host}:{broker.port} to replay to "
                f"({link.last_error or 'no answer'}); check --broker and that it is running"
            ) from exc
        pacer = _Pacer(speed, stop)
        slots = asyncio.Semaphore(max_inflight)
        total = await asyncio.to_thread(reader.count_messages)

        async def send(msg: RawMessage) -> None:
            try:
                await link.publish(
                    topic_prefix + msg.topic, msg.payload, msg.qos, **_retain(msg.retain)
                )
            finally:
                slots.release()

        try:
            async with asyncio.TaskGroup() as tg, contextlib.aclosing(_chunks(line)) as chunks:
                async for chunk in chunks:
                    for msg in chunk:
                        await pacer.until(msg.received_at)
                        if pacer.stopped():
                            break
                        await slots.acquire()
                        # Tasks start in creation order and publish in their first step, so
                        # the broker gets messages in recorded order.
                        tg.create_task(send(msg), name="replay-publish")
                        sent += 1
                        recorded = msg.received_at - (pacer.rec0 or msg.received_at)
                        now = time.monotonic()
                        if progress is not None and now - last_report >= _PROGRESS_EVERY_S:
                            last_report = now
                            progress(
                                _progress(
                                    sent,
                                    total,
                                    line.passes,
                                    elapsed=now - started,
                                    recorded=recorded,
                                    lag=pacer.lag,
                                )
                            )
                    if pacer.stopped():
                        break
        except* TransportError as group:
            first = group.exceptions[0]
            raise TransportError(f"replay stopped after {sent} messages: {first}") from first
    elapsed = time.monotonic() - started
    if progress is not None:
        progress(_progress(sent, total, line.passes, elapsed=elapsed, recorded=recorded, lag=0.0))
    return ReplayResult(sent, sent // total if total else 0, elapsed, recorded)


def _retain(retain: bool) -> dict[str, bool]:
    """``retain=`` for MqttLink.publish, only when set (see RETAIN_SUPPORTED)."""
    if not retain:
        return {}
    if not RETAIN_SUPPORTED:
        _warn_retain_lost()
        return {}
    return {"retain": True}


@functools.cache
def _warn_retain_lost() -> None:
    log.warning(
        "replaying retained messages without their retain flag: MqttLink.publish has no "
        "retain parameter in this version"
    )


def _link_can_retain() -> bool:
    return "retain" in inspect.signature(MqttLink.publish).parameters


RETAIN_SUPPORTED = _link_can_retain()
"""Whether :meth:`MqttLink.publish` takes ``retain=`` (needed to replay retained messages)."""


def _progress(
    sent: int,
    per_pass: int,
    passes: int | None,
    *,
    elapsed: float,
    recorded: float,
    lag: float,
) -> ReplayProgress:
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
        _paced(speed)
        self.reader = _open(recording)
        self.speed = speed
        self.batch_interval_s = batch_interval_s
        self.batch_max = batch_max
        self.progress = progress
        self.stop = stop
        self.passes = loop or None
        self.time_shift = time_shift
        self.loop_gap_s = loop_gap_s
        _Timeline(self.reader, passes=self.passes, time_shift=time_shift, loop_gap_s=loop_gap_s)
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
        for msg in messages:
            t = msg.received_at
            if origin is None:
                origin = t
                edge = origin + step
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
        line = _Timeline(
            self.reader, passes=self.passes, time_shift=self.time_shift, loop_gap_s=self.loop_gap_s
        )
        self.messages = self.batches = 0
        self.clock = None
        pacer = _Pacer(self.speed, self.stop)
        started = last_report = time.monotonic()
        total = 0
        if self.progress is not None:
            total = await asyncio.to_thread(self.reader.count_messages)
        groups = _chunks(self.batches_of(line), _BATCHES_PER_READ)
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
                    if self.progress is not None and now - last_report >= _PROGRESS_EVERY_S:
                        last_report = now
                        self.progress(
                            _progress(
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
                _progress(
                    self.messages,
                    total,
                    self.passes,
                    elapsed=time.monotonic() - started,
                    recorded=self.clock - (pacer.rec0 or self.clock),
                    lag=0.0,
                )
            )
