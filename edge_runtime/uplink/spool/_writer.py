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

A group that fails because the disk is full refuses its appends (``SpoolFullError``, reason
``disk_full``) and commits its acks alone, with room from the disk reserve; acks that still
cannot be deleted are held back in memory, never to be sent again (see ``_room``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from edge_runtime.clock import Clock
from edge_runtime.uplink.spool._db import is_corruption
from edge_runtime.uplink.spool._encode import encode_rows
from edge_runtime.uplink.spool._maintenance import MergeFn
from edge_runtime.uplink.spool._ops import Ack, Append, Call, Gate, Op
from edge_runtime.uplink.spool._room import is_disk_full
from edge_runtime.uplink.spool._store import Store
from edge_runtime.uplink.spool.config import SpoolConfig
from edge_runtime.uplink.spool.errors import SpoolClosedError, SpoolError, SpoolFullError
from edge_runtime.uplink.spool.records import SpoolRecord
from edge_runtime.uplink.spool.stats import SpoolStats

__all__ = ["Writer"]

log = logging.getLogger(__name__)

# Group commit: a group that already holds this many records stops waiting for more once
# nothing arrived for _EARLY_GAP_S (instead of waiting out commit_interval_ms): its fsync is
# shared widely enough, and waiting on only delays appends that are all already in.
_EARLY_RECORDS = 1000
_EARLY_GAP_S = 0.00025


class Writer:
    """The writer thread's loop: queued work in order, appends and acks in group commits (the
    SQL work and what the spool knows about its file are the :class:`Store`'s)."""

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
        self._store = Store(config, path, clock, merge)
        self._linger = config.commit_interval_ms / 1000.0
        self._next_maintenance = 0.0
        self._batch: list[Append | Ack] = []  # the group being gathered
        self._pending: Call | None = None  # a call that closed a group: it runs next

    @property
    def conn(self) -> sqlite3.Connection | None:
        """The open connection (for tests that reach into the writer thread)."""
        return self._store.conn

    def snapshot(self) -> SpoolStats:
        """The figures (safe from any thread)."""
        file_bytes = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                file_bytes += self.path.with_name(self.path.name + suffix).stat().st_size
        room = self._store.room
        return self._store.figures.snapshot(
            now=self._clock.time(),
            leased=len(self._store.book.leased),
            full=self._store.cap.full,
            max_bytes=self.config.max_bytes,
            file_bytes=file_bytes,
            disk_full=room.full,
            disk_full_events=room.events,
            reserve_bytes=room.reserve.held(),
        )

    # -- the thread ------------------------------------------------------------------------

    def run(self, opened: Future[None]) -> None:
        try:
            self._store.open()
        except SpoolError as exc:
            self._gate.broken = str(exc)
            self._store.close()
            opened.set_exception(exc)
            return
        except Exception as exc:
            log.exception("spool %s: opening failed", self.path)
            self._gate.broken = f"opening failed: {exc!r}"
            self._store.close()
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
            error = SpoolError(f"the spool writer failed: {exc!r}", path=str(self.path))
            self._store.figures.set_error(str(error))
            self._fail_all(error)
        finally:
            self._store.close()

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
        seq = self._store.next_seq
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
        """Refuse ``op`` while the disk is full, or the spool is full under ``reject_new``."""
        if self._store.room.full:
            self._refuse_disk_full([op])
            return True
        if not self._store.cap.full:
            return False
        op.future.set_exception(
            SpoolFullError(
                "the spool is at max_bytes and drop_policy is reject_new; the append was "
                "refused (raise max_bytes or let the sender drain)",
                path=str(self.path),
            )
        )
        self._store.figures.rejected(len(op.items))
        return True

    def _refuse_disk_full(self, appends: list[Append]) -> None:
        error = SpoolFullError(
            f"the disk is full ({self._store.room.reason}); the append was refused. Free some "
            "space on the spool's disk; the spool takes appends again once it has room, and "
            "goes on sending and deleting what the core acknowledged meanwhile",
            path=str(self.path),
            reason="disk_full",
        )
        for op in appends:
            op.future.set_exception(error)
        self._store.figures.rejected(sum(len(op.items) for op in appends), disk_full=True)

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
        kept, seq = [], self._store.next_seq
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
        written = self._write(appends, acks)
        if written is None:
            return
        appends, acked = written
        done = time.perf_counter()
        figures = self._store.figures
        rows = sum(len(op.items) for op in appends)
        figures.committed(
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
            if figures.oldest_created is None:
                first = appends[0].encoded
                assert first is not None
                figures.set_oldest(first.rows[0][5])
            self._notify()
        self._store.check_cap()

    def _write(
        self, appends: list[Append], acks: list[Ack]
    ) -> tuple[list[Append], list[int]] | None:
        """Commit a group: the appends written and how many of each ack's ids were found, or
        None when it failed (its callers answered). A damaged file is rebuilt and the group
        written into the new one; on a full disk the appends are refused and the acks go on
        alone (deferred when even they cannot be written)."""
        rebuilt = False
        while True:
            error: sqlite3.Error | SpoolError
            try:
                _, acked = self._store.write_group(appends, acks)
            except sqlite3.Error as exc:
                if not rebuilt and is_corruption(exc):
                    rebuilt = True
                    try:
                        self._on_db_error(exc)
                    except SpoolError as fatal:
                        self._fail(appends, acks, fatal)
                        raise  # no file to write to: the writer stops (see run)
                    appends = self._renumber(appends)  # into the rebuilt file
                    continue
                error = exc
            except SpoolError as exc:  # the ledger could not reserve the numbers
                error = exc
            else:
                self._store.figures.set_error(None)
                return appends, acked
            if not is_disk_full(error):
                failed = (
                    error
                    if isinstance(error, SpoolError)
                    else SpoolError(f"commit failed: {error}", path=str(self.path))
                )
                self._store.figures.set_error(str(failed))
                self._fail(appends, acks, failed)
                return None
            room = self._store.room
            if appends:  # refuse them, release part of the reserve, and try the acks alone
                room.enter(error)
                self._refuse_disk_full(appends)
                appends = []
                if acks:
                    continue
                return None
            # the acks alone failed: smaller transactions, and what still fails is held back
            counts = self._store.delete_acks_in_chunks(acks)
            if self._store.book.deferred:
                room.enter(error)  # the rest of the reserve, for the next maintenance round
            return [], counts

    def _fail(self, appends: list[Append], acks: list[Ack], error: SpoolError) -> None:
        for append in appends:
            append.future.set_exception(error)
        for ack in acks:
            ack.future.set_exception(error)

    # -- calls -----------------------------------------------------------------------------

    def _call(self, op: Call) -> bool:
        """Run a queued call; True when it was the stop request."""
        try:
            result = op.fn()
        except sqlite3.Error as exc:
            error = SpoolError(f"spool operation failed: {exc}", path=str(self.path))
            error.__cause__ = exc
            if is_disk_full(exc):
                self._store.room.enter(exc)
            else:
                self._store.figures.set_error(str(error))
            try:
                self._on_db_error(exc)  # a failed rebuild ends the writer (see run)
            finally:
                op.future.set_exception(error)  # once the file is rebuilt
        except SpoolError as exc:
            op.future.set_exception(exc)
        else:
            op.future.set_result(result)
        return op.stop

    def _on_db_error(self, exc: sqlite3.Error) -> None:
        """Rebuild the file when an error says it is damaged (see Store.on_db_error)."""
        if self._store.on_db_error(exc):
            self._notify()

    def lease(
        self, limit: int, max_bytes: int, backlog_budget: int | None, live_window_s: float | None
    ) -> list[SpoolRecord]:
        return self._store.lease(limit, max_bytes, backlog_budget, live_window_s)

    def release(self, ids: list[int] | None, mark_backlog: bool) -> int:
        count = self._store.book.release(ids)
        if mark_backlog:
            self._store.book.set_mark(self._store.next_seq - 1)
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
            self._store.upkeep_room()
            self._store.expire()
            self._store.check_cap()
        except sqlite3.Error as exc:
            if is_disk_full(exc):
                self._store.room.enter(exc)
            else:
                self._on_db_error(exc)
        self._store.note_ledger()

    def shutdown(self) -> None:
        """The clean close: the file marked clean, the WAL checkpointed, the ledger current."""
        self._store.close_clean()
        self._fail_all(SpoolClosedError("the spool was closed", path=str(self.path)))
