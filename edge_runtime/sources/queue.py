"""The bounded ingest queue between the MQTT link and the pipelines, drained in micro-batches."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from edge_runtime.sources.config import OverflowPolicy
from edge_runtime.types import RawMessage

__all__ = ["IngestQueue"]


class IngestQueue:
    """A bounded FIFO of messages with an explicit overflow policy.

    ``put`` is called once per message from the MQTT client's read callback and does no more
    than an append and a length check; the consumer takes whole micro-batches with
    :meth:`get_batch`: it waits for a first message, then up to ``max_wait`` seconds for the
    batch to fill.

    Overflow: ``drop_oldest`` (keep the freshest data) or ``drop_newest``; each dropped message
    is counted in ``dropped``. There is no blocking policy: the MQTT client reads its socket
    whatever the consumer does, so blocking would only move an unbounded queue elsewhere.
    """

    def __init__(self, capacity: int, overflow: OverflowPolicy) -> None:
        self.capacity = capacity
        self.overflow = overflow
        self.dropped = 0
        self._items: deque[RawMessage] = deque()
        self._want = 1
        self._ready = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: RawMessage) -> None:
        if self._closed:
            return  # stopping: left unacknowledged, a persistent session gets it again
        items = self._items
        if len(items) >= self.capacity:
            self.dropped += 1
            if self.overflow == "drop_newest":
                return
            items.popleft()
        items.append(item)
        if len(items) >= self._want:
            self._ready.set()

    def close(self) -> None:
        """Stop taking messages and wake a waiting consumer; ``get_batch`` then returns what
        is left, then empty lists."""
        self._closed = True
        self._ready.set()

    async def get_batch(self, max_items: int, max_wait: float) -> list[RawMessage]:
        items = self._items
        while not items and not self._closed:
            self._want = 1
            self._ready.clear()
            await self._ready.wait()
        if len(items) < max_items and max_wait > 0 and not self._closed:
            self._want = max_items
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), max_wait)
        self._want = 1
        n = min(max_items, len(items))
        return [items.popleft() for _ in range(n)]
