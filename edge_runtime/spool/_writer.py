"""The spool's writer thread: it alone uses the SQLite connection.

It runs queued work in submission order. Appends and acks that arrive within
``commit_interval_ms`` of the first one waiting share one transaction and one fsync (group
commit); a read (lease, release) that arrives meanwhile closes the group, so that reads see
committed data only. Between commits it expires records past their TTL and keeps the file
under its size cap.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

from edge_runtime.clock import Clock
from edge_runtime.spool._db import insert_flat, is_corruption, used_bytes, write_state
from edge_runtime.spool._encode import RowEncoder
from edge_runtime.spool._lease import LeaseBook
from edge_runtime.spool._maintenance import (
    Delta,
    MergeFn,
    compact,
    delete_rows,
    drop_oldest,
    expire,
    load_merge,
)
from edge_runtime.spool._recovery import Opened, open_checked, rebuild
from edge_runtime.spool.config import SpoolConfig
from edge_runtime.spool.errors import SpoolClosedError, SpoolError, SpoolFullError
from edge_runtime.spool.records import PRIORITY_SHIFT, Priority, SpoolRecord
from edge_runtime.spool.stats import Figures, SpoolStats
from edge_runtime.uplink.envelope import Envelope

__all__ = ["Ack", "Append", "Call", "Gate", "Op", "Writer", "new_future"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_COMPACT_CHUNK = 5000
_TTL_BUDGET = 50_000
_CAP_BUDGET_S = 0.25
# Group commit: a group that already holds this many records stops waiting for more once
# nothing arrived for _EARLY_GAP_S (instead of waiting out commit_interval_ms): its fsync is
# shared widely enough, and waiting on only delays appends that are all already in.
_EARLY_RECORDS = 1000
_EARLY_GAP_S = 0.00025


@dataclass(slots=True, eq=False)
class Append:
    """Envelopes (or summaries and their ``wrap``) to store; encoded by the writer."""

    items: Sequence[Any]
    wrap: Callable[[Any, int], Envelope] | None
    priority: int | None
    future: Future[range]
    enqueued: float
    flat: list[object] = field(default_factory=list)
    counts: list[int] = field(default_factory=lambda: [0, 0, 0])
    nbytes: int = 0
    first_seq: int = 0
    end_seq: int = 0


def _concat(appends: list[Append]) -> list[object]:
    flat: list[object] = []
    for op in appends:
        flat += op.flat
    return flat


@dataclass(slots=True, eq=False)
class Ack:
    ids: list[int]
    future: Future[int]
    enqueued: float


@dataclass(slots=True, eq=False)
class Call:
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
        self._merge = merge
        self.listeners: list[Callable[[], None]] = []
        self._conn: sqlite3.Connection | None = None
        self._committed_seq = 1  # the next sequence number; stored in the state row
        self._encoder = RowEncoder()
        self._book = LeaseBook()
        self._linger = config.commit_interval_ms / 1000.0
        self._next_maintenance = 0.0
        self._compact_cursor = Priority.LIVE << PRIORITY_SHIFT
        self._compact_exhausted = False
        self._full = False
        self._enforcing = False
        self.figures = Figures()

    def snapshot(self) -> SpoolStats:
        """The figures (safe from any thread)."""
        file_bytes = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                file_bytes += self.path.with_name(self.path.name + suffix).stat().st_size
        return self.figures.snapshot(
            now=self._clock.time(),
            leased=len(self._book.leased),
            full=self._full,
            max_bytes=self.config.max_bytes,
            file_bytes=file_bytes,
        )

    # public entry points for queued calls (run in the writer thread)

    def lease(
        self, limit: int, max_bytes: int, backlog_budget: int | None, live_window_s: float | None
    ) -> list[SpoolRecord]:
        return self._lease(limit, max_bytes, backlog_budget, live_window_s)

    def release(self, ids: list[int] | None, mark_backlog: bool) -> int:
        return self._release(ids, mark_backlog)

    def maintain(self) -> None:
        self._maintain(force=True)

    def shutdown(self) -> None:
        self._shutdown()

    # -- writer thread ---------------------------------------------------------------------

    def run(self, opened: Future[None]) -> None:
        try:
            self._adopt(open_checked(self.path, self.config))
        except SpoolError as exc:
            self._gate.broken = str(exc)
            opened.set_exception(exc)
            return
        except Exception as exc:
            log.exception("spool %s: opening failed", self.path)
            self._gate.broken = f"opening failed: {exc!r}"
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
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None

    def _adopt(self, opened: Opened) -> None:
        """Take over a freshly opened (or rebuilt) connection and what opening it found."""
        self._conn = opened.conn
        self._committed_seq = max(self._committed_seq, opened.next_seq)
        self._book = LeaseBook()
        self._book.set_mark(opened.next_seq - 1)  # everything pending at open is backlog
        self.figures.reset(
            opened.depth,
            opened.payload_bytes,
            used_bytes(opened.conn),
            salvaged=opened.salvaged,
            rebuilt=opened.rebuilt,
            corrupt=opened.corrupt,
            check_s=opened.check_s,
        )
        self._refresh_oldest()

    def _fail_all(self, error: SpoolError) -> None:
        with self._gate.lock:
            self._gate.accepting = False
            self._gate.broken = str(error)
        while True:
            try:
                op = self._gate.queue.get_nowait()
            except queue.Empty:
                return
            if not op.future.done():
                op.future.set_exception(error)

    def _loop(self) -> None:
        q = self._gate.queue
        while True:
            timeout = max(0.0, self._next_maintenance - time.monotonic())
            try:
                op = q.get(timeout=timeout)
            except queue.Empty:
                self._maintain(force=False)
                continue
            if isinstance(op, Call):
                if self._call(op):
                    return
                continue
            # Gather the group. Appends are encoded as they arrive (sequence numbers in arrival
            # order, from the last committed one), so that encoding fills the time spent
            # waiting for more work instead of adding to it.
            batch: list[Append | Ack] = []
            nrows = 0
            seq = self._committed_seq
            encode_s = 0.0
            deadline = op.enqueued + self._linger
            deferred: Call | None = None
            nxt: Append | Ack = op
            while True:
                arrived = time.perf_counter()
                if isinstance(nxt, Ack):
                    batch.append(nxt)
                    nrows += len(nxt.ids)
                elif self._full:  # refused unencoded in _commit
                    batch.append(nxt)
                    nrows += len(nxt.items)
                elif self._encode_op(nxt, seq):  # else its future holds the error
                    batch.append(nxt)
                    nrows += len(nxt.items)
                    seq = nxt.end_seq
                    encode_s += time.perf_counter() - arrived
                if nrows >= self.config.max_batch:
                    break
                now = time.perf_counter()
                wait = deadline - now
                if nrows >= _EARLY_RECORDS:
                    wait = min(wait, arrived + _EARLY_GAP_S - now)
                try:
                    got = q.get(timeout=wait) if wait > 0 else q.get_nowait()
                except queue.Empty:
                    break
                if isinstance(got, Call):
                    deferred = got  # reads see committed data: commit first
                    break
                nxt = got
            self._commit(batch, encode_s)
            if deferred is not None and self._call(deferred):
                return
            if time.monotonic() >= self._next_maintenance:
                self._maintain(force=False)

    def _call(self, op: Call) -> bool:
        """Run a queued call; True when it was the stop request."""
        try:
            result = op.fn()
        except sqlite3.Error as exc:
            error = SpoolError(f"spool operation failed: {exc}", path=str(self.path))
            error.__cause__ = exc
            op.future.set_exception(error)
            self._on_db_error(exc)  # a failed rebuild ends the writer (see _run)
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
        conn = self._conn
        self._conn = None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._adopt(rebuild(self.path, self.config, reason=str(exc), next_seq=self._committed_seq))
        self._notify()

    def _commit(self, batch: list[Append | Ack], encode_s: float) -> None:
        """Write a gathered group (its appends already encoded) in one transaction."""
        appends = [op for op in batch if isinstance(op, Append)]
        acks = [op for op in batch if isinstance(op, Ack)]
        if self._full and appends:
            error = SpoolFullError(
                "the spool is at max_bytes and drop_policy is reject_new; the append was "
                "refused (raise max_bytes or let the sender drain)",
                path=str(self.path),
            )
            for op in appends:
                op.future.set_exception(error)
            self.figures.rejected(sum(len(op.items) for op in appends))
            appends = []
        encoded = time.perf_counter()
        started = encoded - encode_s  # encoding happened while the group gathered
        if not appends and not acks:
            return
        for attempt in (1, 2):
            try:
                delta, acked = self._write_batch(appends, acks)
                break
            except sqlite3.Error as exc:
                if attempt == 1 and is_corruption(exc):
                    try:
                        self._on_db_error(exc)
                    except SpoolError as fatal:
                        self._fail_batch(appends, acks, fatal)
                        raise  # no file to write to: the writer stops (see run)
                    continue  # the same records go into the rebuilt file
                self._fail_batch(
                    appends, acks, SpoolError(f"commit failed: {exc}", path=str(self.path))
                )
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
            append.future.set_result(range(append.first_seq, append.end_seq))
        for ack, count in zip(acks, acked, strict=True):
            ack.future.set_result(count)
        if appends:
            self._book.note_commit(self._clock.monotonic(), self._committed_seq - 1)
            if self.figures.oldest_created is None:
                self.figures.set_oldest(cast(float, appends[0].flat[5]))  # row 0's created_at
            self._notify()
        self._check_cap()  # after the callers were answered

    def _encode_op(self, op: Append, seq: int) -> bool:
        """Encode ``op`` with sequence numbers from ``seq`` on; False (and the op's future
        failed) when it cannot be encoded: it fails alone and uses up no numbers."""
        flat: list[object] = []
        counts = [0, 0, 0]
        try:
            end, nbytes = self._encoder.encode_rows(
                op.items, op.wrap, op.priority, seq, (flat, counts)
            )
        except Exception as exc:  # noqa: BLE001 - the caller's data or wrap: its error
            error = SpoolError(
                f"append refused, an envelope cannot be encoded: {exc!r}; stats must be "
                "numbers or None and attrs plain data",
                path=str(self.path),
            )
            error.__cause__ = exc
            op.future.set_exception(error)
            return False
        op.flat, op.counts, op.nbytes, op.first_seq, op.end_seq = flat, counts, nbytes, seq, end
        return True

    def _fail_batch(self, appends: list[Append], acks: list[Ack], error: SpoolError) -> None:
        for append in appends:
            append.future.set_exception(error)
        for ack in acks:
            ack.future.set_exception(error)

    def _write_batch(self, appends: list[Append], acks: list[Ack]) -> tuple[Delta, list[int]]:
        conn = self._conn_or_fail()
        delta = Delta()
        acked: list[int] = []
        next_seq = self._committed_seq
        conn.execute("BEGIN IMMEDIATE")
        try:
            if appends:  # one flat list for the group: fewer, larger statements
                insert_flat(conn, appends[0].flat if len(appends) == 1 else _concat(appends))
            for op in appends:
                for cls in range(3):
                    delta.depth[cls] += op.counts[cls]
                delta.nbytes += op.nbytes
                next_seq = max(next_seq, op.end_seq)
            if acks:
                acked = self._delete_acked(conn, acks, delta)
            self._write_state(conn, delta, next_seq)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self._committed_seq = next_seq
        return delta, acked

    def _delete_acked(self, conn: sqlite3.Connection, acks: list[Ack], delta: Delta) -> list[int]:
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
        self.figures.apply(
            delta.depth,
            delta.nbytes,
            used_bytes(self._conn_or_fail()),
            delta.removed,
            (delta.compacted_parts, delta.compacted_records),
        )

    def _check_cap(self) -> None:
        """Enforce the size cap when the file is past it (or still full)."""
        if self._enforcing:
            return
        used = self.figures.used_bytes
        if used <= self._low_water():
            self._full = False
            self._compact_cursor = Priority.LIVE << PRIORITY_SHIFT  # next time from the start
            self._compact_exhausted = False
            return
        if used <= self.config.max_bytes and not self._full:
            return
        self._enforcing = True
        try:
            self._enforce_cap()
        finally:
            self._enforcing = False

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
            self._write_state(conn, delta, self._committed_seq)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        for rid in delta.inserted_ids:
            self._book.inserted(rid)
        self._after_write(delta)
        self._check_cap()
        return result

    # -- leases ----------------------------------------------------------------------------

    def _lease(
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
            log.error(
                "spool %s: %d records failed their checksum when leased and were cut",
                self.path,
                len(corrupt),
            )
            self._transaction(lambda c, d: delete_rows(c, corrupt, d, "corrupt_records"))
        return records

    def _release(self, ids: list[int] | None, mark_backlog: bool) -> int:
        count = self._book.release(ids)
        if mark_backlog:
            self._book.set_mark(self._committed_seq - 1)
        self._notify()
        return count

    def _notify(self) -> None:
        for callback in list(self.listeners):
            try:
                callback()
            except Exception:
                log.exception("spool listener %r failed", callback)

    # -- maintenance -----------------------------------------------------------------------

    def _low_water(self) -> int:
        return int(self.config.max_bytes * self.config.low_water)

    def _maintain(self, *, force: bool) -> None:
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

    def _enforce_cap(self) -> None:
        """Bring the file under the low-water mark: compaction first, then drops or refusal.

        Works for at most ``_CAP_BUDGET_S`` at a time; the next commit or maintenance round
        goes on where it stopped.
        """
        cap, target = self.config.max_bytes, self._low_water()
        deadline = time.perf_counter() + _CAP_BUDGET_S
        compaction = self.config.compaction
        merge = self._merge_fn() if compaction.enabled else None
        while (
            merge is not None and not self._compact_exhausted and self.figures.used_bytes > target
        ):
            if time.perf_counter() > deadline:
                return
            outcome = self._transaction(
                partial(
                    compact,
                    leased=self._book.leased,
                    cursor=self._compact_cursor,
                    cutoff=self._clock.time() - compaction.min_age_s,
                    compact_to_s=compaction.compact_to_s,
                    merge=merge,
                    chunk=_COMPACT_CHUNK,
                )
            )
            self._compact_cursor = outcome.cursor
            self._compact_exhausted = outcome.exhausted
        if self.figures.used_bytes <= target:
            return
        if self.config.drop_policy == "reject_new":
            if not self._full:
                log.error("spool %s is full (%d bytes); refusing appends", self.path, cap)
            self._full = True
            return
        while self.figures.used_bytes > target and time.perf_counter() < deadline:
            dropped = self._transaction(
                partial(
                    drop_oldest,
                    leased=self._book.leased,
                    need_bytes=self.figures.used_bytes - target,
                )
            )
            if not dropped:
                break
            log.warning("spool %s at its cap: dropped the %d oldest records", self.path, dropped)

    def _merge_fn(self) -> MergeFn | None:
        if self._merge is None:
            self._merge = load_merge()
            if self._merge is None:
                log.warning(
                    "spool: edge_runtime.aggregation.stats.merge_stats is not available; "
                    "compaction is skipped and the cap is enforced by drop_policy alone"
                )
        return self._merge

    def _shutdown(self) -> None:
        conn = self._conn_or_fail()
        try:
            conn.execute("UPDATE state SET clean = 1")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.error("spool %s: clean close failed (the next open checks it): %s", self.path, exc)
        conn.close()
        self._conn = None
        self._fail_all(SpoolClosedError("the spool was closed", path=str(self.path)))
