"""Damaged files: SQLite's checks find the damage, SQLite's reads recover what is left, and every
record lost is counted (stats and a WARNING with the count); sequence numbers never go back.

A WAL overwritten after a crash is in test_spool_crash.py (it needs a real crash).
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path

import pytest

from edge_runtime.uplink.spool import SpoolConfig, SpoolError, SyncSpool
from tests.uplink.spool.spool_helpers import envelopes

TOTAL = 3000  # about 300 pages of 4 KiB


def _side(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _fill(config: SpoolConfig, total: int = TOTAL) -> Path:
    """A spool holding ``total`` records, closed cleanly (everything in the main file)."""
    with SyncSpool(config) as spool:
        for start in range(0, total, 300):
            spool.append(envelopes(min(300, total - start)))
    path = Path(config.path)
    assert not _side(path, "-wal").exists() or _side(path, "-wal").stat().st_size == 0
    return path


def _overwrite(path: Path, offset: int, length: int, seed: int = 0) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(random.Random(seed).randbytes(length))


def _damage(path: Path, offset: int, length: int) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        original = fh.read(length)
        fh.seek(offset)
        fh.write(bytes(b ^ 0x5A for b in original))


def _logged_loss(text: str) -> int:
    """The count of the WARNING lines about records lost to damage."""
    found = re.findall(r"(\d+) records lost to damage", text)
    assert found, "no WARNING about records lost to damage"
    return sum(int(n) for n in found)


def _check_carries_on(spool: SyncSpool, total: int) -> None:
    """What is left verifies, is counted exactly, and numbers go on above every old one."""
    stats = spool.stats()
    records = spool.lease(10**6)
    assert len(records) == stats.depth
    assert stats.depth + stats.corrupt_records == total, stats
    assert all(1 <= r.seq <= total for r in records)
    assert [r.envelope().seq for r in records] == [r.seq for r in records]
    new = spool.append(envelopes(5))
    assert new.start > total
    assert [r.seq for r in spool.lease(100)] == list(new)


def test_a_cut_tail_is_rebuilt_and_what_it_held_counted(
    spool_config: SpoolConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """(a) the main file's tail cut: SQLite refuses the short file; the rebuild copies what SQL
    still reaches. (Here that is nothing: the b-tree page under the root was written late, so it
    sits in the cut tail, and SQL reaches no row without it.)"""
    path = _fill(spool_config)
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size * 6 // 10)
    with caplog.at_level(logging.WARNING), SyncSpool(spool_config) as spool:
        stats = spool.stats()
        assert stats.recoveries == 1
        assert stats.recovered_records == stats.depth
        assert stats.corrupt_records > TOTAL * 4 // 10
        assert _logged_loss(caplog.text) == stats.corrupt_records
        _check_carries_on(spool, TOTAL)
    assert list(path.parent.glob("spool.db.corrupt-*"))


@pytest.mark.parametrize("check_on_open", ["always", "after_crash"])
def test_overwritten_pages_are_found_rebuilt_and_counted(
    spool_config: SpoolConfig, caplog: pytest.LogCaptureFixture, check_on_open: str
) -> None:
    """(c) pages in the middle of the file overwritten: found by quick_check on open, or (the
    file was closed cleanly, so not checked) when the sender's lease reads them."""
    config = spool_config.model_copy(update={"check_on_open": check_on_open})
    path = _fill(config)
    page = 4096
    _overwrite(path, 120 * page, 3 * page)
    with caplog.at_level(logging.WARNING), SyncSpool(config) as spool:
        if check_on_open == "after_crash":
            assert spool.stats().recoveries == 0
            with pytest.raises(SpoolError, match="malformed"):
                spool.lease(10**6)
        stats = spool.stats()
        assert stats.recoveries == 1
        assert 0 < stats.corrupt_records < 200  # about three pages of records
        assert _logged_loss(caplog.text) == stats.corrupt_records
        _check_carries_on(spool, TOTAL)
    with SyncSpool(config) as spool:  # the rebuilt file is sound
        assert spool.stats().recoveries == 0


