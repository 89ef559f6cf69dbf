"""The bounded ingest queue between the MQTT link and the pipelines, drained in micro-batches."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from edge_runtime.config.models import OverflowPolicy
from edge_runtime.plugins._types import RawMessage

__all__ = ["IngestQueue"]


class IngestQueue:
    """A bounded FIFO of messages with an explicit overflow policy.

    ``put`` is called once per message from the receive loop and does no more than an append
    and a length check; the consumer takes whole micro-batches with :meth:`get_batch`:
    it waits for a first message, then up to ``max_wait`` seconds for the batch to fill.

    Overflow: ``drop_oldest``/``drop_newest`` count each dropped message in ``dropped``;
    ``block`` makes ``put`` return an awaitable that completes when there is room, so the
    receive loop stops reading and the broker holds the backlog.
    """

    def __init__(self, capacity: int, overflow: OverflowPolicy) -> None:
        self.capacity = capacity
        self.overflow = overflow
        self.dropped = 0
        self.accepted = 0
        self._items: deque[RawMessage] = deque()
        self._want = 1
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: RawMessage) -> asyncio.Future[None] | None:
        items = self._items
        if len(items) >= self.capacity:
            if self.overflow == "drop_newest":
                self.dropped += 1
                return None
            if self.overflow == "drop_oldest":
                items.popleft()
                self.dropped += 1
            else:
                return asyncio.ensure_future(self._put_when_room(item))
        items.append(item)
        self.accepted += 1
        if len(items) >= self._want:
            self._ready.set()
        return None

    async def _put_when_room(self, item: RawMessage) -> None:
        while len(self._items) >= self.capacity:
            self._room.clear()
            await self._room.wait()
        self._items.append(item)
        self.accepted += 1
        if len(self._items) >= self._want:
            self._ready.set()

    def close(self) -> None:
        """Wake a waiting consumer; ``get_batch`` then returns what is left, then empty lists."""
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
        batch = [items.popleft() for _ in range(n)]
        if n:
            self._room.set()
        return batch
