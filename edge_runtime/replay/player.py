"""Play a recording back to a broker (``edge-runtime replay``).

:func:`replay_to_broker` publishes the recording's timeline (:mod:`edge_runtime.replay.timeline`)
on a schedule: ``speed`` 1 = as recorded, N = N times faster, 0 or ``inf`` = as fast as the
broker takes them; the first message goes out at once.  Reading the file runs in a worker
thread, a few thousand records at a time, ahead of use.  To feed a recording straight into a
site runtime instead, see :class:`~edge_runtime.replay.source.ReplaySource`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from edge_runtime.errors import TransportError
from edge_runtime.mqtt.config import BrokerConfig
from edge_runtime.mqtt.link import MqttLink
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

__all__ = ["RETAIN_SUPPORTED", "ReplayResult", "replay_to_broker"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReplayResult:
    messages: int
    passes: int
    elapsed_s: float
    recorded_s: float


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
    check_speed(speed)  # a bad speed fails before connecting
    reader = open_recording(recording)
    line = ReplayTimeline(reader, passes=loop or None, time_shift=time_shift, loop_gap_s=loop_gap_s)
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
        pacer = Pacer(speed, stop)
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
            async with asyncio.TaskGroup() as tg, contextlib.aclosing(read_ahead(line)) as chunks:
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
                        if progress is not None and now - last_report >= PROGRESS_EVERY_S:
                            last_report = now
                            progress(
                                progress_at(
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
        progress(progress_at(sent, total, line.passes, elapsed=elapsed, recorded=recorded, lag=0.0))
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
