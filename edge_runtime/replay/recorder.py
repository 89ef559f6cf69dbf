"""Record live MQTT traffic to a recording file (``edge-runtime record``).

The recorder is an ordinary subscriber :class:`~edge_runtime.mqtt.MqttLink`: every message's
topic, payload, QoS, retain flag and receive time goes to a :class:`RecordingWriter`.  Records
reach the OS at least once a second and the disk (fsync) every few seconds and at the end; a
stop (limit reached, ``stop`` event, Ctrl-C, task cancelled) closes the file cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge_runtime.errors import TransportError
from edge_runtime.mqtt.config import BrokerConfig
from edge_runtime.mqtt.link import MqttLink
from edge_runtime.replay.format import RecordingHeader, RecordingWriter
from edge_runtime.types import RawMessage

__all__ = ["RecordProgress", "RecordResult", "StopReason", "record"]

log = logging.getLogger(__name__)

StopReason = Literal["max_bytes", "max_seconds", "max_messages", "stopped", "cancelled"]


@dataclass(frozen=True, slots=True)
class RecordProgress:
    """Where a recording stands; handed to the ``progress`` callback about once a second."""

    messages: int
    bytes: int
    elapsed_s: float
    rate: float
    """Messages per second over the last interval."""
    connected: bool


@dataclass(frozen=True, slots=True)
class RecordResult:
    path: Path
    messages: int
    bytes: int
    elapsed_s: float
    stopped_by: StopReason


async def record(
    broker: BrokerConfig,
    filters: Sequence[str],
    path: str | os.PathLike[str],
    *,
    max_bytes: int | None = None,
    max_seconds: float | None = None,
    max_messages: int | None = None,
    progress: Callable[[RecordProgress], None] | None = None,
    stop: asyncio.Event | None = None,
    started: asyncio.Event | None = None,
    qos: int = 1,
    append: bool = False,
    overwrite: bool = False,
    notes: str = "",
    client_id: str | None = None,
    connect_timeout_s: float = 10.0,
    progress_interval_s: float = 1.0,
    sync_interval_s: float = 5.0,
) -> RecordResult:
    """Subscribe to ``filters`` on ``broker`` and record every message to ``path``.

    ``started`` is set once the broker has accepted the subscriptions; ``progress`` gets a
    :class:`RecordProgress` every ``progress_interval_s``.  Stops at the first limit reached
    (``max_seconds`` counts from the first connection), when ``stop`` is set, or when the task
    is cancelled (the file is closed cleanly, then the cancellation goes on).  A lost broker
    connection is retried (messages published meanwhile are not recorded).  Raises
    :class:`TransportError` when the broker cannot be reached within ``connect_timeout_s``.
    """
    if not filters:
        raise ValueError("record needs at least one topic filter (e.g. '#')")
    header = RecordingHeader.new(
        source=f"mqtt://{broker.host}:{broker.port}",
        filters=filters,
        notes=notes,
        meta={
            "qos": qos,
            "max_bytes": max_bytes,
            "max_seconds": max_seconds,
            "max_messages": max_messages,
        },
    )
    writer = RecordingWriter(path, header, append=append, overwrite=overwrite)
    done = asyncio.Event()
    why: list[StopReason] = []

    def finish(reason: StopReason) -> None:
        if not done.is_set():
            why.append(reason)
            done.set()

    def sink(message: RawMessage) -> None:
        if done.is_set():
            return
        if not writer.write(message, max_bytes=max_bytes):
            finish("max_bytes")
        elif max_messages is not None and writer.count >= max_messages:
            finish("max_messages")

    link = MqttLink(
        # A recorder wants what is published from now on, not a stale persistent session.
        broker.model_copy(update={"clean_start": True}),
        client_id=client_id or f"edge-recorder-{uuid.uuid4().hex[:8]}",
        role="recorded",
        subscriptions=filters,
        qos=qos,
        sink=sink,
    )
    began = time.monotonic()
    try:
        async with link:
            try:
                await asyncio.wait_for(link.wait_connected(), connect_timeout_s)
            except TimeoutError as exc:
                raise TransportError(
                    f"cannot reach the broker {broker.host}:{broker.port} to record from "
                    f"({link.last_error or 'no answer'}); check --broker and that it is running"
                ) from exc
            began = time.monotonic()
            if started is not None:
                started.set()
            log.info("recording %s from %s to %s", ", ".join(filters), header.source, path)
            async with asyncio.TaskGroup() as tg:
                ticker = tg.create_task(
                    _tick(
                        writer,
                        link=link,
                        started=began,
                        progress=progress,
                        interval=progress_interval_s,
                        sync_interval=sync_interval_s,
                    ),
                    name="record-progress",
                )
                watchers = [tg.create_task(done.wait(), name="record-limit")]
                if stop is not None:
                    watchers.append(tg.create_task(stop.wait(), name="record-stop"))
                finished, _ = await asyncio.wait(
                    watchers, timeout=max_seconds, return_when=asyncio.FIRST_COMPLETED
                )
                if not done.is_set():
                    finish("stopped" if finished else "max_seconds")
                for task in (ticker, *watchers):
                    task.cancel()
    except asyncio.CancelledError:
        finish("cancelled")
        raise
    finally:
        elapsed = time.monotonic() - began
        # Blocking (fsync): off the event loop, and finished even if we are cancelled again.
        await asyncio.shield(asyncio.to_thread(writer.close))
    reason = why[0] if why else "stopped"
    log.info(
        "recorded %d messages (%d bytes) in %.1fs: %s", writer.count, writer.size, elapsed, reason
    )
    return RecordResult(Path(path), writer.count, writer.size, elapsed, reason)


async def _tick(
    writer: RecordingWriter,
    *,
    link: MqttLink,
    started: float,
    progress: Callable[[RecordProgress], None] | None,
    interval: float,
    sync_interval: float,
) -> None:
    """Flush every interval, fsync every ``sync_interval``, report progress."""
    last_count, last_time, last_sync = writer.count, time.monotonic(), time.monotonic()
    while True:
        await asyncio.sleep(interval)
        writer.flush()
        now = time.monotonic()
        if now - last_sync >= sync_interval:
            last_sync = now
            try:
                await asyncio.to_thread(writer.sync)
            except OSError as exc:  # close() fsyncs again and raises if it still fails
                log.warning("cannot fsync %s: %s", writer.path, exc)
        if progress is not None:
            rate = (writer.count - last_count) / max(1e-9, now - last_time)
            progress(RecordProgress(writer.count, writer.size, now - started, rate, link.is_up))
        last_count, last_time = writer.count, now
