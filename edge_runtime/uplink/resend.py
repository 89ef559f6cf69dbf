"""The sender's side of ``delivery = "core"``: records leave the spool when the core's
acknowledgement names them, and go back to it to be sent again when none comes in time.

:class:`AckKeeper` holds the book of records out (:class:`~edge_runtime.uplink.inflight.Unacked`)
and does its I/O with the spool: :meth:`AckKeeper.delete_acked` deletes acknowledged records
in groups as acknowledgements come, and :meth:`AckKeeper.watch` returns to the spool what the
core has not acknowledged ``ack_timeout_s`` after its PUBACK, or at all before the link
reconnected (the link's count of connections made). The sender runs both as named tasks beside
its drain loop and asks :meth:`AckKeeper.wait_room` before each lease, so that at most
``max_unacked`` records are out at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from edge_runtime.uplink.acks import CoreAck
from edge_runtime.uplink.config import SenderConfig
from edge_runtime.uplink.inflight import Unacked
from edge_runtime.uplink.spool.errors import SpoolError
from edge_runtime.uplink.spool.records import SpoolRecord
from edge_runtime.uplink.spool.spool import Spool

__all__ = ["AckKeeper"]

log = logging.getLogger(__name__)

# how long a failed delete of acknowledged records waits before the next try
_DELETE_RETRY_S = 0.05
# how often the watchdog looks for a reconnect (the link's connection count)
_WATCH_TICK_S = 0.5


class AckKeeper:
    """See the module docstring. ``generation`` is the link's count of connections made.

    ``acks`` counts the acknowledgements taken, ``spool_errors`` the spool's failures to
    delete or take back records."""

    def __init__(self, spool: Spool, config: SenderConfig, generation: Callable[[], int]) -> None:
        self.book = Unacked(config.ack_timeout_s, config.max_unacked, time.monotonic)
        self.acks = 0
        self.spool_errors = 0
        self._spool = spool
        self._generation = generation
        self._tick = min(_WATCH_TICK_S, config.ack_timeout_s / 4)
        self._to_delete: list[int] = []  # acknowledged record ids, for the spool
        self._acked = asyncio.Event()  # records to delete
        self._room = asyncio.Event()  # records left the unacknowledged book

    def on_ack(self, ack: CoreAck) -> None:
        """Take an acknowledgement from the core (never blocks): the records it names are
        queued for deletion and make room for more to be sent."""
        self.acks += 1
        rids = self.book.ack(ack.ranges)
        if rids:
            self._to_delete.extend(rids)
            self._acked.set()
            self._room.set()

    def overdue_s(self) -> float:
        """How long past its timeout the oldest unacknowledged record is (0: none is)."""
        deadline = self.book.next_deadline()
        return 0.0 if deadline is None else max(0.0, time.monotonic() - deadline)

    async def wait_room(self) -> int:
        """Wait until fewer than ``max_unacked`` records are out; return how many more may
        go."""
        while self.book.room <= 0:  # at the bound: wait for the core's acks
            self._room.clear()
            await self._room.wait()
        return self.book.room

    def sending(self, records: Sequence[SpoolRecord]) -> list[bool]:
        """Book ``records`` as sent on the link's current connection; say which are resends."""
        return self.book.sending([(r.seq, r.id) for r in records], self._generation())

    def pubacked(self, records: Sequence[SpoolRecord]) -> None:
        """The broker has ``records`` (PUBACK): their acknowledgement timers start."""
        self.book.pubacked(r.seq for r in records)

    def return_all(self) -> None:
        """The link failed: every record out goes back (the sender releases the spool)."""
        self.book.return_all()

    async def delete_acked(self) -> None:
        """Delete acknowledged records from the spool, in groups, as acknowledgements come."""
        while True:
            if not self._to_delete:
                self._acked.clear()
                await self._acked.wait()
                continue
            rids, self._to_delete = self._to_delete, []
            try:
                await self._spool.ack(rids)
            except SpoolError as exc:
                self.spool_errors += 1
                log.error("sender: the spool failed to delete acknowledged records: %s", exc)
                self._to_delete[:0] = rids  # keep them for the next round
                await asyncio.sleep(_DELETE_RETRY_S)

    async def watch(self) -> None:
        """Send again what the core has not acknowledged in time, or at all before the link
        reconnected."""
        unacked = self.book
        generation = self._generation
        tick = self._tick
        while True:
            deadline = unacked.next_deadline()
            wait = tick if deadline is None else min(tick, deadline - time.monotonic())
            await asyncio.sleep(max(wait, 0.0))
            why = "reconnect"
            rids = unacked.sent_before(generation())
            if not rids:
                why = "timeout"
                rids = unacked.expired()
            if not rids:
                continue
            self._room.set()
            log.log(
                logging.INFO if why == "reconnect" else logging.WARNING,
                "the core has not acknowledged %d record(s) (%s); sending them again",
                len(rids),
                "the link reconnected" if why == "reconnect" else "ack timeout",
            )
            try:
                await self._spool.release(rids)
            except SpoolError as exc:
                self.spool_errors += 1
                log.error("sender: the spool failed to take records back: %s", exc)
