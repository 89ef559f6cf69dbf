"""Fixtures of the spool tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_runtime.broker import MosquittoProcess
from edge_runtime.uplink.spool import SpoolConfig


@pytest.fixture
def stopped_broker() -> Iterator[MosquittoProcess]:
    """A real mosquitto on a free port, configured but not started: the test starts it."""
    broker = MosquittoProcess()
    yield broker
    broker.close()


@pytest.fixture
def spool_config(tmp_path: Path) -> SpoolConfig:
    """A spool file under the test's temporary directory; short group-commit linger."""
    return SpoolConfig(path=str(tmp_path / "spool" / "spool.db"), commit_interval_ms=2)
