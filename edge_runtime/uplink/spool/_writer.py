"""The spool's writer thread: it owns the SQLite connection and the side ledger.

It runs queued work in submission order. Appends and acks that arrive within
``commit_interval_ms`` of the first one waiting share one transaction and one fsync (group
commit): ``BEGIN IMMEDIATE``, the rows of every append in one ``executemany``, the acked
records deleted, the state row, ``COMMIT`` (in WAL mode with ``synchronous=FULL`` the commit
returns once the WAL is fsynced); the callers are answered after that. Appends are encoded
and numbered as they arrive, so a group is ready to write once it closes. A call (lease,
release, maintenance) that arrives meanwhile closes the group and runs after its commit, so
that reads see committed data only. Before a commit that would use sequence numbers past the
ledger's reservation, the ledger reserves the next block. Between commits the writer expires
records past their TTL, keeps the file under its size cap and keeps the ledger current.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

from edge_runtime.clock import Clock
from edge_runtime.uplink.spool._cap import Cap
from edge_runtime.uplink.spool._db import (
    insert_rows,
    is_corruption,
    used_bytes,
    write_state,
)
from edge_runtime.uplink.spool._encode import encode_rows
from edge_runtime.uplink.spool._lease import LeaseBook
from edge_runtime.uplink.spool._ledger import Ledger, ledger_path
from edge_runtime.uplink.spool._maintenance import Delta, MergeFn, delete_rows, expire
from edge_runtime.uplink.spool._ops import Ack, Append, Call, Gate, Op
from edge_runtime.uplink.spool._recovery import Known, Opened, open_spool, rebuild
from edge_runtime.uplink.spool.config import SpoolConfig
from edge_runtime.uplink.spool.errors import SpoolClosedError, SpoolError, SpoolFullError
from edge_runtime.uplink.spool.records import PRIORITY_SHIFT, SpoolRecord
from edge_runtime.uplink.spool.stats import Figures, SpoolStats

__all__ = ["Writer"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_TTL_BUDGET = 50_000
# Group commit: a group that already holds this many records stops waiting for more once
# nothing arrived for _EARLY_GAP_S (instead of waiting out commit_interval_ms): its fsync is
# shared widely enough, and waiting on only delays appends that are all already in.
_EARLY_RECORDS = 1000
_EARLY_GAP_S = 0.00025


class Writer:
    """State and work of the writer thread (see the module docstring)."""

    def __init__(
        self,
        config: SpoolConfig,
        path: Path,
        gate: Gate,
        clock: Clock,
        merge: MergeFn | None,
    ) -> None:
        self.config = config
        self.path = path
        self._gate = gate
        self._clock = clock
        self.listeners: list[Callable[[], None]] = []
        self.figures = Figures()
        self._conn: sqlite3.Connection | None = None
        self._next_seq = 1  # one past the highest number committed; stored in the state row
        self._ledger = Ledger(ledger_path(path))
        self._book = LeaseBook()
        self._cap = Cap(config, path, merge)
        self._linger = config.commit_interval_ms / 1000.0
        self._next_maintenance = 0.0
        self._batch: list[Append | Ack] = []  # the group being gathered
        self._pending: Call | None = None  # a call that closed a group: it runs next

    def snapshot(self) -> SpoolStats:
        """The figures (safe from any thread)."""
        file_bytes = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                file_bytes += self.path.with_name(self.path.name + suffix).stat().st_size
        return self.figures.snapshot(
            now=self._clock.time(),
            leased=len(self._book.leased),
            full=self._cap.full,
            max_bytes=self.config.max_bytes,
            file_bytes=file_bytes,
        )

    # -- the thread ------------------------------------------------------------------------

    def run(self, opened: Future[None]) -> None:
        try:
            self._ledger.load()
            known = Known(self._ledger.entry, self._ledger.unreadable)
            self._adopt(open_spool(self.path, self.config, known))
        except SpoolError as exc:
            self._gate.broken = str(exc)
            self._close_conn()
            opened.set_exception(exc)
            return
        except Exception as exc:
            log.exception("spool %s: opening failed", self.path)
            self._gate.broken = f"opening failed: {exc!r}"
            self._close_conn()
            opened.set_exception(SpoolError(self._gate.broken, path=str(self.path)))
            return
        with self._gate.lock:
            self._gate.accepting = True
        opened.set_result(None)
        self._notify()
        try:
            self._loop()
        except Exception as exc:
            log.exception("spool %s: the writer thread failed; the spool refuses work", self.path)
            self._fail_all(SpoolError(f"the spool writer failed: {exc!r}", path=str(self.path)))
        finally:
            self._close_conn()

    def _adopt(self, opened: Opened) -> None:
        """Take over a freshly opened (or rebuilt) connection and what opening it found; bring
        the ledger up to date (a new block of numbers reserved)."""
        self._conn = opened.conn
        self._next_seq = max(self._next_seq, opened.next_seq)
        self._ledger.start(self._next_seq, sum(opened.depth))
        self._book = LeaseBook()
        self._book.set_mark(self._next_seq - 1)  # everything pending at open is backlog
        self.figures.reset(
            opened.depth,
            opened.payload_bytes,
            used_bytes(opened.conn),
            recovered=opened.recovered,
            rebuilt=opened.rebuilt,
            lost=opened.lost,
            check_s=opened.check_s,
        )
        self._refresh_oldest()

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _fail_all(self, error: SpoolError) -> None:
        """Refuse new work and answer everything queued or gathered with ``error``."""
        with self._gate.lock:
            self._gate.accepting = False
            self._gate.broken = str(error)
        waiting: list[Op] = [*self._batch]
        if self._pending is not None:
            waiting.append(self._pending)
        self._batch, self._pending = [], None
        while True:
            try:
                waiting.append(self._gate.queue.get_nowait())
            except queue.Empty:
                break
        for op in waiting:
            if not op.future.done():
                op.future.set_exception(error)

    def _loop(self) -> None:
        q = self._gate.queue
        while True:
            op: Op | None = self._pending
            self._pending = None
            if op is None:
                timeout = max(0.0, self._next_maintenance - time.monotonic())
                try:
                    op = q.get(timeout=timeout)
                except queue.Empty:
                    self._maintain(force=False)
                    continue
            if isinstance(op, Call):
                if self._call(op):
                    return
            else:
                self._group(op)
            if time.monotonic() >= self._next_maintenance:
                self._maintain(force=False)

    # -- group commit ----------------------------------------------------------------------

    def _group(self, first: Append | Ack) -> None:
        """Gather the group that starts with ``first`` and commit it: what arrives until it
        holds ``max_batch`` records, until nothing arrived for a moment once it is large, or
        until ``commit_interval_ms`` after ``first`` was queued. A call closes it early (and
        runs next)."""
        q = self._gate.queue
        batch = self._batch = []
        records = 0
        seq = self._next_seq
        encode_s = 0.0
        deadline = first.enqueued + self._linger
        op: Op = first
        while True:
            arrived = time.perf_counter()
            if isinstance(op, Ack):
                batch.append(op)
                records += len(op.ids)
            elif isinstance(op, Append) and not self._refused(op) and self._encode(op, seq):
                assert op.encoded is not None
                batch.append(op)
                records += len(op.items)
                seq = op.encoded.end_seq
                encode_s += time.perf_counter() - arrived
            if records >= self.config.max_batch:
                break
            now = time.perf_counter()
            wait = deadline - now
            if records >= _EARLY_RECORDS:
                wait = min(wait, arrived + _EARLY_GAP_S - now)
            try:
                op = q.get(timeout=wait) if wait > 0 else q.get_nowait()
            except queue.Empty:
                break
            if isinstance(op, Call):
                self._pending = op
                break
        self._commit(batch, encode_s)
        self._batch = []

    def _refused(self, op: Append) -> bool:
        """Refuse ``op`` while the spool is full under ``reject_new``."""
        if not self._cap.full:
            return False
        op.future.set_exception(
            SpoolFullError(
                "the spool is at max_bytes and drop_policy is reject_new; the append was "
                "refused (raise max_bytes or let the sender drain)",
                path=str(self.path),
            )
        )
        self.figures.rejected(len(op.items))
        return True

    def _encode(self, op: Append, seq: int) -> bool:
        """Encode ``op`` with sequence numbers from ``seq`` on; False (and the op's future
        failed) when it cannot be encoded: it fails alone and uses up no numbers."""
        try:
            op.encoded = encode_rows(op.items, op.wrap, op.priority, seq)
        except Exception as exc:  # noqa: BLE001 - the caller's data or wrap: its error
            error = SpoolError(
                f"append refused, an envelope cannot be encoded: {exc!r}; stats must be "
                "numbers or None and attrs plain data",
                path=str(self.path),
            )
            error.__cause__ = exc
            op.future.set_exception(error)
            return False
        return True

    def _renumber(self, appends: list[Append]) -> list[Append]:
        """Number ``appends`` again from the next sequence number (after a rebuild)."""
        kept, seq = [], self._next_seq
        for op in appends:
            if self._encode(op, seq):
                assert op.encoded is not None
                seq = op.encoded.end_seq
                kept.append(op)
        return kept

    def _commit(self, batch: list[Append | Ack], encode_s: float) -> None:
        """Write a gathered group in one transaction, then answer its callers."""
        appends = [op for op in batch if isinstance(op, Append)]
        acks = [op for op in batch if isinstance(op, Ack)]
        if not appends and not acks:
            return
        encoded = time.perf_counter()
        started = encoded - encode_s  # encoding happened while the group gathered
        for attempt in (1, 2):
            try:
                delta, acked = self._write(appends, acks)
                break
            except sqlite3.Error as exc:
                if attempt == 1 and is_corruption(exc):
                    try:
                        self._on_db_error(exc)
                    except SpoolError as fatal:
                        self._fail(appends, acks, fatal)
                        raise  # no file to write to: the writer stops (see run)
                    appends = self._renumber(appends)  # into the rebuilt file
                    continue
                self._fail(appends, acks, SpoolError(f"commit failed: {exc}", path=str(self.path)))
                return
            except SpoolError as exc:  # the ledger could not reserve the numbers
                self._fail(appends, acks, exc)
                return
        done = time.perf_counter()
        self._after_write(delta)
        rows = sum(len(op.items) for op in appends)
        self.figures.committed(
            appended=rows,
            acked=sum(acked),
            records=rows + sum(len(op.ids) for op in acks),
            times=(started, encoded, done),
            enqueued=[op.enqueued for op in appends],
        )
        for append in appends:
            assert append.encoded is not None
            append.future.set_result(range(append.encoded.first_seq, append.encoded.end_seq))
        for ack, count in zip(acks, acked, strict=True):
            ack.future.set_result(count)
        if appends:
            self._book.note_commit(self._clock.monotonic(), self._next_seq - 1)
            if self.figures.oldest_created is None:
                first = appends[0].encoded
                assert first is not None
                self.figures.set_oldest(first.rows[0][5])
            self._notify()
        self._check_cap()

    def _fail(self, appends: list[Append], acks: list[Ack], error: SpoolError) -> None:
        for append in appends:
            append.future.set_exception(error)
        for ack in acks:
            ack.future.set_exception(error)

    def _write(self, appends: list[Append], acks: list[Ack]) -> tuple[Delta, list[int]]:
        """The group's transaction; the ledger first when its numbers need reserving."""
        conn = self._conn_or_fail()
        delta = Delta()
        end = self._next_seq
        for op in appends:
            assert op.encoded is not None
            for cls in range(3):
                delta.depth[cls] += op.encoded.counts[cls]
            delta.nbytes += op.encoded.nbytes
            end = max(end, op.encoded.end_seq)
        self._ledger.cover(end, self._next_seq, sum(self.figures.depth))
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
        self._next_seq = end
        return delta, acked

    def _delete_acked(self, conn: sqlite3.Connection, acks: list[Ack], delta: Delta) -> list[int]:
        """Delete the acked records; how many of each ack's ids were found."""
        leased = self._book.leased
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
        delete_rows(conn, rows, delta, None)
        delta.acked_ids = [rid for rid, _ in rows]
        return counts

    def _write_state(self, conn: sqlite3.Connection, delta: Delta, next_seq: int) -> None:
        depth = [self.figures.depth[i] + delta.depth[i] for i in range(3)]
        write_state(conn, next_seq, depth, self.figures.payload_bytes + delta.nbytes)

    def _after_write(self, delta: Delta) -> None:
        """Apply a committed delta to the lease book and the figures."""
        for rid in delta.acked_ids:
            self._book.leased.pop(rid, None)
        for rid in delta.inserted_ids:
            self._book.inserted(rid)
        self.figures.apply(
            delta.depth,
            delta.nbytes,
            used_bytes(self._conn_or_fail()),
            delta.removed,
            (delta.compacted_parts, delta.compacted_records),
        )

    def _transaction(self, work: Callable[[sqlite3.Connection, Delta], T]) -> T:
        """Run maintenance ``work`` in its own transaction and apply its delta."""
        conn = self._conn_or_fail()
        delta = Delta()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn, delta)
            if delta.empty():
                conn.execute("ROLLBACK")  # nothing changed: no commit, no fsync
                return result
            self._write_state(conn, delta, self._next_seq)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self._after_write(delta)
        self._check_cap()
        return result

    def _check_cap(self) -> None:
        self._cap.check(self.figures, self._book.leased, self._transaction, self._clock.time())

    # -- calls -----------------------------------------------------------------------------

    def _call(self, op: Call) -> bool:
        """Run a queued call; True when it was the stop request."""
        try:
            result = op.fn()
        except sqlite3.Error as exc:
            error = SpoolError(f"spool operation failed: {exc}", path=str(self.path))
            error.__cause__ = exc
            try:
                self._on_db_error(exc)  # a failed rebuild ends the writer (see run)
            finally:
                op.future.set_exception(error)  # once the file is rebuilt
        except SpoolError as exc:
            op.future.set_exception(exc)
        else:
            op.future.set_result(result)
        return op.stop

    def _conn_or_fail(self) -> sqlite3.Connection:
        if self._conn is None:
            raise SpoolError("the spool file is not open", path=str(self.path))
        return self._conn

    def _on_db_error(self, exc: sqlite3.Error) -> None:
        """Rebuild the file when an error says it is damaged; otherwise just log."""
        if not is_corruption(exc):
            log.error("spool %s: %s", self.path, exc)
            return
        self._close_conn()
        known = Known(self._ledger.entry, False, self._next_seq, sum(self.figures.depth))
        self._adopt(rebuild(self.path, self.config, reason=str(exc), known=known))
        self._notify()

    def lease(
        self, limit: int, max_bytes: int, backlog_budget: int | None, live_window_s: float | None
    ) -> list[SpoolRecord]:
        conn = self._conn_or_fail()
        live_cutoff = None
        if live_window_s is not None:
            self._book.age(self._clock.monotonic() - live_window_s)
            live_cutoff = self._clock.time() - live_window_s
        corrupt: list[tuple[int, int]] = []
        records = self._book.lease(
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
            self._transaction(lambda c, d: delete_rows(c, corrupt, d, "corrupt_records"))
        return records

    def release(self, ids: list[int] | None, mark_backlog: bool) -> int:
        count = self._book.release(ids)
        if mark_backlog:
            self._book.set_mark(self._next_seq - 1)
        self._notify()
        return count

    def _notify(self) -> None:
        for callback in list(self.listeners):
            try:
                callback()
            except Exception:
                log.exception("spool listener %r failed", callback)

    # -- maintenance -----------------------------------------------------------------------

    def maintain(self) -> None:
        self._maintain(force=True)

    def _maintain(self, *, force: bool) -> None:
        """TTL expiry, the oldest record's age, the cap, and the ledger's figures."""
        now = time.monotonic()
        if not force and now < self._next_maintenance:
            return
        self._next_maintenance = now + self.config.maintenance_interval_s
        try:
            cutoff = self._clock.time() - self.config.ttl_s
            expired = self._transaction(
                lambda c, d: expire(c, d, self._book.leased, cutoff, _TTL_BUDGET)
            )
            if expired:
                log.warning("spool %s: %d records expired (ttl_s)", self.path, expired)
            self._refresh_oldest()
            self._check_cap()
        except sqlite3.Error as exc:
            self._on_db_error(exc)
        try:
            self._ledger.note(self._next_seq, sum(self.figures.depth))
        except SpoolError as exc:
            log.error("spool %s: %s (tried again next round)", self.path, exc)

    def _refresh_oldest(self) -> None:
        conn = self._conn_or_fail()
        oldest: float | None = None
        for cls in range(3):
            row = conn.execute(
                "SELECT created_at FROM records WHERE id > ? AND id < ? ORDER BY id LIMIT 1",
                (cls << PRIORITY_SHIFT, (cls + 1) << PRIORITY_SHIFT),
            ).fetchone()
            if row is not None and (oldest is None or row[0] < oldest):
                oldest = float(row[0])
        self.figures.set_oldest(oldest)

    def shutdown(self) -> None:
        """The clean close: the file marked clean, the WAL checkpointed, the ledger current."""
        conn = self._conn_or_fail()
        try:
            conn.execute("UPDATE state SET clean = 1")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.error("spool %s: clean close failed (the next open checks it): %s", self.path, exc)
        try:
            self._ledger.note(self._next_seq, sum(self.figures.depth))
        except SpoolError as exc:
            log.error("spool %s: %s", self.path, exc)
        self._close_conn()
        self._fail_all(SpoolClosedError("the spool was closed", path=str(self.path)))


def _rows(op: Append) -> list[tuple[int, str, str, float, float, float, int, bytes]]:
    assert op.encoded is not None
    return op.encoded.rows
