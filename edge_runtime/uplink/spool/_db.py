"""The spool's SQLite file: schema, connection settings, the state row, and rescue copies.

Only the spool's writer thread touches these connections, and the compiled committer's native
thread (:class:`GroupCommit`) for the work the writer hands it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.uplink.spool.records import PRIORITY_SHIFT, SEQ_MASK

_txn: Any = None  # the compiled committer is gone; inserts go through the sqlite3 module

__all__ = [
    "INSERT_OR_IGNORE_SQL",
    "INSERT_SQL",
    "ROW_WIDTH",
    "SCHEMA_VERSION",
    "STATE_SQL",
    "CopyResult",
    "GroupCommit",
    "State",
    "connect",
    "copy_readable",
    "count_by_class",
    "delete_ids",
    "insert_flat",
    "is_corruption",
    "max_seq",
    "read_state",
    "used_bytes",
    "write_state",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
INSERT_SQL = (
    "INSERT INTO records (id, stream, envelope_id, window_start, window_end, created_at, crc, "
    "payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_OR_IGNORE_SQL = INSERT_SQL.replace("INSERT", "INSERT OR IGNORE", 1)
ROW_WIDTH = 8
_CHUNKS = (512, 128, 32, 8, 1)  # rows per INSERT statement (512 x 8 parameters < 32766)
_MULTI_SQL = {
    n: INSERT_SQL.replace("(?, ?, ?, ?, ?, ?, ?, ?)", ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * n))
    for n in _CHUNKS
}


_INSERT_SQLS = tuple(_MULTI_SQL[n] for n in _CHUNKS)  # most rows first, as _txn.commit wants

_DELETE_SQL = {  # placeholders only, no data in the text
    n: "DELETE FROM records WHERE id IN (" + ", ".join(["?"] * n) + ")"  # noqa: S608
    for n in _CHUNKS
}


def delete_ids(conn: sqlite3.Connection, ids: list[int]) -> None:
    """Delete records by id, many per statement (see :func:`insert_flat`)."""
    pos, end = 0, len(ids)
    for rows in _CHUNKS:
        sql = _DELETE_SQL[rows]
        while end - pos >= rows:
            conn.execute(sql, ids[pos : pos + rows])
            pos += rows


def insert_flat(conn: sqlite3.Connection, flat: list[object]) -> None:
    """Insert rows given as one flat parameter list, many rows per statement.

    One statement per 512 rows instead of one per row: far fewer GIL hand-overs between this
    thread and the event loop, and SQLite does the whole statement without the GIL.
    """
    pos, end = 0, len(flat)
    for rows in _CHUNKS:
        sql, width = _MULTI_SQL[rows], rows * ROW_WIDTH
        while end - pos >= width:
            conn.execute(sql, flat[pos : pos + width])
            pos += width


_CLASSES = 3

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,      -- priority << {PRIORITY_SHIFT} | seq
    stream TEXT NOT NULL,        -- pipeline/key: order is kept per stream
    envelope_id TEXT NOT NULL,
    window_start REAL NOT NULL,
    window_end REAL NOT NULL,
    created_at REAL NOT NULL,
    crc INTEGER NOT NULL,        -- zlib.crc32 of payload
    payload BLOB NOT NULL,       -- msgpack envelope, backlog flag last
    priority INTEGER GENERATED ALWAYS AS (id >> {PRIORITY_SHIFT}) VIRTUAL,
    seq INTEGER GENERATED ALWAYS AS (id & {SEQ_MASK}) VIRTUAL
);
CREATE TABLE IF NOT EXISTS state (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 0),
    schema_version INTEGER NOT NULL,
    next_seq INTEGER NOT NULL,   -- high-water mark of the per-site sequence
    depth0 INTEGER NOT NULL,     -- pending records per priority class
    depth1 INTEGER NOT NULL,
    depth2 INTEGER NOT NULL,
    payload_bytes INTEGER NOT NULL,
    clean INTEGER NOT NULL       -- 1 after a clean close, 0 while open
) WITHOUT ROWID;
"""

