"""The spool's writer thread: it owns the SQLite connection.

It runs queued work in submission order. Appends and acks that arrive within
``commit_interval_ms`` of the first one waiting share one transaction and one fsync (group
commit); a read (lease, release) that arrives meanwhile closes the group, so that reads see
committed data only. Between commits it expires records past their TTL and keeps the file
under its size cap.

With the compiled committer (``_txn.c``, see :class:`GroupCommit`) the writer encodes the
appends and a native thread inserts them and commits, on the same connection; the writer
touches the connection itself only while nothing is queued there (the committer's WAL
checkpoint after a reported commit aside, which SQLite's connection mutex serialises).
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
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

from edge_runtime.clock import Clock
from edge_runtime.types import Envelope
from edge_runtime.uplink.spool._db import (
    GroupCommit,
    insert_flat,
    is_corruption,
    used_bytes,
    write_state,
)
from edge_runtime.uplink.spool._encode import RowEncoder
from edge_runtime.uplink.spool._lease import LeaseBook
from edge_runtime.uplink.spool._maintenance import (
    Delta,
    MergeFn,
    compact,
    delete_rows,
    drop_oldest,
    expire,
    load_merge,
)
from edge_runtime.uplink.spool._recovery import Opened, open_checked, rebuild
from edge_runtime.uplink.spool.config import SpoolConfig
from edge_runtime.uplink.spool.errors import SpoolClosedError, SpoolError, SpoolFullError
from edge_runtime.uplink.spool.records import PRIORITY_SHIFT, Priority, SpoolRecord
from edge_runtime.uplink.spool.stats import Figures, SpoolStats

__all__ = ["Ack", "Append", "Call", "Done", "Gate", "Op", "Writer", "new_future"]

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


@dataclass(slots=True, eq=False)
class InFlight:
    """An append group written by the committer thread (see Writer._gather): its rows go
    into the open transaction as they are encoded; once the group is closed, its state row and
    COMMIT follow."""

    commit: GroupCommit
    appends: list[Append] = field(default_factory=list)
    delta: Delta = field(default_factory=Delta)
    next_seq: int = 0
    started: float = 0.0
    encoded: float = 0.0
    busy_s: float = 0.0  # the committer's time on it
    done_at: float = 0.0
    committed_at: float = 0.0  # the spool clock's monotonic time when it was committed
    error: BaseException | None = None
    finished: threading.Event = field(default_factory=threading.Event)


@dataclass(slots=True, eq=False)
class Done:
    """Posted by the committer thread when ``job`` is written (or failed): wakes the writer."""

    job: InFlight


Op = Append | Ack | Call | Done


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
        self._group_commit: GroupCommit | None = None
        self._in_flight: InFlight | None = None
        self._notifier: threading.Thread | None = None
        self._checkpoints = (0, 0)  # of committers closed before (deferred, inline)
        self._open: InFlight | None = None  # the group being gathered and streamed
        self._batch: list[Append | Ack] = []  # the group being gathered
        self._cap_due = False
        self._pending: Op | None = None  # an op that closed a group and starts the next
        self._gathering = False
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
        stats = self.figures.snapshot(
            now=self._clock.time(),
            leased=len(self._book.leased),
            full=self._full,
            max_bytes=self.config.max_bytes,
            file_bytes=file_bytes,
        )
        deferred, inlined = self._checkpoints
        gc = self._group_commit
        if gc is not None:
            more = gc.checkpoints()
            deferred, inlined = deferred + more[0], inlined + more[1]
        # WAL checkpoints, while the compiled committer is in use: run after it reported a
        # commit, and run inside a commit (acks, maintenance)
        extra = {
            **stats.extra,
            "wal_checkpoints_deferred": deferred,
            "wal_checkpoints_inline": inlined,
        }
        return replace(stats, extra=extra)

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
            error = SpoolError(f"the spool writer failed: {exc!r}", path=str(self.path))
            self._abandon_in_flight(error)
            self._fail_all(error)
        finally:
            self._abandon_in_flight(SpoolClosedError("the spool was closed", path=str(self.path)))
            self._close_conn()

    def _close_conn(self) -> None:
        """Close the connection (the committer's statements first)."""
        self._stop_group_commit()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _adopt(self, opened: Opened) -> None:
        """Take over a freshly opened (or rebuilt) connection and what opening it found."""
        self._conn = opened.conn
        self._group_commit = (
            GroupCommit.for_connection(opened.conn, self.path)
            if self.config.compiled_commit
            else None
        )
        self.figures.compiled_commit = self._group_commit is not None
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
            if not isinstance(op, Done) and not op.future.done():
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
                    self._await_in_flight()
                    self._maintain(force=False)
                    continue
            if isinstance(op, Done):
                self._finish(op.job)
                continue
            if isinstance(op, Call):
                self._await_in_flight()  # calls see committed data
                if self._call(op):
                    return
                continue
            if self._cap_due:  # a commit found the file past its cap while the committer
                self._await_in_flight()  # held the connection: enforce it now
                self._cap_due = False
                self._check_cap()
            deferred = self._gather(op)
            if deferred is not None:
                self._await_in_flight()
                if self._call(deferred):
                    return
            if time.monotonic() >= self._next_maintenance:
                self._await_in_flight()
                self._maintain(force=False)

    def _gather(self, op: Append | Ack) -> Call | None:  # noqa: PLR0915 - one loop, per append
        """Gather and write the group that starts with ``op``: what arrives until it is full,
        until nothing arrived for a moment once it is large, or until ``commit_interval_ms``
        after ``op``. Returns a call that closed it early (reads see committed data: it runs
        once the group is committed).

        Appends are encoded as they arrive (sequence numbers in arrival order, after those of
        the group still being committed). With the compiled transaction each encoded append
        goes at once to the committer thread, which inserts it into the group's open
        transaction without the GIL while the next one is encoded; closing the group sends
        the state row and COMMIT, and the writer goes on with the next group while that
        commits (its callers are answered in :meth:`_finish`). Without it, or for a group
        with acks, the writer writes the group itself once it is closed.
        """
        q = self._gate.queue
        batch: list[Append | Ack] = []
        self._batch = batch
        self._gathering = True
        nrows = 0
        seq = self._encode_from()
        encode_s = 0.0
        deadline = op.enqueued + self._linger
        stream = self._group_commit is not None
        nxt: Append | Ack | None = op
        deferred: Call | None = None
        arrived = time.perf_counter()
        while True:
            if nxt is None:
                pass
            elif isinstance(nxt, Ack):
                if self._open is not None:  # rows are streaming: the ack starts the next group
                    self._pending = nxt
                    break
                stream = False  # the writer writes this group itself (deletes are Python's)
                batch.append(nxt)
                nrows += len(nxt.ids)
            elif self._full:  # refused unencoded when written
                batch.append(nxt)
                nrows += len(nxt.items)
            elif self._encode_op(nxt, seq):  # else its future holds the error
                batch.append(nxt)
                nrows += len(nxt.items)
                seq = nxt.end_seq
                encode_s += time.perf_counter() - arrived
                if stream:
                    self._stream(nxt)
            if nrows >= self.config.max_batch:
                break
            now = time.perf_counter()
            wait = deadline - now
            if nrows >= _EARLY_RECORDS:
                wait = min(wait, arrived + _EARLY_GAP_S - now)
                gc = self._group_commit
                if wait <= 0 < deadline - now and self._open is not None and gc and gc.pending():
                    # the committer is still inserting: closing now would not commit any
                    # sooner, and what arrives meanwhile shares the fsync
                    wait = _EARLY_GAP_S
            try:
                got = q.get(timeout=wait) if wait > 0 else q.get_nowait()
            except queue.Empty:
                break
            if isinstance(got, Call):
                deferred = got
                break
            nxt = None
            if isinstance(got, Done):
                if self._finish(got.job):  # it failed: its numbers are free again
                    took, seq = self._restream(batch)
                    encode_s += took
                elif nrows >= _EARLY_RECORDS and self._open is not None:
                    # the group before is committed: this one commits next, and the callers
                    # just answered start the one after (two groups alternate, so the
                    # committer always has the next one's rows while one commits)
                    break
            else:
                nxt = got
                arrived = time.perf_counter()
        self._gathering = False
        self._close(batch, encode_s)
        self._batch = []
        return deferred

    def _stream(self, op: Append) -> None:
        """Queue an encoded append's rows for the group's open transaction."""
        gc = self._group_commit
        if gc is None:
            return
        try:
            gc.rows(op.flat)
        except (TypeError, ValueError, OverflowError) as exc:
            self._give_up_compiled(exc)
            return
        if self._open is None:
            self._open = InFlight(gc)
            self._start_notifier(gc)

    def _give_up_compiled(self, exc: Exception) -> None:
        """The compiled transaction refused rows: write through the sqlite3 module from now on
        (the group being gathered included; the committer rolls back what it had of it)."""
        log.error(
            "spool %s: the compiled transaction refused rows (%r); writing through the sqlite3 "
            "module from now on",
            self.path,
            exc,
        )
        self._stop_group_commit()
        self._open = None
        self.figures.compiled_commit = False

    def _close(self, batch: list[Append | Ack], encode_s: float) -> None:
        """The group is complete: commit it (streamed: send its commit to the committer)."""
        if self._in_flight is not None and self._await_in_flight():
            encode_s += self._restream(batch)[0]  # the group before failed
        job, self._open = self._open, None
        if job is None:
            self._commit(batch, encode_s)
            return
        job.appends = [op for op in batch if isinstance(op, Append)]
        job.encoded = time.perf_counter()
        job.started = job.encoded - encode_s
        job.next_seq = self._tally(job.appends, job.delta)
        depth, nbytes = self._state_after(job.delta)
        self._in_flight = job
        job.commit.commit(job.next_seq, depth, nbytes, job)

    def _tally(self, appends: list[Append], delta: Delta) -> int:
        """Add encoded ``appends`` to ``delta``; the next sequence number after them."""
        next_seq = self._committed_seq
        for op in appends:
            for cls in range(3):
                delta.depth[cls] += op.counts[cls]
            delta.nbytes += op.nbytes
            next_seq = max(next_seq, op.end_seq)
        return next_seq

    def _state_after(self, delta: Delta) -> tuple[list[int], int]:
        """The state row's pending records per class and payload bytes once ``delta`` is in."""
        depth = [self.figures.depth[i] + delta.depth[i] for i in range(3)]
        return depth, self.figures.payload_bytes + delta.nbytes

    def _encode_from(self) -> int:
        """The next sequence number to encode with: after the group being committed, if any."""
        job = self._in_flight
        return job.next_seq if job is not None else self._committed_seq

    def _restream(self, batch: list[Append | Ack]) -> tuple[float, int]:
        """The group committed before ``batch`` failed: the committer skipped ``batch``'s
        rows, and their numbers must follow on from the last committed one. Number its
        appends again and stream them anew (or leave them to the writer, if the compiled
        transaction was given up). Returns the time it took and the next number after them."""
        started = time.perf_counter()
        self._open = None
        seq = self._committed_seq
        kept: list[Append | Ack] = []
        for op in batch:
            if isinstance(op, Append) and op.end_seq:
                if not self._encode_op(op, seq):
                    continue  # failed alone (its future holds the error)
                seq = op.end_seq
                self._stream(op)
            kept.append(op)
        batch[:] = kept
        return time.perf_counter() - started, seq

    # -- the committer: inserts a group's rows while the writer encodes more ---------------

    def _start_notifier(self, gc: GroupCommit) -> None:
        """The thread that turns the committer's outcomes into Done ops for the writer."""
        if self._notifier is None:
            self._notifier = threading.Thread(
                target=self._notify_thread,
                args=(gc,),
                name=f"spool-commit:{self.path.name}",
                daemon=True,
            )
            self._notifier.start()

    def _notify_thread(self, gc: GroupCommit) -> None:
        """Answer each committed group's callers at once (the figures first), then hand the
        group to the writer (Done); a failed one only goes to the writer."""
        while (done := gc.wait()) is not None:
            for token, error, used_after, busy_s in done:
                job = cast(InFlight, token)
                job.error, job.busy_s, job.done_at = error, busy_s, time.perf_counter()
                job.committed_at = self._clock.monotonic()  # before anyone hears of it
                if error is None:
                    times = (job.started, job.encoded, job.done_at)
                    # -1: the committer could not read it
                    used = used_after if used_after >= 0 else self.figures.used_bytes
                    self._answer(job.appends, [], job.delta, [], times, used=used, write_s=busy_s)
                job.finished.set()
                self._gate.queue.put(Done(job))

    def _stop_group_commit(self) -> None:
        """Let the committer finish what is queued, then stop it and its notifier."""
        gc, self._group_commit = self._group_commit, None
        if gc is not None:
            gc.close()
            deferred, inlined = gc.checkpoints()
            self._checkpoints = (self._checkpoints[0] + deferred, self._checkpoints[1] + inlined)
        if self._notifier is not None:
            self._notifier.join()
            self._notifier = None

    def _abandon_in_flight(self, error: SpoolError) -> None:
        """The writer stops: answer the callers of the group being committed, if any (with
        their numbers if it was committed, else ``error``) and of the group being gathered."""
        job = self._in_flight
        if job is not None:
            job.finished.wait()
            self._in_flight = None
            if job.error is not None:
                self._fail_batch(job.appends, [], error)
            else:  # its callers were answered by the notifier
                self._committed_seq = job.next_seq
        self._open = None
        for op in self._batch:
            if not op.future.done():
                op.future.set_exception(error)
        self._batch = []

    def _await_in_flight(self) -> bool:
        """Wait for the group being committed and answer its callers; True when it failed."""
        job = self._in_flight
        if job is None:
            return False
        job.finished.wait()
        return self._finish(job)

    def _finish(self, job: InFlight) -> bool:
        """Complete a group the committer wrote; True when it failed (its numbers are then
        free again). Its Done may arrive after the writer already waited for it: then
        nothing is left to do."""
        if job is not self._in_flight:
            return False
        self._in_flight = None
        error = job.error
        if error is not None and self._group_commit is not None:
            # the committer skips everything queued after the failure (the open group's rows
            # among them: see _restream) until this
            self._group_commit.reset()
        if error is None:  # its callers were answered by the notifier
            self._committed_seq = job.next_seq
            self._after_commit(appended=True, at=job.committed_at)
            return False
        if isinstance(error, sqlite3.Error) and is_corruption(error):
            try:
                self._on_db_error(error)
            except SpoolError as fatal:
                self._fail_batch(job.appends, [], fatal)
                raise  # no file to write to: the writer stops (see run)
            self._commit(list(job.appends), 0.0)  # into the rebuilt file (or its error)
        elif isinstance(error, sqlite3.Error):
            self._fail_batch(
                job.appends, [], SpoolError(f"commit failed: {error}", path=str(self.path))
            )
        else:
            self._fail_batch(
                job.appends, [], SpoolError(f"commit failed: {error!r}", path=str(self.path))
            )
            raise error
        return True

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
        self._close_conn()
        self._adopt(rebuild(self.path, self.config, reason=str(exc), next_seq=self._committed_seq))
        self._notify()

    def _refuse_if_full(self, appends: list[Append]) -> list[Append]:
        """``appends``, or none of them (answered with an error) while the spool is full."""
        if not self._full or not appends:
            return appends
        error = SpoolFullError(
            "the spool is at max_bytes and drop_policy is reject_new; the append was "
            "refused (raise max_bytes or let the sender drain)",
            path=str(self.path),
        )
        for op in appends:
            op.future.set_exception(error)
        self.figures.rejected(sum(len(op.items) for op in appends))
        return []

    def _commit(self, batch: list[Append | Ack], encode_s: float) -> None:
        """Write a gathered group in one transaction, here."""
        appends = self._refuse_if_full([op for op in batch if isinstance(op, Append)])
        if any(not op.end_seq for op in appends):  # gathered while full; no longer
            seq, kept = self._committed_seq, []
            for op in appends:
                if op.end_seq or self._encode_op(op, seq):
                    seq = op.end_seq
                    kept.append(op)
            appends = kept
        acks = [op for op in batch if isinstance(op, Ack)]
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
            except Exception as exc:
                # a fault of the writer itself: its callers get an answer, then the writer
                # stops (see run) and the spool refuses work
                self._fail_batch(
                    appends, acks, SpoolError(f"commit failed: {exc!r}", path=str(self.path))
                )
                raise
        self._complete(appends, acks, delta, acked, (started, encoded, time.perf_counter()))

    def _complete(
        self,
        appends: list[Append],
        acks: list[Ack],
        delta: Delta,
        acked: list[int],
        times: tuple[float, float, float],
    ) -> None:
        """A group the writer committed itself: figures, its callers' answers, the cap."""
        for rid in delta.acked_ids:
            self._book.leased.pop(rid, None)
        used = used_bytes(self._conn_or_fail())
        self._answer(appends, acks, delta, acked, times, used=used)
        self._after_commit(appended=bool(appends))

    def _answer(
        self,
        appends: list[Append],
        acks: list[Ack],
        delta: Delta,
        acked: list[int],
        times: tuple[float, float, float],
        *,
        used: int,
        write_s: float | None = None,
    ) -> None:
        """The figures of a committed group, then its callers' answers. Safe from any thread
        (the committer's notifier answers a streamed group as soon as it is committed; the
        writer does the rest in :meth:`_finish`).

        ``used`` is the file's pages in use after the commit; ``write_s`` the committer's time
        on the group (else the time after encoding)."""
        self.figures.apply(
            delta.depth,
            delta.nbytes,
            used,
            delta.removed,
            (delta.compacted_parts, delta.compacted_records),
        )
        rows = sum(len(op.items) for op in appends)
        self.figures.committed(
            appended=rows,
            acked=sum(acked),
            records=rows + sum(len(op.ids) for op in acks),
            times=times,
            enqueued=[op.enqueued for op in appends],
            write_s=write_s,
        )
        for append in appends:
            append.future.set_result(range(append.first_seq, append.end_seq))
        for ack, count in zip(acks, acked, strict=True):
            ack.future.set_result(count)
        if appends:
            if self.figures.oldest_created is None:
                self.figures.set_oldest(cast(float, appends[0].flat[5]))  # row 0's created_at
            self._notify()

    def _after_commit(self, *, appended: bool, at: float | None = None) -> None:
        """The writer's part after a commit (its callers were answered): the lease book (the
        commit's time: ``at``, else now), then the size cap."""
        if appended:
            when = self._clock.monotonic() if at is None else at
            self._book.note_commit(when, self._committed_seq - 1)
        # not while the committer holds the connection, nor while a group gathers (whether it
        # is refused or encoded must not change meanwhile)
        if not self._gathering and self._open is None and self._in_flight is None:
            self._check_cap()
        elif self._full or self.figures.used_bytes > self._low_water():
            self._cap_due = True  # the next group waits for the committer and checks first

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
        conn.execute("BEGIN IMMEDIATE")
        try:
            if appends:  # one flat list for the group: fewer, larger statements
                insert_flat(conn, appends[0].flat if len(appends) == 1 else _concat(appends))
            next_seq = self._tally(appends, delta)
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
        write_state(conn, next_seq, *self._state_after(delta))

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
        self._await_in_flight()
        conn = self._conn_or_fail()
        try:
            conn.execute("UPDATE state SET clean = 1")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.error("spool %s: clean close failed (the next open checks it): %s", self.path, exc)
        self._close_conn()
        self._fail_all(SpoolClosedError("the spool was closed", path=str(self.path)))
