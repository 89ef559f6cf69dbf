"""Room on the spool's disk: a reserve file, the full-disk state, and the way out of it.

A spool whose disk fills must go on deleting the records the core acknowledged (in WAL mode a
delete needs room for its WAL frames), and a site restarted on a full disk must be able to open
its spool to drain it. Both take a little disk space that a full disk does not have, so the
spool keeps some aside: ``<path>.reserve``, a file of ``reserve_bytes`` allocated while there is
room.

When a write fails because the disk is full the spool enters the *full* state: it refuses
appends (:class:`SpoolFullError` with reason ``disk_full``) and releases half of the reserve
(the other half stays for a restart; it goes when the disk fills again, or when a start finds
the disk full). Acks go on. While full, each maintenance round hands the pages that deletes
freed back to the file system (``incremental_vacuum``: files are created with
``auto_vacuum=INCREMENTAL``) and truncates the WAL; once the disk has room for the whole
reserve, for the WAL, and a quarter of the reserve more for new records, the reserve is made
again and appends are taken again.

The WAL is checkpointed every ``reserve_bytes / 8`` bytes (at most SQLite's default of 1000
pages), so a checkpoint on a full disk never needs more room than the released half holds.
Only the writer thread uses this module.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import time
from pathlib import Path

from edge_runtime.uplink.spool.errors import SpoolFullError

__all__ = ["DiskRoom", "Reserve", "free_bytes", "is_disk_full", "wal_pages"]

log = logging.getLogger(__name__)

_PAGE = 4096  # the spool's page size (SQLite's default)
_MIN_WAL_PAGES = 16
_MAX_WAL_PAGES = 1000  # SQLite's default wal_autocheckpoint
_SHRINK_BUDGET_S = 0.25
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)


def wal_pages(reserve_bytes: int) -> int:
    """The ``wal_autocheckpoint`` that keeps a checkpoint within half the reserve."""
    if reserve_bytes <= 0:
        return _MAX_WAL_PAGES
    return max(_MIN_WAL_PAGES, min(_MAX_WAL_PAGES, reserve_bytes // (8 * _PAGE)))


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the disk is full."""
    for _ in range(8):
        if exc is None:
            return False
        if isinstance(exc, sqlite3.Error):
            code = getattr(exc, "sqlite_errorcode", None)
            if (code is not None and code & 0xFF == sqlite3.SQLITE_FULL) or "disk is full" in str(
                exc
            ):
                return True
        if isinstance(exc, OSError) and exc.errno in _NO_ROOM:
            return True
        if isinstance(exc, SpoolFullError) and exc.reason == "disk_full":
            return True
        exc = exc.__cause__
    return False


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged process may still write on the file system of ``folder``."""
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


class Reserve:
    """The reserve file: ``size`` bytes allocated on the disk, given back when it is full."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size

    def held(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def make(self) -> bool:
        """Allocate the whole reserve; False when the disk has no room for it (what was there
        is kept). Other errors are logged: the spool runs on without a reserve."""
        held = self.held()
        if held >= self.size:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, held)
                raise
            finally:
                os.close(fd)
        except OSError as exc:
            if exc.errno in _NO_ROOM:
                return False
            log.warning(
                "spool: cannot keep a disk reserve at %s (%s); on a full disk its deletes wait "
                "in memory until there is room",
                self.path,
                exc,
            )
        return True

    def release(self, *, everything: bool = False) -> int:
        """Give back half of the reserve, or all of it (``everything``, or when no more than
        half is left); the bytes freed."""
        held = self.held()
        if held == 0:
            return 0
        keep = 0 if everything or held <= self.size // 2 else self.size // 2
        try:
            if keep:
                os.truncate(self.path, keep)
            else:
                self.path.unlink()
        except OSError as exc:
            log.error("spool: cannot release the disk reserve %s: %s", self.path, exc)
            return 0
        return held - keep


class DiskRoom:
    """Whether the spool's disk is full, and the reserve that keeps it working when it is."""

    def __init__(self, db_path: Path, reserve_bytes: int) -> None:
        self.db_path = db_path
        self.reserve = Reserve(db_path.with_name(db_path.name + ".reserve"), reserve_bytes)
        self.wal_pages = wal_pages(reserve_bytes)
        # records deleted per transaction on a full disk: a few WAL frames per ten records
        self.ack_chunk = 4 * self.wal_pages
        # room for new records to leave the full state with: a quarter of the reserve, and at
        # least two WAL checkpoints' worth
        self.headroom = max(reserve_bytes // 4, 2 * self.wal_pages * _PAGE)
        self.reason: str | None = None  # why the disk counts as full; None: it does not
        self.events = 0  # times the disk filled

    @property
    def full(self) -> bool:
        return self.reason is not None

    def prepare(self) -> None:
        """On open: make the reserve; a disk with no room for it counts as full."""
        if not self.reserve.make():
            self.enter("no room for the disk reserve")

    def enter(self, why: object, *, everything: bool = False) -> int:
        """The disk is full: appends are refused from now on; half of the reserve (all with
        ``everything``) is given back. Returns the bytes freed."""
        if self.reason is None:
            self.events += 1
            self.reason = str(why)
            log.error(
                "spool %s: the disk is full (%s); new summaries are refused until there is "
                "room again, acknowledged records are still deleted",
                self.db_path,
                why,
            )
        freed = self.reserve.release(everything=everything)
        if freed:
            log.warning("spool %s: released %d bytes of the disk reserve", self.db_path, freed)
        return freed

    def recover(self, conn: sqlite3.Connection) -> bool:
        """While full: hand freed pages back to the disk and truncate the WAL; once there is
        room, make the reserve again and leave the full state (True)."""
        self._shrink(conn)
        room = self.room(conn)
        if room < self.headroom or not self.reserve.make():
            return False
        log.warning(
            "spool %s: the disk has room again (%d bytes for new records besides the reserve "
            "and the WAL); new summaries are taken again",
            self.db_path,
            room,
        )
        self.reason = None
        return True

    def room(self, conn: sqlite3.Connection) -> int:
        """Bytes new records could take: free pages in the file and free space on the disk,
        less what the reserve still lacks and what the WAL takes again once appends resume
        (two checkpoints' worth: truncating it frees space that is not room for records)."""
        free_disk = free_bytes(self.db_path.parent)
        lacking = self.reserve.size - self.reserve.held()
        if free_disk < lacking:
            return 0
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        free_pages = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        wal = 2 * self.wal_pages * page_size
        return free_disk - lacking + free_pages * page_size - wal

    def _shrink(self, conn: sqlite3.Connection) -> None:
        """Free pages back to the file system, a few at a time so that the WAL frames each
        step writes stay small, then the WAL truncated (for at most ``_SHRINK_BUDGET_S``)."""
        try:
            if conn.execute("PRAGMA auto_vacuum").fetchone()[0]:
                deadline = time.perf_counter() + _SHRINK_BUDGET_S
                chunk = max(1, self.wal_pages // 4)
                while time.perf_counter() < deadline:
                    free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
                    if not free:
                        break
                    conn.execute(f"PRAGMA incremental_vacuum({min(free, chunk)})").fetchall()
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            if not is_disk_full(exc):
                raise
            self.enter(exc)  # the released half is gone too: the rest of the reserve
