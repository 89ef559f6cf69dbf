"""The work callers hand to the spool's writer thread, and the queue they hand it through."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from edge_runtime.types import Envelope
from edge_runtime.uplink.spool._encode import Encoded

__all__ = ["Ack", "Append", "Call", "Gate", "Op", "new_future"]


@dataclass(slots=True, eq=False)
class Append:
    """Envelopes (or summaries and their ``wrap``) to store; encoded by the writer."""

    items: Sequence[Any]
    wrap: Callable[[Any, int], Envelope] | None
    priority: int | None
    future: Future[range]
    enqueued: float  # perf_counter when it was queued
    encoded: Encoded | None = None  # set by the writer, with its sequence numbers


@dataclass(slots=True, eq=False)
class Ack:
    """Records the core acknowledged: they are deleted."""

    ids: list[int]
    future: Future[int]
    enqueued: float


@dataclass(slots=True, eq=False)
class Call:
    """Any other work (leases, releases, maintenance, the clean close)."""

    fn: Callable[[], Any]
    future: Future[Any]
    stop: bool = False


Op = Append | Ack | Call


def new_future() -> Future[Any]:
    future: Future[Any] = Future()
    future.set_running_or_notify_cancel()  # submitted work runs to the end; it cannot be undone
    return future


class Gate:
    """What submitters and the writer share: the queue, and whether it takes work."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Op] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.accepting = False
        self.broken: str | None = None
