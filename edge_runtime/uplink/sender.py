"""The sender: drains the spool to the core broker, QoS 1; a record leaves the spool when the
core acknowledges it has stored it (``delivery = "core"``) or, as a baseline, on the PUBACK.

Several envelopes travel in one uplink message (up to ``max_batch_bytes``), and up to
``max_in_flight`` messages are published before the first PUBACK comes back. Messages leave in
lease order on one connection and one topic, and MQTT keeps QoS 1 messages in order there, so
each stream's records reach the core in order (per lane: see the spool's lease book).

When a publish fails the link is down: every record in flight goes back to the spool, all that
was pending moves to the backlog lane, and the sender waits for :meth:`Publisher.wait_connected`
(no retry timer). Only a drain that fails again while the link reports itself up, or one that
the spool failed (counted as ``spool_errors``), waits before the next try, per
:class:`~edge_runtime.backoff.Backoff` (50 ms doubling up to 5 s).
Backlog records are sent flagged ``backlog=True`` behind alerts and live data, at most
``backlog_rate_per_s`` per second when a rate is set.

With ``delivery = "core"`` a PUBACK only starts a timer: records stay leased until the core's
acknowledgement (:meth:`Sender.on_ack`, see :mod:`edge_runtime.uplink.acks`) names them, and
at most ``max_unacked`` are out at once (:mod:`edge_runtime.uplink.resend` keeps that book).
Records the core has not acknowledged ``ack_timeout_s`` after their PUBACK (doubling with each
try), and after a reconnect those the broker took on an earlier connection, go back to the
spool and are sent again flagged ``resent``, in lease order, before newer records of their
lane. A link failure returns every leased record, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from edge_runtime.backoff import Backoff
from edge_runtime.clock import Clock, SystemClock
from edge_runtime.errors import TransportError
from edge_runtime.identity import Sealer
from edge_runtime.lifecycle import Component
from edge_runtime.uplink.acks import CoreAck
from edge_runtime.uplink.bucket import TokenBucket
from edge_runtime.uplink.config import SenderConfig
from edge_runtime.uplink.envelope import encode_envelopes, flag_resent
from edge_runtime.uplink.resend import AckKeeper
from edge_runtime.uplink.spool.errors import SpoolError
from edge_runtime.uplink.spool.records import Lane, SpoolRecord, pack_message
from edge_runtime.uplink.spool.spool import Spool
from edge_runtime.uplink.spool.stats import RateWindow

__all__ = ["Publisher", "Sender", "SenderStats"]

log = logging.getLogger(__name__)

QOS = 1
# A drain that fails while the link reports itself up (a broker refusing publishes, a spool
# error) is retried after a backoff, so the sender does not spin.
_RETRY_MIN_S = 0.05
_RETRY_MAX_S = 5.0


class Publisher(Protocol):
    """The link to the core broker, as the sender needs it."""

    async def publish(self, topic: str, payload: bytes, qos: int) -> None:
        """Publish and return once the broker acknowledged the message (PUBACK for QoS 1).

        Messages must be written to the connection in the order of the calls (the sender
        pipelines: it calls again before earlier calls returned). Raises
        :class:`~edge_runtime.errors.TransportError` when the link is down or drops.
        """
        ...

    async def wait_connected(self) -> None:
        """Return as soon as the link is up (at once when it is)."""
        ...


@dataclass(frozen=True, slots=True)
class SenderStats:
    """Figures of the sender since it started."""

    connected: bool
    link_downs: int
    messages_sent: int
    records_sent: int
    records_by_lane: Mapping[str, int]
    backlog_flagged: int
    bytes_sent: int
    in_flight: int
    publish_failures: int
    spool_errors: int
    send_rate_per_s: float
    backlog_tokens: float | None
    delivery: str = "broker"
    unacked: int = 0
    """Records sent and not yet acknowledged by the core (delivery = "core")."""
    oldest_unacked_age_s: float | None = None
    core_acked: int = 0
    """Records the core acknowledged (and the spool deleted)."""
    resent: int = 0
    """Records sent again because the core had not acknowledged them."""
    acks: int = 0
    acks_unknown: int = 0
    """Sequence numbers acknowledged that this sender did not hold (acked already, or sent
    before a restart)."""
    ack_p50_ms: float | None = None
    ack_p99_ms: float | None = None


class Sender(Component):
    """Drains a :class:`Spool` through a :class:`Publisher`.

    ``async with Sender(spool, publisher, config):`` runs the drain loop as a named task in the
    sender's task group until the block exits; or await :meth:`run` in a task group of your own.

    With ``config.delivery == "core"`` feed the core's acknowledgements to :meth:`on_ack`;
    ``link_generation`` (the link's count of connections made) lets the sender resend what
    is unacknowledged after a reconnect even when no publish failed. With a ``sealer`` every
    uplink message is signed (see :mod:`edge_runtime.identity.sealed`).
    """

    def __init__(
        self,
        spool: Spool,
        publisher: Publisher,
        config: SenderConfig,
        *,
        clock: Clock | None = None,
        link_generation: Callable[[], int] | None = None,
        sealer: Sealer | None = None,
    ) -> None:
        self.config = config
        self._sealer = sealer
        self._spool = spool
        self._publisher = publisher
        self._clock: Clock = clock or SystemClock()
        self._bucket: TokenBucket | None = None
        self._chunk = config.max_batch_records
        if config.backlog_rate_per_s is not None:
            rate = config.backlog_rate_per_s
            burst = config.backlog_burst or max(rate, float(config.max_batch_records))
            self._bucket = TokenBucket(rate, burst, self._clock)
            # take the backlog in chunks of at most 1/20 s of the rate: few, full messages
            self._chunk = max(1, min(config.max_batch_records, int(rate / 20), int(burst)))
        self._group: asyncio.TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = False
        self._link_downs = 0
        self._messages = 0
        self._records = 0
        self._by_lane = dict.fromkeys((lane.value for lane in Lane), 0)
        self._backlog_flagged = 0
        self._bytes = 0
        self._in_flight = 0
        self._publish_failures = 0
        self._spool_errors = 0
        self._rate = RateWindow(10.0)
        self._sent = asyncio.Event()
        self._core = config.delivery == "core"
        self._keeper = AckKeeper(spool, config, link_generation or (lambda: 0))

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the drain loop as a named task in the sender's task group."""
        group = asyncio.TaskGroup()
        await group.__aenter__()
        self._group = group
        self._task = group.create_task(self.run(), name="spool-sender")

    async def close(self) -> None:
        """Stop the drain loop; records still leased go back to the spool (safe twice)."""
        group, task = self._group, self._task
        self._group = self._task = None
        if task is not None:
            task.cancel()
        try:
            if group is not None:
                await group.__aexit__(None, None, None)
        finally:
            with contextlib.suppress(SpoolError):
                await self._spool.release()

    # -- figures ---------------------------------------------------------------------------

    def stats(self) -> SenderStats:
        keeper = self._keeper
        unacked = keeper.book
        return SenderStats(
            connected=self._connected,
            link_downs=self._link_downs,
            messages_sent=self._messages,
            records_sent=self._records,
            records_by_lane=dict(self._by_lane),
            backlog_flagged=self._backlog_flagged,
            bytes_sent=self._bytes,
            in_flight=self._in_flight,
            publish_failures=self._publish_failures,
            spool_errors=self._spool_errors + keeper.spool_errors,
            send_rate_per_s=self._rate.rate(time.monotonic()),
            backlog_tokens=None if self._bucket is None else self._bucket.available(),
            delivery=self.config.delivery,
            unacked=len(unacked),
            oldest_unacked_age_s=unacked.oldest_age_s(),
            core_acked=unacked.acked,
            resent=unacked.resent,
            acks=keeper.acks,
            acks_unknown=unacked.unknown,
            ack_p50_ms=unacked.latency_ms(0.5),
            ack_p99_ms=unacked.latency_ms(0.99),
        )

    # -- the core's acknowledgements -------------------------------------------------------

    def on_ack(self, ack: CoreAck) -> None:
        """Take an acknowledgement from the core (called as it arrives; never blocks): the
        records it names leave the spool, and make room for more to be sent."""
        self._keeper.on_ack(ack)

    def ack_overdue_s(self) -> float:
        """How long past its timeout the oldest unacknowledged record is (0: none is)."""
        return self._keeper.overdue_s()

    async def wait_sent(self, count: int) -> None:
        """Wait until the core broker acknowledged (PUBACK) ``count`` records in all.

        Marking them sent in the spool follows a moment later.
        """
        while self._records < count:
            self._sent.clear()
            await self._sent.wait()

    # -- the drain loop --------------------------------------------------------------------

    async def run(self) -> None:
        """Drain forever: wait for the link, send, and start over when the link drops (with
        ``delivery = "core"``, the acknowledgement tasks run beside it)."""
        if not self._core:
            await self._drain_forever()
            return
        async with asyncio.TaskGroup() as group:
            group.create_task(self._keeper.delete_acked(), name="uplink-delete-acked")
            group.create_task(self._keeper.watch(), name="uplink-ack-watchdog")
            await self._drain_forever()

    async def _drain_forever(self) -> None:
        backoff = Backoff(_RETRY_MIN_S, _RETRY_MAX_S)
        stalled = 0  # drains in a row that sent nothing
        while True:
            await self._publisher.wait_connected()
            if not self._connected:
                log.info("uplink connected; draining the spool (%d pending)", self._pending())
            self._connected = True
            sent_before = self._messages
            spool_failed = False
            try:
                await self._drain()
            except* TransportError as group:
                self._connected = False
                self._link_downs += 1
                self._publish_failures += 1
                log.warning(
                    "uplink down (%s); in-flight records go back to the spool and are resent "
                    "as backlog once the link is back",
                    group.exceptions[0],
                )
                self._keeper.return_all()  # every leased record goes back
                with contextlib.suppress(SpoolError):
                    await self._spool.release(mark_backlog=True)
            except* SpoolError as group:
                spool_failed = True
                self._spool_errors += 1
                log.error("sender: the spool failed (%s); retrying", group.exceptions[0])
                self._keeper.return_all()
                with contextlib.suppress(SpoolError):
                    await self._spool.release()
            if spool_failed:
                # records whose ack failed went back to the spool and are sent again: back off
                # (however much went out) so that a failing spool is never a resend loop
                await asyncio.sleep(backoff.next_delay())
                continue
            if self._messages > sent_before:
                stalled = 0
                backoff.reset()
                continue
            stalled += 1
            if stalled > 1:  # failing again while "connected": do not spin
                await asyncio.sleep(backoff.next_delay())

    def _pending(self) -> int:
        return self._spool.stats().depth

    async def _drain(self) -> None:
        slots = asyncio.Semaphore(self.config.max_in_flight)
        async with asyncio.TaskGroup() as group:
            while True:
                await slots.acquire()
                try:
                    records = await self._next_batch()
                except BaseException:
                    slots.release()
                    raise
                resent: list[bool] = []
                if self._core:  # in the book before the next lease looks at its room
                    resent = self._keeper.sending(records)
                group.create_task(self._send(records, resent, slots), name="spool-publish")

    async def _next_batch(self) -> list[SpoolRecord]:
        config = self.config
        while True:
            limit = config.max_batch_records
            if self._core:
                limit = min(limit, await self._keeper.wait_room())
            budget: int | None = None
            if self._bucket is not None:
                tokens = int(self._bucket.available())
                budget = tokens if tokens >= self._chunk else 0
            records = await self._spool.lease(
                limit,
                config.max_batch_bytes,
                backlog_budget=budget,
                live_window_s=config.live_window_s,
            )
            if records:
                if self._bucket is not None:
                    self._bucket.take(sum(1 for r in records if r.lane is Lane.BACKLOG))
                return records
            timeout = None
            if self._bucket is not None and budget == 0:
                stats = self._spool.stats()
                if stats.depth > stats.leased:  # backlog may be waiting for tokens
                    timeout = self._bucket.wait_s(self._chunk)
            await self._spool.wait_leasable(timeout)

    def _message(self, records: Sequence[SpoolRecord], resent: Sequence[bool] = ()) -> bytes:
        if self.config.encoding == "msgpack":
            payloads = [r.wire_payload() for r in records]
            if any(resent):
                flagged = zip(payloads, resent, strict=True)
                payloads = [flag_resent(p) if f else p for p, f in flagged]
            return pack_message(payloads)
        envelopes = [r.envelope() for r in records]
        if any(resent):
            pairs = zip(envelopes, resent, strict=True)
            envelopes = [e.as_resent() if f else e for e, f in pairs]
        return encode_envelopes(envelopes, "json")

    async def _send(
        self, records: list[SpoolRecord], resent: list[bool], slots: asyncio.Semaphore
    ) -> None:
        self._in_flight += 1
        try:
            payload = self._message(records, resent)
            if self._sealer is not None:
                payload = self._sealer.seal("uplink", payload)
            try:
                async with asyncio.timeout(self.config.publish_timeout_s):
                    await self._publisher.publish(self.config.topic, payload, QOS)
            except TimeoutError as exc:
                raise TransportError(
                    f"no PUBACK within publish_timeout_s={self.config.publish_timeout_s}"
                ) from exc
            self._count_sent(records, len(payload))
            if self._core:  # the core's acknowledgement deletes them (on_ack)
                self._keeper.pubacked(records)
                return
            # once submitted the ack commits even if this task is cancelled meanwhile
            await self._spool.ack([r.id for r in records])
        finally:
            self._in_flight -= 1
            slots.release()

    def _count_sent(self, records: Sequence[SpoolRecord], nbytes: int) -> None:
        self._messages += 1
        self._records += len(records)
        self._bytes += nbytes
        for record in records:
            self._by_lane[record.lane.value] += 1
        self._backlog_flagged += sum(1 for r in records if r.backlog)
        self._rate.add(time.monotonic(), len(records))
        self._sent.set()
