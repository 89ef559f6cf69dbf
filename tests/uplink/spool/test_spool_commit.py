"""The compiled committer (edge_runtime/spool/_txn.c) against the sqlite3-module path.

Both write the same rows; a failed group fails only its callers and leaves no gap in the
sequence numbers, also while the next group is already streaming into the committer; the
committer refuses values it cannot bind before queueing anything, rolls back a group left
open, and is not used for a connection it cannot vouch for.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import sysconfig
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.uplink.spool import SpoolConfig, SpoolCore, SpoolError
from edge_runtime.uplink.spool._db import GroupCommit, connect, insert_flat, read_state
from edge_runtime.uplink.spool.records import SEQ_MASK
from tests.uplink.spool.spool_helpers import envelopes

COMPILED_COMMIT = GroupCommit.unavailable() is None
needs_compiled = pytest.mark.skipif(
    not COMPILED_COMMIT, reason=f"compiled committer unavailable: {GroupCommit.unavailable()}"
)


def test_compiled_committer_is_built_where_a_compiler_is() -> None:
    """pip builds _txn.c where it can; the bench figures assume it, so a silent fallback to
    the sqlite3 module fails here."""
    headers = Path(sysconfig.get_paths()["include"], "Python.h").exists()
    if headers and (shutil.which("cc") or shutil.which("gcc")):
        assert COMPILED_COMMIT, GroupCommit.unavailable()


def stored(path: Path) -> tuple[list[tuple[Any, ...]], tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT id, stream, envelope_id, window_start, window_end, crc, payload "
            "FROM records ORDER BY id"
        ).fetchall()
        state = conn.execute(
            "SELECT next_seq, depth0, depth1, depth2, payload_bytes FROM state"
        ).fetchone()
    finally:
        conn.close()
    return rows, state


def append_in_bursts(spool: SpoolCore, batches: list[list[Any]]) -> list[Future[range]]:
    """Submit every batch at once (so that groups form, close and stream while others are
    still committing), then wait for all of them."""
    futures = [spool.submit_append(batch) for batch in batches]
    for future in futures:
        future.exception(timeout=30)
    return futures


@needs_compiled
def test_compiled_and_python_commits_store_the_same_rows(tmp_path: Path) -> None:
    items = envelopes(6000, streams=40, created_at=1_800_000_000.0)
    batches = [items[i : i + 300] for i in range(0, len(items), 300)]
    results = {}
    for compiled in (True, False):
        path = tmp_path / f"{compiled}.db"
        config = SpoolConfig(path=str(path), commit_interval_ms=2, compiled_commit=compiled)
        with SpoolCore(config) as spool:
            futures = append_in_bursts(spool, batches)
            assert [f.result() for f in futures] == [
                range(1 + i, 1 + i + 300) for i in range(0, 6000, 300)
            ]
            stats = spool.stats()
            assert stats.extra["compiled_commit"] == (1.0 if compiled else 0.0)
            assert stats.depth == 6000
            assert stats.appended == 6000
            assert stats.disk_bytes > 0
        results[compiled] = stored(path)
    assert results[True] == results[False]
    rows, state = results[True]
    assert len(rows) == 6000
    assert state == (6001, 0, 6000, 0, sum(len(r[6]) for r in rows))


def add_failing_trigger(spool: SpoolCore) -> None:
    """Make every insert of the pipeline 'boom' fail, on the spool's own connection."""

    def install() -> None:
        conn = spool._writer._conn  # the test reaches into the writer thread
        assert conn is not None
        conn.execute(
            "CREATE TEMP TRIGGER boom BEFORE INSERT ON main.records "
            "WHEN NEW.stream LIKE 'boom/%' BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )

    spool._submit_call(install).result(timeout=10)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "sqlite3-module"])
