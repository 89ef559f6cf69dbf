"""Crash safety with real processes: SIGKILL a writer at random times, nothing acknowledged
lost, no number handed out twice and none skipped (the next number follows the last committed
one exactly); a crash whose WAL is then destroyed counts what it lost."""

from __future__ import annotations

import json
import logging
import os
import random
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_runtime.uplink.spool import SpoolConfig, SyncSpool
from edge_runtime.uplink.spool._ledger import BLOCK
from tests.uplink.spool.spool_helpers import envelopes

CHILD = Path(__file__).with_name("spool_crash_child.py")
ROOT = Path(__file__).resolve().parents[3]
KILLS = 20


def _run_and_kill(db: Path, seed: int, rng: random.Random, *extra: str) -> tuple[list[str], str]:
    """Start a child, SIGKILL it at a random moment (with ``extra`` arguments: once it printed
    "synced"); the complete lines it printed, and its stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, str(CHILD), str(db), str(seed), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        buffer = b""
        kill_at: float | None = None
        deadline = time.monotonic() + 30
        with selectors.DefaultSelector() as selector:
            selector.register(child.stdout, selectors.EVENT_READ)
            while child.poll() is None and time.monotonic() < deadline:
                if kill_at is not None and time.monotonic() >= kill_at:
                    break
                for _ in selector.select(timeout=0.005):
                    buffer += os.read(child.stdout.fileno(), 65536)
                    if kill_at is not None:
                        continue
                    if extra and b"synced\n" in buffer:
                        kill_at = time.monotonic()
                    elif not extra and buffer.count(b"\n") >= 2:  # ready + a first seq
                        kill_at = time.monotonic() + rng.uniform(0.0, 0.4)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        buffer += child.stdout.read()
        stderr = child.stderr.read().decode(errors="replace")
    lines = buffer.decode().split("\n")[:-1]  # only complete lines were acknowledged
    return lines, stderr


def _seqs(lines: list[str]) -> list[int]:
    return [int(line) for line in lines if line.isdigit()]


def _reserved(db: Path) -> int:
    return int(json.loads(db.with_name(db.name + ".ledger").read_text())["reserved"])


@pytest.mark.slow
def test_sigkill_never_loses_an_acknowledged_append(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    rng = random.Random(1234)
    acknowledged: set[int] = set()
    highest = 0
    for round_ in range(KILLS):
        lines, stderr = _run_and_kill(db, round_, rng)
        printed = _seqs(lines)
        assert printed, f"round {round_}: child acknowledged nothing; stderr:\n{stderr}"
        assert min(printed) > highest, "a restart handed out a sequence number again"
        acknowledged.update(range(highest + 1, max(printed) + 1))
        highest = max(printed)
        reserved = _reserved(db)  # as the killed writer left it
        with SyncSpool(SpoolConfig(path=str(db))) as spool:
            records = spool.lease(10**7)
            stats = spool.stats()
        stored = {r.seq for r in records}
        missing = acknowledged - stored
        assert not missing, f"round {round_}: lost acknowledged seqs {sorted(missing)[:10]}"
        assert max(stored) < reserved, "a number was committed before the ledger reserved it"
        assert len(stored) == len(records) == stats.depth
        assert stats.corrupt_records == 0
        assert stats.appended == 0 and stats.recoveries == 0
    assert len(acknowledged) > KILLS


@pytest.mark.slow
def test_after_a_sigkill_numbering_continues_from_the_last_commit(tmp_path: Path) -> None:
    """The database intact after a kill -9 at a random moment (during a group commit or
    between two): the next number is the last committed one + 1, exactly. Neither the
    ledger's reserved block nor the numbers a group lost in the crash was given are skipped:
    the core would count every skipped number as a missing summary."""
    db = tmp_path / "crash.db"
    rng = random.Random(4321)
    for round_ in range(KILLS // 2):
        lines, stderr = _run_and_kill(db, round_, rng)
        printed = _seqs(lines)
        assert printed, f"round {round_}: child acknowledged nothing; stderr:\n{stderr}"
        with SyncSpool(SpoolConfig(path=str(db))) as spool:
            # nothing is acknowledged here, so the highest stored number is the last committed
            last = max(r.seq for r in spool.lease(10**7))
            new = spool.append(envelopes(1))
        assert last >= max(printed)
        assert new.start == last + 1, f"round {round_}: {new.start - last - 1} numbers skipped"


@pytest.mark.slow
def test_a_sigkill_with_every_record_acknowledged_continues_from_the_last_commit(
    tmp_path: Path,
) -> None:
    """Past the ledger's first block, every record acknowledged (the table empty: only the
    state row, written in each group's transaction, knows the mark), then kill -9: the next
    number is the last committed + 1, not the ledger's reservation (that is for damage)."""
    db = tmp_path / "crash.db"
    n = BLOCK + 500
    lines, stderr = _run_and_kill(db, 3, random.Random(3), str(n), "ack")
    assert lines[-1] == "synced", stderr
    assert max(_seqs(lines)) == n
    assert _reserved(db) > n + 1  # where a damaged file would continue from
    with SyncSpool(SpoolConfig(path=str(db))) as spool:
        stats = spool.stats()
        new = spool.append(envelopes(1))
    assert stats.depth == 0 and stats.corrupt_records == 0
    assert new.start == n + 1


@pytest.mark.slow
def test_a_crash_whose_wal_is_overwritten_counts_every_record_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """(b) the WAL overwritten with garbage after a crash: SQLite opens the file as of its
    last checkpoint and finds nothing wrong; the ledger tells what is missing."""
    db = tmp_path / "crash.db"
    lines, stderr = _run_and_kill(db, 7, random.Random(7), "700")
    assert lines[-1] == "synced", stderr
    assert max(_seqs(lines)) == 700
    wal = db.with_name(db.name + "-wal")
    size = wal.stat().st_size
    assert size > 700 * 100  # the records are in the WAL (no checkpoint yet)
    wal.write_bytes(random.Random(1).randbytes(size))
    with caplog.at_level(logging.WARNING), SyncSpool(SpoolConfig(path=str(db))) as spool:
        stats = spool.stats()
        assert stats.depth == 0
        assert stats.corrupt_records == 700  # every record the WAL held, counted as lost
        new = spool.append(envelopes(3))
    assert new.start > 700, "a number was handed out again after the WAL was lost"
    assert "700 records lost to damage" in caplog.text