_CORRUPTION_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def is_corruption(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says the file is damaged (as opposed to locked, full or unreadable)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _CORRUPTION_CODES:
        return True
    text = str(exc)
    return "malformed" in text or "not a database" in text


def connect(path: Path) -> sqlite3.Connection:
    """A connection in WAL mode with ``synchronous=FULL`` that holds the file exclusively.

    ``locking_mode=EXCLUSIVE`` keeps the WAL index in process memory (no ``-shm`` file) and
    stops a second runtime from opening the same spool and handing out the same sequence
    numbers.
    """
    # timeout: a runtime restarting while its predecessor still exits gets a moment to wait
    conn = sqlite3.connect(str(path), timeout=1.0, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"journal_mode is {mode!r}, expected 'wal'")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA cache_size=-32768")
        conn.execute("PRAGMA journal_size_limit=67108864")
        conn.execute("PRAGMA temp_store=MEMORY")
    except BaseException:
        conn.close()
        raise
    return conn


@dataclass(slots=True)
class State:
    """The persisted state row (what ``read_state`` found or created)."""

    next_seq: int
    depth: list[int]
    payload_bytes: int
    clean: bool
    created: bool = False


def read_state(conn: sqlite3.Connection) -> State:
    """Create the schema on a new file; read the state row."""
    conn.execute("BEGIN IMMEDIATE")  # takes the exclusive lock now, not at the first append
    try:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        row = conn.execute(
            "SELECT next_seq, depth0, depth1, depth2, payload_bytes, clean FROM state"
        ).fetchone()
        created = row is None
        if created:
            conn.execute("INSERT INTO state VALUES (0, ?, 1, 0, 0, 0, 0, 1)", (SCHEMA_VERSION,))
            row = (1, 0, 0, 0, 0, 1)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return State(
        next_seq=int(row[0]),
        depth=[int(row[1]), int(row[2]), int(row[3])],
        payload_bytes=int(row[4]),
        clean=bool(row[5]),
        created=created,
    )


STATE_SQL = "UPDATE state SET next_seq = ?, depth0 = ?, depth1 = ?, depth2 = ?, payload_bytes = ?"


def write_state(
    conn: sqlite3.Connection, next_seq: int, depth: Sequence[int], payload_bytes: int
) -> None:
    """Update the state row inside the caller's transaction."""
    conn.execute(STATE_SQL, (next_seq, depth[0], depth[1], depth[2], payload_bytes))


def _attach() -> str | None:
    """Make the compiled transaction usable; None when it is, else why not."""
    if _txn is None:
        return "edge_runtime.uplink.spool._txn is not built"
    try:
        import _sqlite3  # noqa: PLC0415 - the module whose SQLite library _txn must use

        _txn.attach(str(_sqlite3.__file__), sqlite3.Connection)
    except (ImportError, AttributeError, TypeError) as exc:
        return str(exc)
    return None


_UNAVAILABLE = _attach()


class GroupCommit:
    """The spool's append transactions run by a native committer thread (``_txn.c``) on the
    spool's own connection, without the GIL: BEGIN IMMEDIATE, the rows of each append as soon
    as it is encoded, the state row, COMMIT (the group's fsync).

    The same statements as :func:`insert_flat` and :func:`write_state` with the same
    durability. The writer thread queues work with :meth:`rows` and :meth:`commit` and goes on
    encoding; :meth:`wait` (in a thread of its own) reports each commit's outcome. After a
    failure the committer rolls back and skips queued work until :meth:`reset`. While it is in
    use it also moves SQLite's WAL checkpoint (at 1,000 pages) out of its commits: it
    checkpoints once it has reported the commit, so that the group's callers do not wait for
    it; other commits on the connection checkpoint inside the commit, as SQLite's default.
    :meth:`for_connection` returns None where the compiled module is not built or cannot vouch
    for the connection; the spool then writes through the sqlite3 module.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._committer = _txn.Committer(conn, _INSERT_SQLS, STATE_SQL)

    @staticmethod
    def unavailable() -> str | None:
        """Why the compiled transaction cannot be used in this process (None: it can)."""
        return _UNAVAILABLE

    @classmethod
    def for_connection(cls, conn: sqlite3.Connection, path: Path) -> GroupCommit | None:
        """A GroupCommit for ``conn`` (opened on ``path``), or None (logged) where its handle
        does not describe that connection."""
        if _txn is None or _UNAVAILABLE is not None:
            return None
        try:
            name, autocommit, changes = _txn.describe(conn)
        except (TypeError, ValueError, RuntimeError) as exc:
            log.warning("spool: writing through the sqlite3 module (%s)", exc)
            return None
        expected = (os.path.realpath(path), not conn.in_transaction, conn.total_changes)
        seen = (os.path.realpath(name) if name else "", bool(autocommit), changes)
        if seen != expected:
            log.warning(
                "spool: the compiled transaction does not see this connection as Python does "
                "(%r, expected %r); writing through the sqlite3 module",
                seen,
                expected,
            )
            return None
        try:
            return cls(conn)
        except (ValueError, OSError) as exc:
            log.warning("spool: writing through the sqlite3 module (%s)", exc)
            return None

    def rows(self, flat: list[object]) -> None:
        """Queue rows (:data:`ROW_WIDTH` values each; ``flat`` must not change afterwards)
        for the open transaction; raises TypeError for a value it cannot bind."""
        self._committer.rows(flat)

    def commit(
        self, next_seq: int, depth: Sequence[int], payload_bytes: int, token: object
    ) -> None:
        """Queue the state row and COMMIT; :meth:`wait` reports the outcome with ``token``."""
        self._committer.commit([next_seq, depth[0], depth[1], depth[2], payload_bytes], token)

    def reset(self) -> None:
        self._committer.reset()

    def pending(self) -> int:
        """How many :meth:`rows` calls are not inserted yet."""
        return int(self._committer.pending())

    def wait(self) -> list[tuple[object, sqlite3.Error | None, int, float]] | None:
        """Block until commits finished: (token, error or None, bytes of pages in use after
        it or -1, the committer's time on the group); None once closed."""
        done = self._committer.wait()
        if done is None:
            return None
        return [
            (token, None if failed is None else sqlite_error(*failed), used, busy)
            for token, failed, used, busy in done
        ]

    def checkpoints(self) -> tuple[int, int]:
        """WAL checkpoints so far: run by the committer after it reported a commit, and run
        inside a commit (other threads' commits; see ``_txn.c``)."""
        deferred, inlined = self._committer.checkpoints()
        return deferred, inlined

    def close(self) -> None:
        """Finish the queued work (a group left open is rolled back), stop the thread,
        give checkpointing back to SQLite and finalize the statements; before the connection
        is closed."""
        self._committer.close()


def sqlite_error(code: int, message: str) -> sqlite3.Error:
    """The exception the sqlite3 module raises for an extended result ``code``."""
    primary = code & 0xFF
    cls: type[sqlite3.Error]
    if primary in _CORRUPTION_CODES:
        cls = sqlite3.DatabaseError
    elif primary == sqlite3.SQLITE_CONSTRAINT:
        cls = sqlite3.IntegrityError
    else:
        cls = sqlite3.OperationalError
    exc = cls(message)
    exc.sqlite_errorcode = code
    return exc


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of database pages in use (the file minus its free pages)."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int((pages - free) * page_size)


def count_by_class(conn: sqlite3.Connection) -> tuple[list[int], int]:
    """Pending records per class and payload bytes, by a full scan (recovery only)."""
    depth = [0] * _CLASSES
    total = 0
    for cls, count, size in conn.execute(
        "SELECT id >> ?, count(*), total(length(payload)) FROM records GROUP BY 1",
        (PRIORITY_SHIFT,),
    ):
        if 0 <= cls < _CLASSES:
            depth[cls] = int(count)
            total += int(size)
    return depth, total


def max_seq(conn: sqlite3.Connection) -> int:
    """The highest sequence number stored in any class (0 when empty)."""
    best = 0
    for cls in range(_CLASSES):
        row = conn.execute(
            "SELECT max(id) FROM records WHERE id >= ? AND id < ?",
            (cls << PRIORITY_SHIFT, (cls + 1) << PRIORITY_SHIFT),
        ).fetchone()
        if row[0] is not None:
            best = max(best, int(row[0]) & SEQ_MASK)
    return best


@dataclass(slots=True)
class CopyResult:
    copied: int = 0
    corrupt: int = 0
    unreadable_ranges: int = 0
    old_next_seq: int | None = None
    old_depth: int | None = None


def _insert(
    dst: sqlite3.Connection, rows: Iterable[tuple[object, ...]], result: CopyResult
) -> None:
    good = []
    for row in rows:
        payload = row[7]
        if isinstance(payload, bytes) and zlib.crc32(payload) == row[6]:
            good.append(row)
        else:
            result.corrupt += 1
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


def copy_readable(src_path: Path, dst: sqlite3.Connection) -> CopyResult:
    """Copy every record SQL can still read from a damaged spool file into ``dst``.

    Rows are read in rowid order per class; a damaged page makes a read fail, the copy then
    probes forward for the next readable row. Rows whose checksum fails are counted, not
    copied. ``dst`` must be inside a transaction.
    """
    result = CopyResult()
    try:
        src = sqlite3.connect(str(src_path), isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        log.error("spool recovery: %s cannot be opened at all: %s", src_path, exc)
        return result
    try:
        try:
            src.execute("PRAGMA locking_mode=EXCLUSIVE")
            row = src.execute("SELECT next_seq, depth0 + depth1 + depth2 FROM state").fetchone()
            if row is not None:
                result.old_next_seq, result.old_depth = int(row[0]), int(row[1])
        except sqlite3.Error as exc:
            log.warning("spool recovery: state row of %s unreadable: %s", src_path, exc)
        for cls in range(_CLASSES):
            lo, hi = cls << PRIORITY_SHIFT, (cls + 1) << PRIORITY_SHIFT
            cursor, limit = lo - 1, 512
            while cursor < hi:
                try:
                    rows = src.execute(
                        "SELECT id, stream, envelope_id, window_start, window_end, "
                        "created_at, crc, payload FROM records WHERE id > ? AND id < ? "
                        "ORDER BY id LIMIT ?",
                        (cursor, hi, limit),
                    ).fetchall()
                except sqlite3.DatabaseError:
                    if limit > 1:
                        limit = 1  # go row by row up to the damage
                        continue
                    result.unreadable_ranges += 1
                    nxt = _probe(src, cursor + 1, hi)
                    if nxt is None:
                        break
                    cursor = nxt - 1
                    continue
                if not rows:
                    break
                _insert(dst, rows, result)
                cursor = int(rows[-1][0])
                limit = min(512, limit * 2)
    finally:
        src.close()
    return result
