"""Copying what SQLite can still read out of a damaged spool file, through plain SQL.

Rows are read in rowid order per priority class; a damaged page makes a read fail, and the copy
then probes forward for the next readable row. Rows whose checksum fails are left behind. Only
SQLite reads the damaged file: nothing here looks at its bytes.
"""

from __future__ import annotations

import logging
import sqlite3
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.uplink.spool._db import CLASSES, INSERT_OR_IGNORE_SQL, SELECT_ROWS_SQL
from edge_runtime.uplink.spool.records import PRIORITY_SHIFT

__all__ = ["CopyResult", "copy_readable"]

log = logging.getLogger(__name__)

_CHUNK = 512


@dataclass(slots=True)
class CopyResult:
    """What :func:`copy_readable` copied, and what the damaged file's state row still said."""

    copied: int = 0
    bad_checksums: int = 0
    unreadable_ranges: int = 0
    old_next_seq: int | None = None
    old_live: int | None = None


def _insert(
    dst: sqlite3.Connection, rows: Iterable[tuple[object, ...]], result: CopyResult
) -> None:
    good = []
    for row in rows:
        payload = row[7]
        if isinstance(payload, bytes) and zlib.crc32(payload) == row[6]:
            good.append(row)
        else:
            result.bad_checksums += 1
    if good:
        cur = dst.executemany(INSERT_OR_IGNORE_SQL, good)
        result.copied += max(cur.rowcount, 0)


def _probe(src: sqlite3.Connection, after: int, hi: int) -> int | None:
    """The first readable rowid past a damaged region starting after ``after``."""
    step = 1
    while after + step < hi:
        try:
            row = src.execute(
                "SELECT id FROM records WHERE id >= ? AND id < ? ORDER BY id LIMIT 1",
                (after + step, hi),
            ).fetchone()
        except sqlite3.DatabaseError:
            step *= 2
            continue
        return None if row is None else int(row[0])
    return None


def _read_state(src: sqlite3.Connection, path: Path, result: CopyResult) -> None:
    try:
        row = src.execute("SELECT next_seq, depth0 + depth1 + depth2 FROM state").fetchone()
    except sqlite3.Error as exc:
        log.warning("spool recovery: the state row of %s is unreadable: %s", path, exc)
        return
    if row is not None:
        result.old_next_seq, result.old_live = int(row[0]), int(row[1])


def _copy_class(
    src: sqlite3.Connection, dst: sqlite3.Connection, cls: int, out: CopyResult
) -> None:
    lo, hi = cls << PRIORITY_SHIFT, (cls + 1) << PRIORITY_SHIFT
    cursor, limit = lo - 1, _CHUNK
    while cursor < hi:
        try:
            rows = src.execute(SELECT_ROWS_SQL, (cursor, hi, limit)).fetchall()
        except sqlite3.DatabaseError:
            if limit > 1:
                limit = 1  # go row by row up to the damage
                continue
            out.unreadable_ranges += 1
            nxt = _probe(src, cursor + 1, hi)
            if nxt is None:
                return
            cursor = nxt - 1
            continue
        if not rows:
            return
        _insert(dst, rows, out)
        cursor = int(rows[-1][0])
        limit = min(_CHUNK, limit * 2)


def copy_readable(src_path: Path, dst: sqlite3.Connection) -> CopyResult:
    """Copy every record SQL can still read from a damaged spool file into ``dst``.

    ``dst`` must be inside a transaction. The damaged file is opened read-only in spirit
    (``query_only``), with ``writable_schema`` on: SQLite then reads a file whose tail was cut
    instead of refusing it whole, and reports the missing pages as damage where they are used.
    """
    result = CopyResult()
    try:
        src = sqlite3.connect(str(src_path), isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        log.error("spool recovery: %s cannot be opened at all: %s", src_path, exc)
        return result
    try:
        try:
            src.execute("PRAGMA locking_mode=EXCLUSIVE")  # no -shm file for the WAL index
            src.execute("PRAGMA query_only=ON")
            src.execute("PRAGMA writable_schema=ON")
        except sqlite3.Error as exc:
            log.error("spool recovery: %s cannot be read at all: %s", src_path, exc)
            return result
        _read_state(src, src_path, result)
        for cls in range(CLASSES):
            _copy_class(src, dst, cls, result)
    finally:
        src.close()
    return result
