"""A spool on a disk that really fills (a small tmpfs): appends are refused with the reason
``disk_full``, acknowledged records are still deleted, nothing is leased twice, the spool opens
on a full disk, and it takes appends again once there is room."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.uplink.spool import SpoolConfig, SpoolFullError, SyncSpool
from tests.support import fill_disk, free_bytes, small_disk
from tests.uplink.spool.spool_helpers import envelopes

DISK_KIB = 2048
RESERVE = 256 * 1024


def _config(disk: Path, reserve: int = RESERVE) -> SpoolConfig:
    return SpoolConfig(
        path=str(disk / "spool.db"), commit_interval_ms=1, reserve_bytes=reserve, max_batch=500
    )


def _fill(spool: SyncSpool) -> int:
    """Append batches of 20 until the disk refuses; the records accepted."""
    accepted = 0
    while not spool.stats().disk_full:
        try:
            accepted += len(spool.append(envelopes(20)))
        except SpoolFullError as exc:
            refused = exc
    assert refused.reason == "disk_full"
    return accepted


def _drain(spool: SyncSpool, seen: set[int]) -> int:
    """Lease and ack until nothing is leasable; every id must be new. The records acked."""
    acked = 0
    while records := spool.lease(200):
        ids = [r.id for r in records]
        assert not seen.intersection(ids), "a record was leased twice"
        seen.update(ids)
        acked += spool.ack(ids)
    return acked


def test_a_full_disk_refuses_appends_and_keeps_deleting(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", DISK_KIB) as disk, SyncSpool(_config(disk)) as spool:
        assert spool.stats().reserve_bytes == RESERVE
        accepted = _fill(spool)
        with pytest.raises(SpoolFullError):
            spool.append(envelopes(3))
        full = spool.stats()
        assert full.disk_full and full.disk_full_events == 1
        assert full.depth == accepted
        assert full.rejected_disk_full == 20 + 3
        assert full.reserve_bytes == RESERVE // 2  # half given back, half kept for a restart
        acked = _drain(spool, set())
        drained = spool.stats()
        spool.maintain()  # hands the freed pages back to the disk, makes the reserve again
        back = spool.stats()
        print(
            f"accepted {accepted}, refused {full.rejected_disk_full}, acked on the full disk "
            f"{acked}, deferred {drained.acks_deferred}, free after the drain "
            f"{free_bytes(disk)} bytes, reserve {back.reserve_bytes}"
        )
        assert acked == accepted
        assert drained.depth == 0 and drained.acks_deferred == 0
        assert not back.disk_full and back.reserve_bytes == RESERVE
        assert len(spool.append(envelopes(5))) == 5


def test_a_spool_opens_on_a_full_disk_drains_and_recovers(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", DISK_KIB) as disk:
        with SyncSpool(_config(disk)) as spool:
            accepted = _fill(spool)
        taken = fill_disk(disk / "filler")  # whatever the clean close freed: someone else's
        assert free_bytes(disk) == 0
        with SyncSpool(_config(disk)) as spool:
            opened = spool.stats()
            assert opened.disk_full and opened.depth == accepted
            with pytest.raises(SpoolFullError):
                spool.append(envelopes(1))
            acked = _drain(spool, set())
            spool.maintain()
            back = spool.stats()
            print(
                f"accepted {accepted}, filler {taken} bytes, reopened full with "
                f"{opened.depth} pending, acked {acked}, recovered {not back.disk_full}"
            )
            assert acked == accepted
            assert not back.disk_full and back.depth == 0
            assert len(spool.append(envelopes(5))) == 5


def test_without_a_reserve_nothing_acknowledged_is_leased_again(tmp_path: Path) -> None:
    """No reserve, and the disk filled to the last byte: deletes fail and wait in memory. No
    acknowledged record is ever leased again, even after a release of every lease (what the
    sender does when the link drops), and all of them are deleted once there is room (another
    process's file, ``ballast``, is deleted)."""
    with small_disk(tmp_path / "disk", DISK_KIB) as disk:
        (disk / "ballast").write_bytes(b"\0" * (DISK_KIB * 1024 // 2))
        spool = SyncSpool(_config(disk, 0))
        with spool:
            accepted = _fill(spool)
            fill_disk(disk / "filler")
            seen: set[int] = set()
            half = spool.lease(accepted // 2)
            seen.update(r.id for r in half)
            spool.ack([r.id for r in half])
            spool.release()  # the link dropped: every lease goes back, the acknowledged stay out
            acked = len(half) + _drain(spool, seen)
            deferred = spool.stats().acks_deferred
            (disk / "filler").unlink()
            (disk / "ballast").unlink()
            spool.maintain()
            after = spool.stats()
    print(f"accepted {accepted}, acked {acked}, deferred {deferred}, left {after.depth}")
    assert acked == accepted == len(seen)
    assert deferred > 0
    assert after.depth == 0
