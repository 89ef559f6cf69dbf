"""Group commit through the sqlite3 module, and the side ledger that keeps the numbers.

Concurrent appends share transactions; every number handed out is stored and they follow on
without a gap, also when a group fails; the ledger reserves numbers before the commit that uses
them and holds the committed mark and the pending count after a clean close or ``maintain()``.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.uplink.spool import SpoolConfig, SpoolError, SyncSpool
from edge_runtime.uplink.spool._ledger import BLOCK, Ledger, LedgerEntry
from edge_runtime.uplink.spool.records import SEQ_MASK
from tests.uplink.spool.spool_helpers import envelopes


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


def ledger_of(db: Path) -> dict[str, int]:
    doc: dict[str, int] = json.loads(db.with_name(db.name + ".ledger").read_text())
    return doc


def append_in_bursts(spool: SyncSpool, batches: list[list[Any]]) -> list[Future[range]]:
    """Submit every batch at once (so that groups form while others commit), then wait."""
    futures = [spool.submit_append(batch) for batch in batches]
    for future in futures:
        future.exception(timeout=30)
    return futures


def test_concurrent_appends_share_commits_and_store_every_row(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    items = envelopes(6000, streams=40, created_at=1_800_000_000.0)
    batches = [items[i : i + 300] for i in range(0, len(items), 300)]
    with SyncSpool(SpoolConfig(path=str(path), commit_interval_ms=2)) as spool:
        futures = append_in_bursts(spool, batches)
        assert [f.result() for f in futures] == [
            range(1 + i, 1 + i + 300) for i in range(0, 6000, 300)
        ]
        stats = spool.stats()
    assert stats.depth == stats.appended == 6000
    assert stats.commits < len(batches)  # appends waiting together share a transaction
    rows, state = stored(path)
    assert [row[0] & SEQ_MASK for row in rows] == list(range(1, 6001))
    assert state == (6001, 0, 6000, 0, sum(len(r[6]) for r in rows))


def add_failing_trigger(spool: SyncSpool) -> None:
    """Make every insert of the pipeline 'boom' fail, on the spool's own connection."""

    def install() -> None:
        conn = spool._writer.conn  # the test reaches into the writer thread
        assert conn is not None
        conn.execute(
            "CREATE TEMP TRIGGER boom BEFORE INSERT ON main.records "
            "WHEN NEW.stream LIKE 'boom/%' BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )

    spool._submit_call(install).result(timeout=10)


def test_a_failed_group_fails_its_callers_and_leaves_no_gap(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    config = SpoolConfig(path=str(path), commit_interval_ms=2, max_batch=1000)
    good = envelopes(8000, streams=20, created_at=1_800_000_000.0)
    bad = envelopes(50, streams=2, created_at=1_800_000_000.0, pipeline="boom")
    with SyncSpool(config) as spool:
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


def test_the_ledger_reserves_numbers_before_the_commit_that_uses_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = itertools.count()
    writes: list[tuple[int, LedgerEntry]] = []
    done: list[tuple[int, int]] = []
    real_write = Ledger.write

    def write(self: Ledger, entry: LedgerEntry) -> None:
        real_write(self, entry)
        writes.append((next(order), entry))

    monkeypatch.setattr(Ledger, "write", write)
    path = tmp_path / "spool.db"
    items = envelopes(2500, streams=40, created_at=1_800_000_000.0)
    with SyncSpool(SpoolConfig(path=str(path), commit_interval_ms=2)) as spool:
        futures = []
        for _ in range(12):  # 30,000 numbers: three blocks
            for future in [spool.submit_append(items[i : i + 500]) for i in range(0, 2500, 500)]:
                future.add_done_callback(lambda f: done.append((next(order), f.result().stop)))
                futures.append(future)
            for future in futures:
                future.result(timeout=30)
    assert len(done) == 60
    for at, stop in done:  # every number was reserved before its caller heard of it
        assert max(e.reserved for when, e in writes if when < at) >= stop
    reservations = {e.reserved for _, e in writes}
    assert 3 <= len(reservations) <= 6  # one write per block of numbers, not per commit
    assert all(b - a >= BLOCK for a, b in itertools.pairwise(sorted(reservations)))
    final = ledger_of(path)
    assert final["committed"] == 30_001 and final["live"] == 30_000  # the clean close
    assert final["reserved"] > 30_001


def test_maintain_brings_the_ledger_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with SyncSpool(SpoolConfig(path=str(path), commit_interval_ms=1)) as spool:
        assert ledger_of(path)["committed"] == 1 and ledger_of(path)["live"] == 0
        spool.append(envelopes(30))
        spool.ack(r.id for r in spool.lease(10))
        spool.maintain()
        doc = ledger_of(path)
        assert (doc["committed"], doc["live"]) == (31, 20)
        assert doc["reserved"] >= 31
    assert not path.with_name("spool.db.ledger.tmp").exists()
