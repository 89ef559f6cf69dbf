"""Opening the spool file safely: SQLite's checks, and SQLite's own recovery for damage.

``open_spool`` runs SQLite's ``quick_check`` when the file was not closed cleanly (or always,
per ``check_on_open``) and verifies the checksums of the newest records. A file SQLite cannot
open, or one that fails its check, is moved aside (``<path>.corrupt-<time>``) and replaced by a
fresh file into which every record that SQL can still read from it is copied
(:func:`~edge_runtime.uplink.spool._rescue.copy_readable`; SQLite does every read, nothing here
parses the file). A sound file that lost commits (its WAL destroyed) is noticed against the
side ledger. Records lost either way are counted (see :mod:`edge_runtime.uplink.spool._ledger`
for how exactly), logged as a WARNING with the count and reported as ``corrupt_records``.

It raises :class:`SpoolError` only when the disk itself refuses (no permission, no space,
another process holds the file).
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
    CLASSES,
    connect,
    count_by_class,
    is_corruption,
    max_seq,
    read_state,
    write_state,
)
from edge_runtime.uplink.spool._ledger import LedgerEntry, clock_floor
from edge_runtime.uplink.spool._rescue import copy_readable
from edge_runtime.uplink.spool._room import wal_pages
from edge_runtime.uplink.spool.config import SpoolConfig
from edge_runtime.uplink.spool.errors import SpoolError
from edge_runtime.uplink.spool.records import PRIORITY_SHIFT

__all__ = ["Known", "Opened", "open_spool", "rebuild"]

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
    recovered: int = 0  # records copied out of a damaged file into its replacement
    lost: int = 0  # records lost to damage
    rebuilt: bool = False
    check_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Known:
    """What the spool knows outside the damaged file: the ledger (None when missing or
    unreadable), and while running its own figures: the next sequence number and the pending
    records, both exact."""

    ledger: LedgerEntry | None
    ledger_unreadable: bool = False
    next_seq: int = 1
    live: int | None = None


def _side(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _rollback(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.execute("ROLLBACK")


def _refuse(exc: sqlite3.Error, path: Path) -> SpoolError:
    code = getattr(exc, "sqlite_errorcode", 0) or 0
    if code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return SpoolError(
            "the spool file is held by another process; each runtime needs its own data_dir",
            path=str(path),
        )
    return SpoolError(f"cannot open the spool file: {exc}", path=str(path))


def report_lost(path: Path, lost: int, how: str) -> None:
    """The WARNING every loss to damage gets, with its count."""
    if lost:
        log.warning(
            "spool %s: %d records lost to damage (%s); counted as corrupt_records",
            path,
            lost,
            how,
        )


def open_spool(path: Path, config: SpoolConfig, known: Known) -> Opened:
    """Open (or create) the spool file, check it as configured, and rebuild it when damaged."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wal = _side(path, "-wal")
    wal_left = wal.exists() and wal.stat().st_size > 0  # a clean close empties the WAL
    try:
        conn = connect(path, wal_pages(config.reserve_bytes))
    except sqlite3.Error as exc:
        if is_corruption(exc):
            return rebuild(path, config, reason=str(exc), known=known)
        raise _refuse(exc, path) from exc
    try:
        return _check(conn, path, config, known, wal_left)
    except sqlite3.Error as exc:
        _rollback(conn)
        conn.close()
        if is_corruption(exc):
            return rebuild(path, config, reason=str(exc), known=known)
        raise _refuse(exc, path) from exc


def _check(
    conn: sqlite3.Connection, path: Path, config: SpoolConfig, known: Known, wal_left: bool
) -> Opened:
    started = time.perf_counter()
    state = read_state(conn)
    # frames in the WAL mean a crash even when the state row says "clean": the frame that
    # cleared the flag may be one that SQLite dropped
    unclean = wal_left or not (state.clean or state.created)
    opened = Opened(conn, state.next_seq, list(state.depth), state.payload_bytes, unclean)
    if config.check_on_open == "always" or (config.check_on_open == "after_crash" and unclean):
        result = [str(r[0]) for r in conn.execute("PRAGMA quick_check").fetchall()]
        if result != ["ok"]:
            conn.close()
            log.error("spool %s failed quick_check: %s", path, "; ".join(result[:5]))
            return rebuild(path, config, reason="quick_check: " + result[0], known=known)
    conn.execute("BEGIN IMMEDIATE")
    try:
        per_class = None if config.verify_all_on_open else config.verify_tail_records
        if per_class != 0:
            _verify(conn, path, opened, per_class)
        floor = _regressed(path, opened, known.ledger)
        opened.next_seq = max(opened.next_seq, max_seq(conn) + 1, floor)
        write_state(conn, opened.next_seq, opened.depth, opened.payload_bytes)
        conn.execute("UPDATE state SET clean = 0")
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


