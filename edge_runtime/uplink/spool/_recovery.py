"""Opening the spool file safely: checks after a crash, WAL salvage, rebuilding a damaged file.

``open_checked`` never gives up on a damaged file: it moves the file aside, copies every record
that SQL can still read and every record a raw page scan can verify into a fresh file, counts
what was lost and carries on. It raises :class:`SpoolError` only when the disk itself refuses
(no permission, no space, another process holds the file).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.uplink.spool._db import (
    INSERT_OR_IGNORE_SQL,
    connect,
    copy_readable,
    count_by_class,
    is_corruption,
    max_seq,
    read_state,
    write_state,
)
from edge_runtime.uplink.spool._salvage import SalvageResult, salvage_db_file, salvage_wal
from edge_runtime.uplink.spool.config import SpoolConfig
from edge_runtime.uplink.spool.errors import SpoolError
from edge_runtime.uplink.spool.records import PRIORITY_SHIFT

__all__ = ["Opened", "open_checked", "rebuild"]

log = logging.getLogger(__name__)

_VERIFY_CHUNK = 5000


@dataclass(slots=True)
class Opened:
    """An open connection and what opening it found."""

    conn: sqlite3.Connection
    next_seq: int
    depth: list[int]
    payload_bytes: int
    unclean: bool = False
    salvaged: int = 0
    corrupt: int = 0
    rebuilt: bool = False
    check_s: float = 0.0


def _side(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _begin(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")


def _rollback(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.execute("ROLLBACK")


def _insert_salvaged(conn: sqlite3.Connection, found: SalvageResult, opened: Opened) -> None:
    """Insert verified rows that the database lacks; count cells lost beyond repair."""
    for row in found.rows.values():
        if conn.execute(INSERT_OR_IGNORE_SQL, row).rowcount:
            opened.depth[row[0] >> PRIORITY_SHIFT] += 1
            opened.payload_bytes += len(row[7])
            opened.salvaged += 1
    present = {
        rid
        for rid in found.corrupt_rowids
        if conn.execute("SELECT 1 FROM records WHERE id = ?", (rid,)).fetchone()
    }
    opened.corrupt += found.lost(present)


def _verify(conn: sqlite3.Connection, opened: Opened, per_class: int | None) -> None:
    """Check record checksums (the newest ``per_class`` of each class, or all); cut failures."""
    bad: list[tuple[int, int]] = []
    for cls in range(3):
        lo, hi = cls << PRIORITY_SHIFT, (cls + 1) << PRIORITY_SHIFT
        if per_class is not None:
            rows = conn.execute(
                "SELECT id, crc, payload FROM records WHERE id >= ? AND id < ? "
                "ORDER BY id DESC LIMIT ?",
                (lo, hi, per_class),
            ).fetchall()
            bad += [(r, len(p)) for r, c, p in rows if zlib.crc32(p) != c]
            continue
        cursor = lo - 1
        while True:
            rows = conn.execute(
                "SELECT id, crc, payload FROM records WHERE id > ? AND id < ? ORDER BY id LIMIT ?",
                (cursor, hi, _VERIFY_CHUNK),
            ).fetchall()
            bad += [(r, len(p)) for r, c, p in rows if zlib.crc32(p) != c]
            if len(rows) < _VERIFY_CHUNK:
                break
            cursor = rows[-1][0]
    if bad:
        log.error("spool: %d records failed their checksum and were cut", len(bad))
        conn.executemany("DELETE FROM records WHERE id = ?", [(rid,) for rid, _ in bad])
        for rid, size in bad:
            opened.depth[rid >> PRIORITY_SHIFT] -= 1
            opened.payload_bytes -= size
        opened.corrupt += len(bad)


def _finish(conn: sqlite3.Connection, opened: Opened, stored_next_seq: int) -> None:
    """Reconcile the sequence high-water mark, mark the file in use; inside a transaction."""
    opened.next_seq = max(stored_next_seq, max_seq(conn) + 1, opened.next_seq)
    write_state(conn, opened.next_seq, opened.depth, opened.payload_bytes)
    conn.execute("UPDATE state SET clean = 0")


def _refuse(exc: sqlite3.Error, path: Path) -> SpoolError:
    code = getattr(exc, "sqlite_errorcode", 0) or 0
    if code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return SpoolError(
            "the spool file is held by another process; each runtime needs its own data_dir",
            path=str(path),
        )
    return SpoolError(f"cannot open the spool file: {exc}", path=str(path))


def open_checked(path: Path, config: SpoolConfig) -> Opened:
    """Open (or create) the spool file, check it as configured, and repair what is damaged."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wal = _side(path, "-wal")
    # A clean close empties the WAL: frames left in it mean a crash. Keep them before SQLite
    # replays (and later overwrites) the WAL, to salvage the frames it drops.
    wal_bytes = wal.read_bytes() if wal.exists() and wal.stat().st_size > 0 else None
    try:
        conn = connect(path)
    except sqlite3.Error as exc:
        if is_corruption(exc):
            return rebuild(path, config, reason=str(exc))
        raise _refuse(exc, path) from exc
    try:
        return _check(conn, path, config, wal_bytes)
    except sqlite3.Error as exc:
        _rollback(conn)
        conn.close()
        if is_corruption(exc):
            return rebuild(path, config, reason=str(exc))
        raise _refuse(exc, path) from exc


