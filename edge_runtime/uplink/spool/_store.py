"""The open spool file and what the spool knows about it, for the writer thread alone.

:class:`Store` holds the connection, the committed sequence mark, the side ledger, the lease
book, the figures, the size cap and the room on the disk, and does the SQL work on them: a
group's transaction (the ledger reserves numbers before the commit that uses them),
maintenance transactions, leases, the rebuild of a file that turns out to be damaged while in
use, and the deletes a full disk held back (see ``_room``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from edge_runtime.clock import Clock
from edge_runtime.uplink.spool._cap import Cap
from edge_runtime.uplink.spool._db import insert_rows, is_corruption, used_bytes, write_state
from edge_runtime.uplink.spool._encode import Row
from edge_runtime.uplink.spool._lease import LeaseBook
from edge_runtime.uplink.spool._ledger import Ledger, ledger_path
from edge_runtime.uplink.spool._maintenance import Delta, MergeFn, delete_rows, expire
from edge_runtime.uplink.spool._ops import Ack, Append
from edge_runtime.uplink.spool._recovery import Known, Opened, open_spool, rebuild
from edge_runtime.uplink.spool._room import DiskRoom, is_disk_full
from edge_runtime.uplink.spool.config import SpoolConfig
from edge_runtime.uplink.spool.errors import SpoolError
from edge_runtime.uplink.spool.records import PRIORITY_SHIFT, SpoolRecord
from edge_runtime.uplink.spool.stats import Figures

__all__ = ["Store"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_TTL_BUDGET = 50_000


def _rows(op: Append) -> list[Row]:
    assert op.encoded is not None
    return op.encoded.rows


class Store:
    """See the module docstring. ``next_seq`` is one past the highest number committed (the
    state row's ``next_seq``)."""

    def __init__(self, config: SpoolConfig, path: Path, clock: Clock, merge: MergeFn | None):
        self.config = config
        self.path = path
        self.clock = clock
        self.figures = Figures()
        self.conn: sqlite3.Connection | None = None
        self.next_seq = 1
        self.ledger = Ledger(ledger_path(path))
        self.book = LeaseBook()
        self.cap = Cap(config, path, merge)
        self.room = DiskRoom(path, config.reserve_bytes)

    # -- the file --------------------------------------------------------------------------

    def open(self) -> None:
        """Open the file: checked, and rebuilt when damaged (see ``_recovery``). On a full disk
        the reserve makes room for the open, and the spool starts refusing appends."""
        self.ledger.load()
        self.room.prepare()
        try:
            self._open()
        except SpoolError as exc:
            if not is_disk_full(exc):
                raise
            if not self.room.enter(exc, everything=True):
                raise SpoolError(
                    "the disk is full and no disk reserve is left to open the spool with; free "
                    "some space on it (the spool needs a few pages to start and drain)",
                    path=str(self.path),
                ) from exc
            self._open()

    def _open(self) -> None:
        self.close()
        self._adopt(
            open_spool(self.path, self.config, Known(self.ledger.entry, self.ledger.unreadable))
        )

    def _adopt(self, opened: Opened) -> None:
        """Take over a freshly opened (or rebuilt) connection and what opening it found; bring
        the ledger up to date (a new block of numbers reserved)."""
        self.conn = opened.conn
        self.next_seq = max(self.next_seq, opened.next_seq)
        self.ledger.start(self.next_seq, sum(opened.depth))
        self.book = LeaseBook()
        self.book.set_mark(self.next_seq - 1)  # everything pending at open is backlog
        self.figures.reset(
            opened.depth,
            opened.payload_bytes,
            used_bytes(opened.conn),
            recovered=opened.recovered,
            rebuilt=opened.rebuilt,
            lost=opened.lost,
            check_s=opened.check_s,
        )
        self.refresh_oldest()

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def close_clean(self) -> None:
        """Mark the file clean, checkpoint the WAL, bring the ledger up to date, close; then
        make the disk reserve whole again if the truncated WAL left room for it."""
        conn = self.connection()
        try:
            self._delete_in_chunks(list(self.book.deferred.items()))
            conn.execute("UPDATE state SET clean = 1")
        except sqlite3.Error as exc:
            log.error("spool %s: clean close failed (the next open checks it): %s", self.path, exc)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.error("spool %s: the last checkpoint failed: %s", self.path, exc)
        self.note_ledger()
        self.close()
        self.room.reserve.make()

    def connection(self) -> sqlite3.Connection:
        if self.conn is None:
            raise SpoolError("the spool file is not open", path=str(self.path))
        return self.conn

    def on_db_error(self, exc: sqlite3.Error) -> bool:
        """Rebuild the file when ``exc`` says it is damaged (True); otherwise just log.
        Raises SpoolError when the rebuild is impossible."""
        if not is_corruption(exc):
            log.error("spool %s: %s", self.path, exc)
            return False
        self.close()
        known = Known(self.ledger.entry, next_seq=self.next_seq, live=sum(self.figures.depth))
        self._adopt(rebuild(self.path, self.config, reason=str(exc), known=known))
        return True

    def note_ledger(self) -> None:
        """Record the committed mark and the pending records in the ledger if they changed."""
        try:
            self.ledger.note(self.next_seq, sum(self.figures.depth))
        except SpoolError as exc:
            if is_disk_full(exc):
                self.room.enter(exc)
            else:
                log.error("spool %s: %s (tried again next round)", self.path, exc)

    # -- transactions ----------------------------------------------------------------------

    def write_group(self, appends: list[Append], acks: list[Ack]) -> tuple[Delta, list[int]]:
        """One group's transaction; the ledger first when its numbers need reserving. Returns
        the delta (applied) and how many of each ack's ids were found."""
        conn = self.connection()
        delta = Delta()
        end = self.next_seq
        for op in appends:
            assert op.encoded is not None
            for cls in range(3):
                delta.depth[cls] += op.encoded.counts[cls]
            delta.nbytes += op.encoded.nbytes
            end = max(end, op.encoded.end_seq)
        self.ledger.cover(end, self.next_seq, sum(self.figures.depth))
        acked: list[int] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            if appends:
                insert_rows(conn, itertools.chain.from_iterable(_rows(op) for op in appends))
            if acks:
                acked = self._delete_acked(conn, acks, delta)
            self._write_state(conn, delta, end)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self.next_seq = end
        self._after_write(delta)
        if appends:
            self.book.note_commit(self.clock.monotonic(), end - 1)
        return delta, acked

    def _delete_acked(self, conn: sqlite3.Connection, acks: list[Ack], delta: Delta) -> list[int]:
        """Delete the acked records; how many of each ack's ids were found."""
        rows, counts = self._ack_rows(conn, acks)
        delete_rows(conn, rows, delta, None)
        delta.acked_ids = [rid for rid, _ in rows]
        return counts

    def _ack_rows(
        self, conn: sqlite3.Connection, acks: list[Ack]
    ) -> tuple[list[tuple[int, int]], list[int]]:
        """The ``(id, payload size)`` rows of the acked records that exist; how many of each
        ack's ids were found."""
        leased = self.book.leased
        rows: list[tuple[int, int]] = []
        seen: set[int] = set()
        counts: list[int] = []
        for op in acks:
            count = 0
            for rid in op.ids:
                if rid in seen:
                    continue
                seen.add(rid)
                size = leased.get(rid)
                if size is None:  # not leased (any more): look it up
                    found = conn.execute(
                        "SELECT length(payload) FROM records WHERE id = ?", (rid,)
                    ).fetchone()
                    if found is None:
                        continue
                    size = int(found[0])
                rows.append((rid, size))
                count += 1
            counts.append(count)
        return rows, counts

    def delete_acks_in_chunks(self, acks: list[Ack]) -> list[int]:
        """Acks a full disk refused in one transaction: deleted in small ones (few WAL frames
        each, the WAL checkpointed between them); the records whose delete still fails are
        held back, never leased again, and deleted once there is room (or at the clean close).
        Returns how many of each ack's ids were found."""
        rows, counts = self._ack_rows(self.connection(), acks)
        deleted = self._delete_in_chunks(rows)
        held = rows[deleted:]
        for rid, size in held:
            self.book.defer(rid, size)
        self.figures.deferred(len(held))
        if held:
            log.warning(
                "spool %s: the disk is too full to delete %d acknowledged records; they are "
                "never sent again and are deleted once there is room",
                self.path,
                len(held),
            )
        return counts

    def _delete_in_chunks(self, rows: list[tuple[int, int]]) -> int:
        """Delete acknowledged ``(id, size)`` rows in transactions of ``room.ack_chunk``; stops
        at the first that the full disk refuses. Returns how many rows were deleted."""
        done = 0
        for start in range(0, len(rows), self.room.ack_chunk):
            part = rows[start : start + self.room.ack_chunk]

            def work(
                conn: sqlite3.Connection, delta: Delta, part: list[tuple[int, int]] = part
            ) -> None:
                delete_rows(conn, part, delta, None)
                delta.acked_ids = [rid for rid, _ in part]

            try:
                self.transaction(work)
            except sqlite3.Error as exc:
                if not is_disk_full(exc):
                    raise
                break
            done += len(part)
        return done

    def upkeep_room(self) -> None:
        """Each maintenance round: the deletes a full disk held back, and while the disk is
        full, pages handed back to it until there is room (see ``DiskRoom.recover``)."""
        held = list(self.book.deferred.items())
        if held and self._delete_in_chunks(held) < len(held):
            self.room.enter("deletes held back")
        if self.room.full:
            self.room.recover(self.connection())

    def _write_state(self, conn: sqlite3.Connection, delta: Delta, next_seq: int) -> None:
        depth = [self.figures.depth[i] + delta.depth[i] for i in range(3)]
        write_state(conn, next_seq, depth, self.figures.payload_bytes + delta.nbytes)

    def _after_write(self, delta: Delta) -> None:
        """Apply a committed delta to the lease book and the figures."""
        for rid in delta.acked_ids:
            self.book.leased.pop(rid, None)
            self.book.deferred.pop(rid, None)
        for rid in delta.inserted_ids:
            self.book.inserted(rid)
        self.figures.apply(
            delta.depth,
            delta.nbytes,
            used_bytes(self.connection()),
            delta.removed,
            (delta.compacted_parts, delta.compacted_records),
        )

    def transaction(self, work: Callable[[sqlite3.Connection, Delta], T]) -> T:
        """Run maintenance ``work`` in its own transaction and apply its delta."""
        conn = self.connection()
        delta = Delta()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn, delta)
            if delta.empty():
                conn.execute("ROLLBACK")  # nothing changed: no commit, no fsync
                return result
            self._write_state(conn, delta, self.next_seq)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self._after_write(delta)
        self.check_cap()
        return result

    def check_cap(self) -> None:
        self.cap.check(self.figures, self.book.leased, self.transaction, self.clock.time())

    # -- reads and upkeep ------------------------------------------------------------------

    def lease(
        self, limit: int, max_bytes: int, backlog_budget: int | None, live_window_s: float | None
    ) -> list[SpoolRecord]:
        conn = self.connection()
        live_cutoff = None
        if live_window_s is not None:
            self.book.age(self.clock.monotonic() - live_window_s)
            live_cutoff = self.clock.time() - live_window_s
        corrupt: list[tuple[int, int]] = []
        records = self.book.lease(
            conn,
            limit,
            max_bytes,
            backlog_budget=backlog_budget,
            live_cutoff=live_cutoff,
            corrupt=corrupt,
            avg_size=self.figures.payload_bytes // max(1, sum(self.figures.depth)) or 512,
        )
        if corrupt:
            log.warning(
                "spool %s: %d records lost to damage (their checksums failed when leased; "
                "they were cut); counted as corrupt_records",
                self.path,
                len(corrupt),
            )
            self.transaction(lambda c, d: delete_rows(c, corrupt, d, "corrupt_records"))
        return records

    def expire(self) -> None:
        """Drop records past their TTL (a budget per round) and refresh the oldest's age."""
        cutoff = self.clock.time() - self.config.ttl_s
        expired = self.transaction(lambda c, d: expire(c, d, self.book.leased, cutoff, _TTL_BUDGET))
        if expired:
            log.warning("spool %s: %d records expired (ttl_s)", self.path, expired)
        self.refresh_oldest()

    def refresh_oldest(self) -> None:
        conn = self.connection()
        oldest: float | None = None
        for cls in range(3):
            row = conn.execute(
                "SELECT created_at FROM records WHERE id > ? AND id < ? ORDER BY id LIMIT 1",
                (cls << PRIORITY_SHIFT, (cls + 1) << PRIORITY_SHIFT),
            ).fetchone()
            if row is not None and (oldest is None or row[0] < oldest):
                oldest = float(row[0])
        self.figures.set_oldest(oldest)
