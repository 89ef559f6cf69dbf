"""Which pending records the sender may take next: lanes, cursors and the backlog mark.

Lanes, drained in this order: ``alert`` (class 0), ``live`` (class 1 above the backlog mark)
and ``backlog`` (class 1 up to the mark, merged by sequence number with class 2). The mark is
a sequence number: records appended before the link went down, before the spool was opened,
or more than the live window ago fall at or below it. Order is kept per stream within a lane;
a stream's live records may overtake its own backlog (they carry ``backlog=False`` and the
backlog ones ``backlog=True``, so the core can tell them apart).

Each lane range has a cursor: every id at or below it is leased, sent or gone, so a lease is a
rowid range scan that starts where the previous one stopped. Records the core acknowledged but
a full disk kept from being deleted are *deferred*: they stay leased through every release and
reset, so they are never sent again, until their delete goes through. Only the writer thread
uses this.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import sqlite3
import zlib
from collections import deque
from collections.abc import Iterable

from edge_runtime.uplink.spool.records import (
    PRIORITY_SHIFT,
    SEQ_MASK,
    Lane,
    Priority,
    SpoolRecord,
    record_id,
)

__all__ = ["LeaseBook"]

_Row = tuple[int, str, str, float, float, float, int, bytes]
_SQL = (
    "SELECT id, stream, envelope_id, window_start, window_end, created_at, crc, payload "
    "FROM records WHERE id > ? AND id <= ? ORDER BY id LIMIT ?"
)
_TIMELINE_BUCKET_S = 0.5


def _seq_of(row: _Row) -> int:
    return row[0] & SEQ_MASK


class _Range:
    __slots__ = ("cursor", "hi")

    def __init__(self, cursor: int, hi: int) -> None:
        self.cursor = cursor
        self.hi = hi


class LeaseBook:
    """In-memory lease state of one open spool."""

    def __init__(self) -> None:
        self.leased: dict[int, int] = {}  # id -> payload size
        self.deferred: dict[int, int] = {}  # acknowledged, delete pending: id -> payload size
        self.mark = 0
        self._timeline: deque[tuple[float, int]] = deque(maxlen=200_000)
        self._alert = _Range(0, 0)
        self._live = _Range(0, 0)
        self._old = _Range(0, 0)  # class 1 up to the mark
        self._compacted = _Range(0, 0)  # class 2
        self.reset()

    # -- marks ---------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every lease: all pending records can be leased again, oldest first (but the
        deferred ones)."""
        self.leased.clear()
        self.leased.update(self.deferred)
        self._alert.cursor, self._alert.hi = record_id(0, 0), record_id(1, 0) - 1
        self._old.cursor, self._old.hi = record_id(1, 0), record_id(1, self.mark)
        self._live.cursor, self._live.hi = record_id(1, self.mark), record_id(2, 0) - 1
        self._compacted.cursor, self._compacted.hi = record_id(2, 0), record_id(3, 0) - 1

    def set_mark(self, seq: int) -> None:
        """Move every class-1 record with a sequence number up to ``seq`` to the backlog lane."""
        if seq <= self.mark:
            return
        self.mark = seq
        self._old.hi = record_id(1, seq)
        self._live.cursor = max(self._live.cursor, record_id(1, seq))

    def note_commit(self, now: float, last_seq: int) -> None:
        """Remember that every sequence number up to ``last_seq`` was committed by ``now``."""
        timeline = self._timeline
        if timeline and math.floor(timeline[-1][0] / _TIMELINE_BUCKET_S) == math.floor(
            now / _TIMELINE_BUCKET_S
        ):
            timeline[-1] = (now, last_seq)
        else:
            timeline.append((now, last_seq))

    def age(self, cutoff: float) -> None:
        """Move records committed at or before ``cutoff`` (monotonic) to the backlog lane."""
        timeline = self._timeline
        seq = 0
        while timeline and timeline[0][0] <= cutoff:
            seq = timeline.popleft()[1]
        if seq:
            self.set_mark(seq)

    # -- leases --------------------------------------------------------------------------

    def _range_of(self, rid: int) -> _Range:
        cls = rid >> PRIORITY_SHIFT
        if cls == Priority.ALERT:
            return self._alert
        if cls == Priority.BACKLOG:
            return self._compacted
        return self._old if rid & SEQ_MASK <= self.mark else self._live

    def release(self, ids: Iterable[int] | None) -> int:
        """Return leased records to pending; all of them when ``ids`` is None."""
        if ids is None:
            count = len(self.leased) - len(self.deferred)
            self.reset()
            return count
        count = 0
        for rid in ids:
            if rid not in self.deferred and self.leased.pop(rid, None) is not None:
                count += 1
                rng = self._range_of(rid)
                rng.cursor = min(rng.cursor, rid - 1)
        return count

    def defer(self, rid: int, size: int) -> None:
        """The core acknowledged ``rid`` but its delete failed: never lease it again."""
        self.deferred[rid] = size
        self.leased[rid] = size

    def inserted(self, rid: int) -> None:
        """A record was inserted behind a cursor (compaction): make it leasable."""
        rng = self._range_of(rid)
        rng.cursor = min(rng.cursor, rid - 1)

    def _fetch(
        self, conn: sqlite3.Connection, rng: _Range, n: int, corrupt: list[tuple[int, int]]
    ) -> tuple[list[_Row], int, bool]:
        """Leasable rows after the cursor, the last id read, and whether the range ran out.

        Rows already leased or failing their checksum are left out (the corrupt ones are
        reported in ``corrupt`` for deletion); a page holding no leasable row moves the cursor.
        """
        leased = self.leased
        crc32 = zlib.crc32
        while True:
            rows: list[_Row] = conn.execute(_SQL, (rng.cursor, rng.hi, n)).fetchall()
            if not rows:
                return [], rng.cursor, True
            good = [r for r in rows if r[0] not in leased and crc32(r[7]) == r[6]]
            if len(good) < len(rows):
                kept = {r[0] for r in good}
                corrupt += [
                    (r[0], len(r[7])) for r in rows if r[0] not in kept and r[0] not in leased
                ]
            exhausted = len(rows) < n
            if good or exhausted:
                return good, rows[-1][0], exhausted
            rng.cursor = rows[-1][0]

    def _take(
        self,
        conn: sqlite3.Connection,
        ranges: tuple[_Range, ...],
        n: int,
        *,
        budget: list[int],
        corrupt: list[tuple[int, int]],
        avg_size: int,
    ) -> list[_Row]:
        """Up to ``n`` rows from ``ranges`` in sequence order within ``budget[0]`` bytes.

        Reads about as many rows as the byte budget holds (by ``avg_size``), and more rounds
        only when needed, so that a lease does not read rows it then leaves behind.
        """
        taken: list[_Row] = []
        while len(taken) < n:
            want = n - len(taken)
            fetch = min(want, max(8, budget[0] // max(1, avg_size) + 8))
            found = [self._fetch(conn, rng, fetch, corrupt) for rng in ranges]
            start = len(taken)
            if len(found) == 1:  # one range: count what fits without a Python loop
                good = found[0][0]
                fits = bisect.bisect_right(
                    list(itertools.accumulate(len(r[7]) for r in good)), budget[0]
                )
                if fits == 0 and good and not budget[1]:
                    fits = 1  # the first record of a lease goes even when larger than max_bytes
                fits = min(fits, want)
                full = fits < len(good)
                if fits:
                    taken += good[:fits]
                    budget[0] -= sum(len(r[7]) for r in good[:fits])
                    budget[1] = 1
            else:
                full = False
                for row in heapq.merge(*(f[0] for f in found), key=_seq_of):
                    size = len(row[7])
                    if len(taken) >= n or (size > budget[0] and (taken or budget[1])):
                        full = True
                        break
                    taken.append(row)
                    budget[0] -= size
                    budget[1] = 1
            # each range: the cursor moves over what was taken (a prefix of its rows) and
            # stops before the first row left behind
            got = {row[0] for row in taken[start:]}
            for rng, (good, last, _) in zip(ranges, found, strict=True):
                left = next((row[0] for row in good if row[0] not in got), None)
                rng.cursor = last if left is None else left - 1
            if full or all(exhausted for _, _, exhausted in found):
                break
        for row in taken:
            self.leased[row[0]] = len(row[7])
        return taken

    def lease(
        self,
        conn: sqlite3.Connection,
        limit: int,
        max_bytes: int,
        *,
        backlog_budget: int | None,
        live_cutoff: float | None,
        corrupt: list[tuple[int, int]],
        avg_size: int = 512,
    ) -> list[SpoolRecord]:
        """Lease up to ``limit`` records / ``max_bytes``: alerts, then live, then backlog.

        ``backlog_budget`` caps the records taken from the backlog lane; ``live_cutoff`` (wall
        clock) flags records created before it as backlog. At least one record is returned
        when any is leasable, even one larger than ``max_bytes``.
        """
        budget = [max_bytes, 0]  # bytes left, whether anything was taken yet
        out: list[SpoolRecord] = []
        mark = self.mark
        lanes: tuple[tuple[Lane, tuple[_Range, ...]], ...] = (
            (Lane.ALERT, (self._alert,)),
            (Lane.LIVE, (self._live,)),
            (Lane.BACKLOG, (self._old, self._compacted)),
        )
        for lane, ranges in lanes:
            want = limit - len(out)
            if lane is Lane.BACKLOG and backlog_budget is not None:
                want = min(want, backlog_budget)
            if want <= 0 or (budget[0] <= 0 and budget[1]):
                continue
            rows = self._take(conn, ranges, want, budget=budget, corrupt=corrupt, avg_size=avg_size)
            if lane is Lane.BACKLOG:
                out += [SpoolRecord(*r[:6], r[7], lane, True) for r in rows]
                continue
            cutoff = -math.inf if live_cutoff is None else live_cutoff
            out += [
                SpoolRecord(*r[:6], r[7], lane, r[0] & SEQ_MASK <= mark or r[5] < cutoff)
                for r in rows
            ]
        return out
