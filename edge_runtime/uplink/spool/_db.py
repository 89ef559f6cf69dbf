"""The spool's SQLite file: schema, connection settings, the state row, rows in and out.

Only the spool's writer thread touches these connections.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.uplink.spool.records import PRIORITY_SHIFT, SEQ_MASK

__all__ = [
    "CLASSES",
    "INSERT_OR_IGNORE_SQL",
    "INSERT_SQL",
    "SCHEMA_VERSION",
    "SELECT_ROWS_SQL",
    "State",
    "connect",
    "count_by_class",
    "delete_ids",
    "insert_rows",
    "is_corruption",
    "max_seq",
    "read_state",
    "used_bytes",
    "write_state",
]

SCHEMA_VERSION = 1
CLASSES = 3
INSERT_SQL = (
    "INSERT INTO records (id, stream, envelope_id, window_start, window_end, created_at, crc, "
    "payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_OR_IGNORE_SQL = INSERT_SQL.replace("INSERT", "INSERT OR IGNORE", 1)
SELECT_ROWS_SQL = (
    "SELECT id, stream, envelope_id, window_start, window_end, created_at, crc, payload "
    "FROM records WHERE id > ? AND id < ? ORDER BY id LIMIT ?"
)


def insert_rows(conn: sqlite3.Connection, rows: Iterable[Sequence[object]]) -> None:
    """Insert rows (the columns of :data:`INSERT_SQL`), inside the caller's transaction."""
    conn.executemany(INSERT_SQL, rows)


def delete_ids(conn: sqlite3.Connection, ids: Iterable[int]) -> None:
    """Delete records by id, inside the caller's transaction."""
    conn.executemany("DELETE FROM records WHERE id = ?", [(rid,) for rid in ids])


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
    next_seq INTEGER NOT NULL,   -- one past the highest sequence number committed
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


def connect(path: Path, wal_pages: int | None = None) -> sqlite3.Connection:
    """A connection in WAL mode with ``synchronous=FULL`` that holds the file exclusively.

    ``locking_mode=EXCLUSIVE`` keeps the WAL index in process memory (no ``-shm`` file) and
    stops a second runtime from opening the same spool and handing out the same sequence
    numbers. A new file is created with ``auto_vacuum=INCREMENTAL``, so that pages freed by
    deletes can be handed back to a full disk (see ``_room``); on an existing file the pragma
    changes nothing. ``wal_pages`` sets ``wal_autocheckpoint`` (SQLite's default: 1000).
    """
    # timeout: a runtime restarting while its predecessor still exits gets a moment to wait
    conn = sqlite3.connect(str(path), timeout=1.0, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        if wal_pages is not None:
            conn.execute(f"PRAGMA wal_autocheckpoint={int(wal_pages)}")
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
        if conn.in_transaction:
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


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of database pages in use: the file minus its free pages and, in a file with
    ``auto_vacuum``, minus its pointer-map pages (one per ``page_size / 5`` pages), so that the
    size cap counts the same data either way."""
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    maps = 0
    if pages >= 2 and conn.execute("PRAGMA auto_vacuum").fetchone()[0]:
        maps = 1 + (pages - 2) // (page_size // 5 + 1)
    return (pages - free - maps) * page_size


def count_by_class(conn: sqlite3.Connection) -> tuple[list[int], int]:
    """Pending records per class and payload bytes, by a full scan (recovery only)."""
    depth = [0] * CLASSES
    total = 0
    for cls, count, size in conn.execute(
        "SELECT id >> ?, count(*), total(length(payload)) FROM records GROUP BY 1",
        (PRIORITY_SHIFT,),
    ):
        if 0 <= cls < CLASSES:
            depth[cls] = int(count)
            total += int(size)
    return depth, total


def max_seq(conn: sqlite3.Connection) -> int:
    """The highest sequence number stored in any class (0 when empty)."""
    best = 0
    for cls in range(CLASSES):
        row = conn.execute(
            "SELECT max(id) FROM records WHERE id >= ? AND id < ?",
            (cls << PRIORITY_SHIFT, (cls + 1) << PRIORITY_SHIFT),
        ).fetchone()
        if row[0] is not None:
            best = max(best, int(row[0]) & SEQ_MASK)
    return best
