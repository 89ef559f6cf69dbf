"""Bounded disk: compaction into coarser windows first, then drops per policy; TTL expiry."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import pytest

from edge_runtime.aggregation.stats import merge_stats
from edge_runtime.clock import ManualClock
from edge_runtime.types import Envelope, Summary
from edge_runtime.uplink.spool import (
    CompactionConfig,
    Lane,
    Priority,
    SpoolConfig,
    SpoolFullError,
    SyncSpool,
)
from edge_runtime.uplink.spool._maintenance import _merged_envelope, _Part
from tests.uplink.spool.spool_helpers import T0, envelopes

STREAMS = 10
CAP = 256 * 1024


def _config(tmp_path: Path, **changes: object) -> SpoolConfig:
    base = SpoolConfig(
        path=str(tmp_path / "cap.db"),
        max_bytes=CAP,
        commit_interval_ms=1,
        compaction=CompactionConfig(compact_to_s=3600, min_age_s=0),
    )
    return base.model_copy(update=changes)


def _by_stream(records: list[Envelope]) -> dict[str, list[Envelope]]:
    out: dict[str, list[Envelope]] = {}
    for envelope in records:
        out.setdefault(envelope.stream, []).append(envelope)
    return out


def test_cap_compacts_old_summaries_into_hours(tmp_path: Path) -> None:
    originals = envelopes(1000, streams=STREAMS, created_at=time.time() - 7200)
    with SyncSpool(_config(tmp_path)) as spool:
        for start in range(0, 1000, 100):
            spool.append(originals[start : start + 100])
        spool.maintain()
        stats = spool.stats()
        assert stats.compacted_records > 0, stats
        assert stats.dropped["dropped_cap"] == 0
        assert stats.disk_bytes <= CAP
        records = spool.lease(10**6)
    assert stats.depth == len(records) < 1000
    compacted = [r for r in records if r.priority is Priority.BACKLOG]
    assert compacted and all(r.lane is Lane.BACKLOG and r.backlog for r in compacted)
    # every original window is covered exactly once, in order per stream
    inputs = _by_stream(originals)
    spool_seq = {e.id: i + 1 for i, e in enumerate(originals)}
    covered = 0
    for stream, envs in _by_stream([r.envelope() for r in records]).items():
        envs.sort(key=lambda e: e.window_start)
        parts = inputs[stream]
        for env in envs:
            mine = [p for p in parts if env.window_start <= p.window_start < env.window_end]
            n = int(env.attrs.get("compacted_from", 1))
            assert len(mine) == n
            covered += n
            if n == 1:
                continue
            assert env.kind == "summary" and env.window_end == mine[-1].window_end
            assert math.floor(mine[0].window_start / 3600) == math.floor(
                mine[-1].window_start / 3600
            )
            assert env.stats["count"] == sum(int(p.stats["count"] or 0) for p in mine)
            assert env.stats["missing"] == sum(int(p.stats["missing"] or 0) for p in mine)
            assert env.stats["min"] == min(float(p.stats["min"] or 0) for p in mine)
            assert env.stats["max"] == max(float(p.stats["max"] or 0) for p in mine)
            assert env.stats["sum"] == pytest.approx(sum(float(p.stats["sum"] or 0) for p in mine))
            assert env.stats == pytest.approx(merge_stats([p.stats for p in mine]))
            assert env.stats["approx_percentiles"] == 1
            assert env.seq == spool_seq[mine[0].id] and env.backlog
    assert covered == 1000


def test_compaction_keeps_the_flags_of_every_window_it_merges(tmp_path: Path) -> None:
    """A window flagged incomplete (a part cut by a restart, or input lost in a crash) makes
    the coarser summary it is merged into incomplete too, wherever it falls in the hour; the
    parts of several runs are all named."""
    first = envelopes(24, streams=1, created_at=time.time() - 7200)
    first[5] = replace(first[5], attrs={"incomplete": True, "part": 2})
    first[6] = replace(first[6], attrs={"incomplete": True, "part": 3})
    with SyncSpool(_config(tmp_path, max_bytes=64 * 1024)) as spool:
        spool.append(first)
        for _ in range(200):  # push the file past its cap with fresh, uncompactable records
            spool.maintain()
            if spool.stats().compacted_records:
                break
            spool.append(envelopes(50, streams=50, created_at=time.time() - 7200, pipeline="f"))
        records = [r.envelope() for r in spool.lease(10**6) if r.stream == first[0].stream]
    merged = [e for e in records if e.window_start <= first[5].window_start < e.window_end]
    assert len(merged) == 1 and int(merged[0].attrs["compacted_from"]) > 2
    assert merged[0].attrs["incomplete"] is True and merged[0].attrs["part"] == [2, 3]
    untouched = [e for e in records if e.window_start > first[6].window_end]
    assert untouched and not any(e.attrs.get("incomplete") for e in untouched)


def test_a_merged_record_merged_again_names_every_run() -> None:
    """A record compacted before (its parts a list) merged with windows of other runs: the
    run numbers are flattened, not nested (nor refused as unhashable)."""
    merged_before, later = envelopes(2, streams=1)
    merged_before = replace(
        merged_before, attrs={"compacted_from": 3, "incomplete": True, "part": [2, 3]}
    )
    later = replace(later, attrs={"incomplete": True, "part": 4})
    rows = [_Part(i, 0, e) for i, e in enumerate([merged_before, later])]
    merged = _merged_envelope(rows, merge_stats)
    assert merged.attrs["part"] == [2, 3, 4] and merged.attrs["incomplete"] is True
    assert merged.attrs["compacted_from"] == 4


def test_compaction_keeps_the_latest_revision_of_a_window(tmp_path: Path) -> None:
    first = envelopes(24, streams=1, created_at=time.time() - 7200)
    fix = first[3]
    stats = {**fix.stats, "count": 100, "sum": float(fix.stats["mean"] or 0) * 100}
    revised = Summary(
        fix.pipeline, fix.key, fix.window_start, fix.window_end, stats, "correction", 1
    )
    correction = Envelope.wrap(
        revised, site=fix.site, seq=0, created_at=fix.created_at, version="t", config_hash="c"
    )
    with SyncSpool(_config(tmp_path, max_bytes=64 * 1024)) as spool:
        spool.append([*first, correction])
        spool.maintain()
        for _ in range(200):  # push the file past its cap with fresh, uncompactable records
            if spool.stats().compacted_records:
                break
            spool.append(envelopes(50, streams=50, created_at=time.time() - 7200, pipeline="f"))
        records = [r.envelope() for r in spool.lease(10**6) if r.stream == fix.stream]
    hours = [e for e in records if "compacted_from" in e.attrs]
    assert hours
    total = sum(int(e.stats["count"] or 0) for e in records)
    expected = sum(int(e.stats["count"] or 0) for e in first) - int(fix.stats["count"] or 0) + 100
    assert total == expected  # the superseded revision 0 was not merged in


def test_drops_oldest_when_compaction_cannot_help(tmp_path: Path) -> None:
    config = _config(tmp_path, compaction=CompactionConfig(min_age_s=10**6))  # nothing is old
    with SyncSpool(config.model_copy(update={"ttl_s": 10**7})) as spool:
        alerts = spool.append(envelopes(5, kind="alert", pipeline="alarm"))
        spool.append(envelopes(20, pipeline="replayed"), priority=Priority.BACKLOG)
        for _ in range(15):
            spool.append(envelopes(100))
        spool.maintain()  # the cap is enforced right after each commit, before the next work
        stats = spool.stats()
        assert stats.dropped["dropped_cap"] > 20, stats
        assert stats.compacted_records == 0
        assert stats.disk_bytes <= CAP
        assert stats.depth + stats.dropped["dropped_cap"] == 5 + 20 + 1500
        records = spool.lease(10**6)
    seqs = {r.seq for r in records}
    assert set(alerts) <= seqs  # alerts go last
    assert not any(r.priority is Priority.BACKLOG for r in records)  # backlog class went first
    live = sorted(r.seq for r in records if r.priority is Priority.LIVE)
    assert live == list(range(live[0], 1526))  # the oldest live records went, the newest stay


def test_reject_new_refuses_appends_at_the_cap(tmp_path: Path) -> None:
    config = _config(tmp_path, drop_policy="reject_new", compaction=CompactionConfig(enabled=False))
    with SyncSpool(config) as spool:
        accepted = 0
        while not spool.stats().full:
            accepted += len(spool.append(envelopes(50)))
            spool.maintain()
        with pytest.raises(SpoolFullError) as info:
            spool.append(envelopes(50))
        assert info.value.retry_after > 0
        stats = spool.stats()
        assert stats.full and stats.rejected_full == 50
        assert stats.dropped["dropped_cap"] == 0 and stats.depth == accepted
        spool.ack(r.id for r in spool.lease(accepted // 2))
        spool.maintain()
        assert not spool.stats().full
        spool.append(envelopes(5))


def test_ttl_expiry_is_counted_and_spares_leased_records(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    config = SpoolConfig(path=str(tmp_path / "ttl.db"), ttl_s=3600, commit_interval_ms=1)
    with SyncSpool(config, clock=clock) as spool:
        spool.append(envelopes(30, created_at=T0))
        spool.append(envelopes(5, created_at=T0, kind="alert"))
        in_flight = spool.lease(3, backlog_budget=0)  # alerts
        clock.advance(1800)
        spool.append(envelopes(10, created_at=T0 + 1800))
        clock.advance(1801)
        spool.maintain()
        stats = spool.stats()
        assert stats.dropped["expired_ttl"] == 32
        assert stats.depth == 13 and stats.leased == 3
        assert stats.oldest_pending_age_s == pytest.approx(3601)
        assert spool.ack(r.id for r in in_flight) == 3
        left = spool.lease(100)
        assert sorted(r.seq for r in left) == list(range(36, 46))
