"""Damaged files: torn or damaged WAL, damaged database pages, garbage; recover, count, go on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edge_runtime.uplink.spool import SpoolConfig, SpoolCore
from tests.uplink.spool.spool_helpers import envelopes

BATCHES = (200, 200, 300)


def _side(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _crash_image(config: SpoolConfig, dest: Path) -> SpoolConfig:
    """Append BATCHES in separate transactions and copy the files as a crash would leave them."""
    with SpoolCore(config) as spool:
        for n in BATCHES:
            spool.append(envelopes(n))
        shutil.copyfile(spool.path, dest)  # the spool is idle: a consistent crash image
        shutil.copyfile(_side(spool.path, "-wal"), _side(dest, "-wal"))
    return config.model_copy(update={"path": str(dest)})


def _damage(path: Path, offset: int, length: int) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        original = fh.read(length)
        fh.seek(offset)
        fh.write(bytes(b ^ 0x5A for b in original))


def _check_carries_on(spool: SpoolCore, total: int) -> None:
    stats = spool.stats()
    records = spool.lease(10**6)
    assert len(records) == stats.depth
    assert stats.depth + stats.corrupt_records == total, stats
    highest = max(r.seq for r in records)
    new = spool.append(envelopes(5))
    assert new.start > highest
    assert [r.seq for r in spool.lease(100)] == list(new)


@pytest.mark.parametrize("where", ["tail", "middle"])
def test_damaged_wal_is_salvaged(spool_config: SpoolConfig, tmp_path: Path, where: str) -> None:
    config = _crash_image(spool_config, tmp_path / "crash.db")
    wal = _side(Path(config.path), "-wal")
    size = wal.stat().st_size
    assert size > 200 * 400, "the crash image should still hold its transactions in the WAL"
    if where == "tail":
        _damage(wal, size - 100, 100)  # the commit frame of the last transaction
    else:
        _damage(wal, 32 + 24 + 4096 + 24 + 1000, 64)  # inside the second frame: all after lost
    with SpoolCore(config) as spool:
        stats = spool.stats()
        assert stats.salvaged_records >= 100, stats  # SQLite dropped them; the salvage found them
        assert stats.corrupt_records <= 10
        assert stats.recoveries == 0
        _check_carries_on(spool, sum(BATCHES))


def test_checksum_damage_in_the_main_file_is_cut_and_counted(spool_config: SpoolConfig) -> None:
    with SpoolCore(spool_config) as spool:
        spool.append(envelopes(300))
    path = Path(spool_config.path)
    _damage(path, path.stat().st_size - 150, 150)  # the newest page's oldest cells
    with SpoolCore(spool_config) as spool:  # clean close before: only the tail checksums run
        stats = spool.stats()
        assert stats.corrupt_records >= 1
        assert stats.recoveries == 0
        _check_carries_on(spool, 300)


def test_structural_damage_rebuilds_the_file(spool_config: SpoolConfig) -> None:
    with SpoolCore(spool_config) as spool:
        spool.append(envelopes(500))
    path = Path(spool_config.path)
    page = int.from_bytes(path.read_bytes()[16:18], "big")
    last = path.stat().st_size - page
    _damage(path, last, 12)  # page header of the last page: its type, cell count, pointers
    config = spool_config.model_copy(update={"check_on_open": "always"})
    with SpoolCore(config) as spool:
        stats = spool.stats()
        assert stats.recoveries == 1
        assert 1 <= stats.corrupt_records < 50
        assert list(path.parent.glob("spool.db.corrupt-*"))
        _check_carries_on(spool, 500)
    with SpoolCore(config) as spool:  # the rebuilt file is sound
        assert spool.stats().recoveries == 0


def test_garbage_file_is_moved_aside(spool_config: SpoolConfig) -> None:
    path = Path(spool_config.path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database" * 500)
    with SpoolCore(spool_config) as spool:
        stats = spool.stats()
        assert stats.recoveries == 1 and stats.depth == 0
        assert spool.append(envelopes(3)) == range(1, 4)
    assert len(list(path.parent.glob("spool.db.corrupt-*"))) == 1


def test_corrupt_record_found_when_leased(spool_config: SpoolConfig) -> None:
    batch = envelopes(50)
    with SpoolCore(spool_config) as spool:
        spool.append(batch)
    path = Path(spool_config.path)
    data = path.read_bytes()
    target = batch[20].id.encode()
    first = data.index(target)  # the envelope_id column; the payload holds a second copy
    second = data.index(target, first + len(target))
    _damage(path, second + 5, 1)
    config = spool_config.model_copy(update={"verify_tail_records": 0})
    with SpoolCore(config) as spool:
        assert spool.stats().corrupt_records == 0
        leased = spool.lease(100)
        assert len(leased) == 49 and batch[20].id not in {r.envelope_id for r in leased}
        stats = spool.stats()
        assert stats.corrupt_records == 1 and stats.depth == 49


def test_old_corrupt_files_are_pruned(spool_config: SpoolConfig) -> None:
    path = Path(spool_config.path)
    path.parent.mkdir(parents=True)
    config = spool_config.model_copy(update={"keep_corrupt_files": 1})
    for _ in range(3):
        path.write_bytes(b"\x00garbage" * 1000)
        for suffix in ("-wal", "-shm"):
            _side(path, suffix).unlink(missing_ok=True)
        with SpoolCore(config):
            pass
        path.unlink()
    assert len(list(path.parent.glob("spool.db.corrupt-*"))) == 1