def test_damage_met_by_a_commit_rebuilds_and_the_group_goes_on(
    spool_config: SpoolConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """Pages in the middle overwritten and nothing checked on open: a group commit whose ack
    reads them meets the damage, the file is rebuilt under it, and the group (an append among
    it) is committed into the new file."""
    config = spool_config.model_copy(update={"verify_tail_records": 0})
    path = _fill(config)
    _overwrite(path, 120 * 4096, 2 * 4096)
    sent = [(1 << 56) | seq for seq in range(1000, 1400)]  # ids the core acknowledged
    with caplog.at_level(logging.WARNING), SyncSpool(config) as spool:
        assert spool.stats().recoveries == 0
        acked = spool.submit_ack(sent)
        appended = spool.submit_append(envelopes(5))
        found, got = acked.result(timeout=10), appended.result(timeout=10)
        stats = spool.stats()
        assert stats.recoveries == 1 and stats.appended == 5
        assert 0 < stats.corrupt_records < 100  # about two pages of records
        assert _logged_loss(caplog.text) == stats.corrupt_records
        assert found == 400 - stats.corrupt_records  # the lost ones were not there to delete
        assert got.start > TOTAL
        records = spool.lease(10**6)
    assert len(records) == stats.depth == TOTAL - 400 + 5
    assert [r.seq for r in records][:5] == list(got)  # live, ahead of the backlog


def test_an_overwritten_header_loses_everything_and_counts_it(
    spool_config: SpoolConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """(d) the 100-byte header overwritten: nothing is readable; the ledger knows how many."""
    path = _fill(spool_config)
    _overwrite(path, 0, 100)
    with caplog.at_level(logging.WARNING), SyncSpool(spool_config) as spool:
        stats = spool.stats()
        assert stats.recoveries == 1 and stats.depth == 0
        assert stats.corrupt_records == TOTAL
        assert _logged_loss(caplog.text) == TOTAL
        new = spool.append(envelopes(3))
    assert new.start > TOTAL


def test_checksum_damage_in_the_main_file_is_cut_and_counted(
    spool_config: SpoolConfig, caplog: pytest.LogCaptureFixture
) -> None:
    with SyncSpool(spool_config) as spool:
        spool.append(envelopes(300))
    path = Path(spool_config.path)
    _damage(path, path.stat().st_size - 150, 150)  # the newest page's oldest cells
    with caplog.at_level(logging.WARNING), SyncSpool(spool_config) as spool:
        stats = spool.stats()  # clean close before: only the tail checksums run
        assert stats.corrupt_records >= 1
        assert stats.recoveries == 0
        assert _logged_loss(caplog.text) == stats.corrupt_records
        _check_carries_on(spool, 300)


def test_structural_damage_rebuilds_the_file(spool_config: SpoolConfig) -> None:
    with SyncSpool(spool_config) as spool:
        spool.append(envelopes(500))
    path = Path(spool_config.path)
    page = int.from_bytes(path.read_bytes()[16:18], "big")
    last = path.stat().st_size - page
    _damage(path, last, 12)  # page header of the last page: its type, cell count, pointers
    config = spool_config.model_copy(update={"check_on_open": "always"})
    with SyncSpool(config) as spool:
        stats = spool.stats()
        assert stats.recoveries == 1
        assert 1 <= stats.corrupt_records < 50
        assert list(path.parent.glob("spool.db.corrupt-*"))
        _check_carries_on(spool, 500)
    with SyncSpool(config) as spool:  # the rebuilt file is sound
        assert spool.stats().recoveries == 0


def test_garbage_file_is_moved_aside(spool_config: SpoolConfig) -> None:
    path = Path(spool_config.path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database" * 500)
    with SyncSpool(spool_config) as spool:
        stats = spool.stats()
        assert stats.recoveries == 1 and stats.depth == 0
        assert stats.corrupt_records == 0  # no ledger: nothing says records were there
        assert spool.append(envelopes(3)) == range(1, 4)
    assert len(list(path.parent.glob("spool.db.corrupt-*"))) == 1


def test_an_unreadable_ledger_and_a_lost_database_skip_far_ahead(
    spool_config: SpoolConfig,
) -> None:
    path = _fill(spool_config, 300)
    _side(path, ".ledger").write_bytes(b"\x00garbage")
    _overwrite(path, 0, 100)
    with SyncSpool(spool_config) as spool:
        assert spool.append(envelopes(1)).start > 10**15  # microseconds since 1970


def test_a_missing_ledger_is_rebuilt_from_a_sound_database(spool_config: SpoolConfig) -> None:
    path = _fill(spool_config, 300)
    _side(path, ".ledger").unlink()
    with SyncSpool(spool_config) as spool:
        assert spool.stats().corrupt_records == 0
        assert spool.append(envelopes(1)) == range(301, 302)
    assert _side(path, ".ledger").exists()


def test_corrupt_record_found_when_leased(spool_config: SpoolConfig) -> None:
    batch = envelopes(50)
    with SyncSpool(spool_config) as spool:
        spool.append(batch)
    path = Path(spool_config.path)
    data = path.read_bytes()
    target = batch[20].id.encode()
    first = data.index(target)  # the envelope_id column; the payload holds a second copy
    second = data.index(target, first + len(target))
    _damage(path, second + 5, 1)
    config = spool_config.model_copy(update={"verify_tail_records": 0})
    with SyncSpool(config) as spool:
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
        with SyncSpool(config):
            pass
        path.unlink()
    assert len(list(path.parent.glob("spool.db.corrupt-*"))) == 1