def test_a_failed_group_fails_its_callers_and_leaves_no_gap(tmp_path: Path, compiled: bool) -> None:
    if compiled and not COMPILED_COMMIT:
        pytest.skip(f"compiled committer unavailable: {GroupCommit.unavailable()}")
    path = tmp_path / "spool.db"
    # small groups: while one commits (or fails), the next is already streaming
    config = SpoolConfig(
        path=str(path), commit_interval_ms=2, max_batch=1000, compiled_commit=compiled
    )
    good = envelopes(8000, streams=20, created_at=1_800_000_000.0)
    bad = envelopes(50, streams=2, created_at=1_800_000_000.0, pipeline="boom")
    with SpoolCore(config) as spool:
        add_failing_trigger(spool)
        for round_ in range(3):
            batches: list[list[Any]] = [good[i : i + 400] for i in range(0, 8000, 400)]
            batches.insert(5 + round_ * 4, bad)  # in the middle of a burst
            futures = append_in_bursts(spool, batches)
            failed = [f for f in futures if f.exception() is not None]
            assert futures[5 + round_ * 4] in failed
            for future in failed:
                assert isinstance(future.exception(), SpoolError)
        accepted = sorted(seq for f in futures if f.exception() is None for seq in f.result())
        # every number handed out is stored, and they follow on without a gap
        after = spool.append(good[:10])
        stats = spool.stats()
    rows, state = stored(path)
    seqs = [row[0] & SEQ_MASK for row in rows]
    assert seqs == list(range(1, len(seqs) + 1))
    assert set(accepted) <= set(seqs)
    assert after == range(len(seqs) - 9, len(seqs) + 1)
    assert state[0] == len(seqs) + 1
    assert stats.depth == len(seqs)
    assert not any(row[1].startswith("boom/") for row in rows)


@needs_compiled
def test_the_writer_falls_back_when_the_committer_refuses_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    refused: list[int] = []
    real_rows = GroupCommit.rows

    def rows_once(self: GroupCommit, flat: list[object]) -> None:
        if not refused:
            refused.append(len(flat))
            raise TypeError("cannot bind a thing")
        real_rows(self, flat)

    monkeypatch.setattr(GroupCommit, "rows", rows_once)
    path = tmp_path / "spool.db"
    config = SpoolConfig(path=str(path), commit_interval_ms=2)
    items = envelopes(3000, streams=10, created_at=1_800_000_000.0)
    with caplog.at_level(logging.ERROR), SpoolCore(config) as spool:
        futures = append_in_bursts(spool, [items[i : i + 500] for i in range(0, 3000, 500)])
        assert [f.result() for f in futures] == [range(i + 1, i + 501) for i in range(0, 3000, 500)]
        assert spool.stats().extra["compiled_commit"] == 0.0
    assert refused
    assert "writing through the sqlite3 module from now on" in caplog.text
    rows, state = stored(path)
    assert [row[0] & SEQ_MASK for row in rows] == list(range(1, 3001))
    assert state[0] == 3001


def fresh_connection(path: Path) -> sqlite3.Connection:
    conn = connect(path)
    read_state(conn)
    return conn


@pytest.fixture
def raw(tmp_path: Path) -> Iterator[tuple[sqlite3.Connection, GroupCommit]]:
    """A spool file opened as the spool opens it, and a GroupCommit on it (closed after)."""
    path = tmp_path / "raw.db"
    conn = fresh_connection(path)
    gc = GroupCommit.for_connection(conn, path)
    assert gc is not None
    yield conn, gc
    gc.close()
    conn.close()


def row(i: int) -> list[object]:
    payload = bytearray(b"x" * 40)
    return [(1 << 56) | i, "p/k", "e" * 32, 1.0, 2.0, 3.0, 0, payload]


@needs_compiled
def test_group_commit_refuses_values_it_cannot_bind_before_queueing(
    raw: tuple[sqlite3.Connection, GroupCommit],
) -> None:
    conn, gc = raw
    try:
        with pytest.raises(TypeError):
            gc.rows([*row(1)[:7], object()])
        with pytest.raises(OverflowError):
            gc.rows([1 << 70, *row(1)[1:]])
        with pytest.raises(ValueError, match="whole rows"):
            gc.rows(row(1)[:5])
        assert gc.pending() == 0
        gc.rows(row(1) + row(2))
        gc.commit(3, (0, 2, 0), 80, "token")
        done = gc.wait()
        assert done is not None
        assert [(token, error) for token, error, _, _ in done] == [("token", None)]
        assert done[0][2] > 0  # bytes in use after the commit
    finally:
        gc.close()
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*), min(id & ?) FROM records", (SEQ_MASK,)).fetchone() == (
        2,
        1,
    )
    assert conn.execute("SELECT next_seq, depth1 FROM state").fetchone() == (3, 2)


