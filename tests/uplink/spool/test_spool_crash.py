"""Crash safety with real processes: SIGKILL a writer at random times, nothing acknowledged lost."""

from __future__ import annotations

import os
import random
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_runtime.uplink.spool import SpoolConfig, SpoolCore

CHILD = Path(__file__).with_name("spool_crash_child.py")
ROOT = Path(__file__).resolve().parents[3]
KILLS = 20


def _run_and_kill(db: Path, seed: int, rng: random.Random) -> tuple[list[int], str]:
    """Start a child, SIGKILL it at a random moment; the seqs it printed, and its stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, str(CHILD), str(db), str(seed)],
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
                    if kill_at is None and buffer.count(b"\n") >= 2:  # ready + a first seq
                        kill_at = time.monotonic() + rng.uniform(0.0, 0.4)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        buffer += child.stdout.read()
        stderr = child.stderr.read().decode(errors="replace")
    lines = buffer.split(b"\n")[:-1]  # only complete lines were acknowledged
    return [int(line) for line in lines if line and line != b"ready"], stderr


@pytest.mark.slow
def test_sigkill_never_loses_an_acknowledged_append(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    rng = random.Random(1234)
    acknowledged: set[int] = set()
    highest = 0
    for round_ in range(KILLS):
        printed, stderr = _run_and_kill(db, round_, rng)
        assert printed, f"round {round_}: child acknowledged nothing; stderr:\n{stderr}"
        assert min(printed) > highest, "a restart handed out a sequence number again"
        acknowledged.update(range(highest + 1, max(printed) + 1))
        highest = max(printed)
        with SpoolCore(SpoolConfig(path=str(db))) as spool:
            records = spool.lease(10**7)
            stats = spool.stats()
        stored = {r.seq for r in records}
        missing = acknowledged - stored
        assert not missing, f"round {round_}: lost acknowledged seqs {sorted(missing)[:10]}"
        assert len(stored) == len(records) == stats.depth
        assert stats.corrupt_records == 0
        assert stats.appended == 0 and stats.recoveries == 0
    assert len(acknowledged) > KILLS
