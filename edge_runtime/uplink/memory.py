"""The in-memory uplink: a bounded retry queue in front of the core broker.

It is the uplink used when the durable spool is disabled. It wraps summaries into envelopes,
packs up to ``max_batch`` into one message, publishes with QoS 1 with up to ``max_in_flight``
messages awaiting their PUBACK, and puts whatever failed back at the head of the queue, in
order, flagged as backlog. Its capacity is bounded; overflow drops the oldest and counts it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

from edge_runtime.clock import Clock
from edge_runtime.errors import TransportError
from edge_runtime.identity import Sealer
from edge_runtime.lifecycle import Component
from edge_runtime.mqtt.link import MqttLink
from edge_runtime.types import Envelope, RawMessage, Summary
from edge_runtime.uplink.config import UplinkConfig
from edge_runtime.uplink.envelope import encode_envelopes
from edge_runtime.uplink.seq import SeqAllocator

__all__ = ["MemoryUplink"]

log = logging.getLogger(__name__)


class MemoryUplink(Component):
    """Accepts summaries, sends them to the core; see the module docstring."""

    def __init__(
        self,
        config: UplinkConfig,
        link: MqttLink,
        *,
        site_id: str,
        version: str,
        config_hash: str,
        seq: SeqAllocator,
        clock: Clock,
        sealer: Sealer | None = None,
        site_revision: str = "",
    ) -> None:
        self.config = config
        self.sealer = sealer
        self.link = link
        self.site_id = site_id
        self.version = version
        self.config_hash = config_hash
        self.site_revision = site_revision
        self.seq = seq
        self.clock = clock
        self.topic = config.topic.format(site_id=site_id)
        self._queue: deque[Envelope] = deque()
        self._ready = asyncio.Event()
        self.counters: Counter[str] = Counter()

    def revise(self, config_hash: str, site_revision: str) -> None:
        """What the site runs changed (a reload): summaries accepted from now on say so."""
        self.config_hash, self.site_revision = config_hash, site_revision

    async def submit(self, summaries: Sequence[Summary], *, replayed: bool = False) -> None:
        """Accept summaries for sending (never waits; overflow drops the oldest, counted)."""
        if not summaries:
            return
        first = self.seq.take(len(summaries))
        now = self.clock.time()
        for i, summary in enumerate(summaries):
            self._queue.append(
                Envelope.wrap(
                    summary,
                    site=self.site_id,
                    seq=first + i,
                    created_at=now,
                    version=self.version,
                    config_hash=self.config_hash,
                    replayed=replayed,
                    site_revision=self.site_revision,
                )
            )
        self.counters["accepted"] += len(summaries)
        overflow = len(self._queue) - self.config.retry_queue
        if overflow > 0:
            for _ in range(overflow):
                self._queue.popleft()
            self.counters["dropped_overflow"] += overflow
            log.warning("uplink retry queue full: dropped %d oldest summaries", overflow)
        self._ready.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def receive(self, message: RawMessage) -> None:
        """The in-memory uplink subscribes to nothing (the PUBACK is its only confirmation)."""
        del message

    def ready(self) -> tuple[bool, str]:
        if self.link.is_up:
            return True, f"uplink up, {len(self._queue)} pending"
        return False, f"uplink not connected to the core broker ({self.link.state.value})"

    def stats(self) -> dict[str, Any]:
        return {
            "state": self.link.state.value,
            "link_downs": self.link.disconnects,
            "up": 1 if self.link.is_up else 0,
            "pending": len(self._queue),
            **self.counters,
        }

    def _next_chunk(self) -> list[Envelope]:
        n = min(self.config.max_batch, len(self._queue))
        return [self._queue.popleft() for _ in range(n)]

    async def _send(self, chunk: list[Envelope]) -> None:
        payload = encode_envelopes(chunk, self.config.encoding)
        if self.sealer is not None:
            payload = self.sealer.seal("uplink", payload)
        await self.link.publish(self.topic, payload, qos=1)

    async def run(self) -> None:
        """Send forever; cancel to stop (call :meth:`drain` first for a clean shutdown)."""
        while True:
            while not self._queue:
                self._ready.clear()
                await self._ready.wait()
            await self.link.wait_connected()
            await self._send_round()

    async def _send_round(self) -> None:
        chunks: list[list[Envelope]] = []
        while self._queue and len(chunks) < self.config.max_in_flight:
            chunks.append(self._next_chunk())
        results = await asyncio.gather(*(self._send(c) for c in chunks), return_exceptions=True)
        failed: list[Envelope] = []
        for chunk, result in zip(chunks, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, TransportError):
                    raise result
                failed.extend(e.as_backlog() for e in chunk)
            elif failed:
                # A later message got through after an earlier one failed: resend the later one
                # too, after the failed one, so that order per stream holds at the core.
                failed.extend(chunk)
            else:
                self.counters["sent"] += len(chunk)
                self.counters["messages_sent"] += 1
        if failed:
            self.counters["send_failures"] += 1
            self._queue.extendleft(reversed(failed))

    async def drain(self, timeout: float) -> int:
        """Try to send everything pending within ``timeout``; return how many remain unsent."""
        try:
            async with asyncio.timeout(timeout):
                while self._queue:
                    await self.link.wait_connected()
                    await self._send_round()
        except TimeoutError:
            pass
        left = len(self._queue)
        if left:
            log.error("shutdown: %d summaries could not be handed to the core", left)
            self.counters["unsent_at_shutdown"] += left
        return left