@needs_compiled
def test_group_commit_reports_a_failure_and_skips_until_reset(
    raw: tuple[sqlite3.Connection, GroupCommit],
) -> None:
    conn, gc = raw
    try:
        gc.rows(row(1) + row(1))  # the same id twice: the group fails
        gc.commit(2, (0, 1, 0), 40, "first")
        gc.rows(row(5))  # queued behind the failure: skipped
        gc.commit(6, (0, 1, 0), 40, "second")
        gc.reset()
        gc.rows(row(7))
        gc.commit(8, (0, 1, 0), 40, "third")
        outcomes: list[tuple[object, sqlite3.Error | None]] = []
        while len(outcomes) < 3:
            done = gc.wait()
            assert done is not None
            outcomes += [(token, error) for token, error, _, _ in done]
    finally:
        gc.close()
    assert [token for token, _ in outcomes] == ["first", "second", "third"]
    assert isinstance(outcomes[0][1], sqlite3.IntegrityError)
    assert outcomes[0][1].sqlite_errorcode & 0xFF == sqlite3.SQLITE_CONSTRAINT
    assert isinstance(outcomes[1][1], sqlite3.Error)
    assert outcomes[2][1] is None
    assert conn.execute("SELECT id & ? FROM records", (SEQ_MASK,)).fetchall() == [(7,)]


@needs_compiled
def test_group_commit_rolls_back_a_group_left_open(
    raw: tuple[sqlite3.Connection, GroupCommit],
) -> None:
    conn, gc = raw
    gc.rows(row(1) + row(2))
    gc.close()  # no commit: nothing of the group stays
    assert gc.wait() is None
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM records").fetchone() == (0,)


@needs_compiled
def test_group_commit_is_not_used_for_a_connection_it_cannot_vouch_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "raw.db"
    conn = fresh_connection(path)
    with caplog.at_level(logging.WARNING):
        assert GroupCommit.for_connection(conn, tmp_path / "other.db") is None
    assert "does not see this connection" in caplog.text
    conn.close()
    with caplog.at_level(logging.WARNING):
        assert GroupCommit.for_connection(conn, path) is None  # closed: no handle
    assert "the connection is closed" in caplog.text


@needs_compiled
def test_the_committer_checkpoints_the_wal_after_reporting_the_commit(tmp_path: Path) -> None:
    """With the committer in use, SQLite's checkpoint moves out of the commit: the committer
    checkpoints once it has reported the commit; the WAL stays bounded as with SQLite's own,
    and every record stays readable."""
    path = tmp_path / "spool.db"
    config = SpoolConfig(path=str(path), commit_interval_ms=2)
    items = envelopes(30_000, streams=50, created_at=1_800_000_000.0)
    with SpoolCore(config) as spool:
        for start in range(0, len(items), 3000):
            spool.append(items[start : start + 3000])
        stats = spool.stats()
        wal = Path(f"{path}-wal").stat().st_size
    assert stats.extra["wal_checkpoints_deferred"] >= 1
    assert stats.extra["wal_checkpoints_inline"] == 0
    # never much past SQLite's 1,000 pages: a group of 3,000 records is about 300 more
    assert wal < 2000 * (4096 + 24) + 32
    rows, state = stored(path)
    assert [row[0] & SEQ_MASK for row in rows] == list(range(1, 30_001))
    assert state[0] == 30_001


@needs_compiled
def test_other_commits_checkpoint_inside_the_commit(
    raw: tuple[sqlite3.Connection, GroupCommit],
) -> None:
    """Commits that do not go through the committer (acks, maintenance) checkpoint inside the
    commit past 1,000 pages, as SQLite's default; closing the committer gives checkpointing
    back to SQLite."""
    conn, gc = raw
    big = bytearray(b"y" * 3000)
    try:
        for k in range(3):
            conn.execute("BEGIN IMMEDIATE")
            flat: list[object] = []
            for i in range(2500):
                flat += [(1 << 56) | (k * 2500 + i + 1), "p/k", "e" * 32, 1.0, 2.0, 3.0, 0, big]
            insert_flat(conn, flat)
            conn.execute("COMMIT")
        deferred, inlined = gc.checkpoints()
    finally:
        gc.close()
    assert (deferred, inlined) == (0, 3)  # about 1,900 pages per commit
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)
    assert conn.execute("SELECT count(*) FROM records").fetchone() == (7500,)