def _regressed(path: Path, opened: Opened, ledger: LedgerEntry | None) -> int:
    """Whether a sound database lost commits (its WAL lost, an older copy restored): its next
    sequence number is below the one the ledger saw committed. Counts the records between the
    two as lost; returns the sequence floor to continue from (1 when nothing was lost)."""
    if ledger is None or opened.next_seq >= ledger.committed:
        return 1
    lost = min(ledger.live, ledger.committed - opened.next_seq)
    opened.lost += lost
    report_lost(
        path,
        lost,
        f"the database ends at sequence number {opened.next_seq - 1}, the ledger saw "
        f"{ledger.committed - 1} committed: its WAL or newest commits are gone",
    )
    return ledger.reserved


def _verify(conn: sqlite3.Connection, path: Path, opened: Opened, per_class: int | None) -> None:
    """Check record checksums (the newest ``per_class`` of each class, or all); cut failures."""
    bad: list[tuple[int, int]] = []
    for cls in range(CLASSES):
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
        conn.executemany("DELETE FROM records WHERE id = ?", [(rid,) for rid, _ in bad])
        for rid, size in bad:
            opened.depth[rid >> PRIORITY_SHIFT] -= 1
            opened.payload_bytes -= size
        opened.lost += len(bad)
        report_lost(path, len(bad), "their checksums failed; they were cut")


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


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}"
    aside = _side(path, f".corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        src = _side(path, suffix)
        if src.exists():
            src.rename(_side(aside, suffix))
    return aside


def rebuild(path: Path, config: SpoolConfig, *, reason: str, known: Known) -> Opened:
    """Move a damaged spool file aside and copy every readable, verified record into a fresh
    one; count what was lost (see the module doc)."""
    log.error("spool %s is damaged (%s); moving it aside and rebuilding", path, reason)
    try:
        aside = _move_aside(path)
        conn = connect(path, wal_pages(config.reserve_bytes))
        read_state(conn)
    except (OSError, sqlite3.Error) as exc:
        raise SpoolError(f"cannot rebuild the damaged spool: {exc}", path=str(path)) from exc
    started = time.perf_counter()
    try:
        conn.execute("BEGIN IMMEDIATE")
        copied = copy_readable(aside, conn)
        depth, payload_bytes = count_by_class(conn)
        opened = Opened(conn, 1, depth, payload_bytes, unclean=True, rebuilt=True)
        opened.recovered = sum(depth)
        expected, seq_floor = _expected(copied.old_next_seq, copied.old_live, known)
        if expected is not None:
            opened.lost = max(0, expected - opened.recovered)
        else:  # nothing says how many there were: only what failed its checksum is known
            opened.lost = copied.bad_checksums
        opened.next_seq = max(seq_floor, max_seq(conn) + 1)
        write_state(conn, opened.next_seq, opened.depth, opened.payload_bytes)
        conn.execute("UPDATE state SET clean = 0")
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        _rollback(conn)
        conn.close()
        raise SpoolError(f"cannot rebuild the damaged spool: {exc}", path=str(path)) from exc
    opened.check_s = time.perf_counter() - started
    log.error(
        "spool %s rebuilt in %.3f s: %d records copied through SQL from %s, %d lost",
        path,
        opened.check_s,
        opened.recovered,
        aside.name,
        opened.lost,
    )
    report_lost(path, opened.lost, f"the file was damaged: {reason}")
    _prune_aside(path, config.keep_corrupt_files)
    return opened


def _expected(
    old_next_seq: int | None, old_live: int | None, known: Known
) -> tuple[int | None, int]:
    """How many records were pending before the damage (None: unknown), and the lowest
    sequence number the rebuilt file may continue from."""
    ledger = known.ledger
    floor = max(known.next_seq, 1 if old_next_seq is None else old_next_seq)
    if ledger is not None:
        floor = max(floor, ledger.reserved)
    elif known.ledger_unreadable and old_next_seq is None and known.live is None:
        floor = max(floor, clock_floor())  # every record of the numbers is gone
        log.error(
            "spool: the ledger and the database's numbers are both lost; sequence numbers "
            "continue from %d (microseconds since 1970)",
            floor,
        )
    if known.live is not None:  # the running spool's own figures: exact
        return known.live, floor
    candidates = []
    if old_next_seq is not None and old_live is not None:
        candidates.append((old_next_seq, 1, old_live))  # the state row wins a tie
    if ledger is not None:
        candidates.append((ledger.committed, 0, ledger.live))
    if not candidates:
        return None, floor
    return max(candidates)[2], floor