def _check(
    conn: sqlite3.Connection, path: Path, config: SpoolConfig, wal_bytes: bytes | None
) -> Opened:
    started = time.perf_counter()
    wal_frames = 0
    found = SalvageResult()
    if wal_bytes is not None:
        # The first read replays the WAL: it stops at the first frame whose checksum fails.
        # How many frames it kept, before anything is written (a write restarts the WAL):
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        wal_frames = max(0, int(conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]))
        found = salvage_wal(wal_bytes, first_frame=wal_frames)
    state = read_state(conn)
    # frames in the WAL mean a crash even when the state row says "clean": the frame that
    # cleared the flag may be one that SQLite dropped
    unclean = wal_bytes is not None or not (state.clean or state.created)
    opened = Opened(conn, state.next_seq, list(state.depth), state.payload_bytes, unclean)
    if config.check_on_open == "always" or (config.check_on_open == "after_crash" and unclean):
        result = [str(r[0]) for r in conn.execute("PRAGMA quick_check").fetchall()]
        if result != ["ok"]:
            conn.close()
            log.error("spool %s failed quick_check: %s", path, "; ".join(result[:5]))
            return rebuild(path, config, reason="quick_check: " + result[0])
    _begin(conn)
    try:
        if found.rows or found.corrupt_rowids or found.corrupt_unknown:
            _insert_salvaged(conn, found, opened)
            log.error(
                "spool %s: the WAL lost frames after frame %d (torn write or damage); "
                "salvaged %d records from them, %d lost",
                path,
                wal_frames,
                opened.salvaged,
                opened.corrupt,
            )
        per_class = None if config.verify_all_on_open else config.verify_tail_records
        if per_class != 0:
            _verify(conn, opened, per_class)
        _finish(conn, opened, state.next_seq)
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    opened.check_s = time.perf_counter() - started
    if unclean:
        log.warning(
            "spool %s was not closed cleanly; checked in %.3f s, %d pending records",
            path,
            opened.check_s,
            sum(opened.depth),
        )
    return opened


def _prune_aside(path: Path, keep: int) -> None:
    aside = sorted(
        (
            p
            for p in path.parent.glob(path.name + ".corrupt-*")
            if not p.name.endswith(("-wal", "-shm"))
        ),
        key=lambda p: p.stat().st_mtime,
    )
    for old in aside[: max(0, len(aside) - keep)]:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                _side(old, suffix).unlink()


def rebuild(path: Path, config: SpoolConfig, *, reason: str, next_seq: int = 1) -> Opened:
    """Move a damaged spool file aside and copy every verifiable record into a fresh one."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}"
    aside = _side(path, f".corrupt-{stamp}")
    log.error("spool %s is damaged (%s); moving it to %s and rebuilding", path, reason, aside)
    try:
        for suffix in ("", "-wal", "-shm"):
            src = _side(path, suffix)
            if src.exists():
                src.rename(_side(aside, suffix))
        conn = connect(path)
        state = read_state(conn)
    except (OSError, sqlite3.Error) as exc:
        raise SpoolError(f"cannot rebuild the damaged spool: {exc}", path=str(path)) from exc
    opened = Opened(conn, max(next_seq, state.next_seq), [0, 0, 0], 0, unclean=True, rebuilt=True)
    started = time.perf_counter()
    try:
        _begin(conn)
        copied = copy_readable(aside, conn)
        found = salvage_db_file(aside, _side(aside, "-wal"))
        before = conn.total_changes
        for row in found.rows.values():
            conn.execute(INSERT_OR_IGNORE_SQL, row)
        opened.salvaged = conn.total_changes - before
        opened.depth, opened.payload_bytes = count_by_class(conn)
        total = sum(opened.depth)
        if copied.old_depth is not None:
            opened.corrupt = max(0, copied.old_depth - total)
        else:
            present = {
                rid
                for rid in found.corrupt_rowids
                if conn.execute("SELECT 1 FROM records WHERE id = ?", (rid,)).fetchone()
            }
            opened.corrupt = copied.corrupt + found.lost(present)
        _finish(conn, opened, copied.old_next_seq or 1)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        _rollback(conn)
        conn.close()
        raise SpoolError(f"cannot rebuild the damaged spool: {exc}", path=str(path)) from exc
    opened.check_s = time.perf_counter() - started
    log.error(
        "spool %s rebuilt in %.3f s: %d records copied through SQL, %d more salvaged from raw "
        "pages, %d lost (counted as corrupt_records)",
        path,
        opened.check_s,
        copied.copied,
        opened.salvaged,
        opened.corrupt,
    )
    _prune_aside(path, config.keep_corrupt_files)
    return opened
