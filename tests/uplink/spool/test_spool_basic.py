"""Append, lease, ack and release; priorities and lanes; sequence numbers; group commit."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from dataclasses import replace
from pathlib import Path

import msgpack
import pytest
from pydantic import BaseModel, ValidationError

from edge_runtime.clock import ManualClock
from edge_runtime.uplink.config import SenderConfig
from edge_runtime.uplink.envelope import decode_envelopes
from edge_runtime.uplink.spool import (
    CompactionConfig,
    Lane,
    Priority,
    Spool,
    SpoolClosedError,
    SpoolConfig,
    SpoolError,
    SyncSpool,
)
from edge_runtime.uplink.spool.records import encode_payload, flag_backlog, pack_message
from tests.uplink.spool.spool_helpers import T0, envelopes, summary, wrap_at


def test_payload_is_the_envelope_with_backlog_last() -> None:
    env = envelopes(1)[0]
    payload = encode_payload(env, 42)
    doc = msgpack.unpackb(payload)
    assert doc == {**env.to_dict(), "seq": 42}
    assert list(doc)[-1] == "backlog" and payload[-1:] == b"\xc2"
    flagged = flag_backlog(payload)
    assert flagged[-1:] == b"\xc3" and msgpack.unpackb(flagged)["backlog"] is True
    message = pack_message([payload, flagged] * 10)
    decoded = decode_envelopes(message)
    assert [e.backlog for e in decoded] == [False, True] * 10
    assert decoded[0].seq == 42 and decoded[0].stats == env.stats


def test_non_finite_stats_are_stored_as_none() -> None:
    env = envelopes(1)[0]
    bad = replace(env, stats={**env.stats, "stddev": math.nan, "max": math.inf})
    stats = msgpack.unpackb(encode_payload(bad, 1))["stats"]
    assert stats["stddev"] is None and stats["max"] is None and stats["mean"] == env.stats["mean"]


def test_append_lease_ack_in_order(spool_config: SpoolConfig) -> None:
    with SyncSpool(spool_config) as spool:
        seqs = spool.append(envelopes(30, streams=3))
        assert seqs == range(1, 31)
        leased = spool.lease(12)
        assert [r.seq for r in leased] == list(range(1, 13))
        assert all(r.lane is Lane.LIVE and not r.backlog for r in leased)
        again = spool.lease(100)
        assert [r.seq for r in again] == list(range(13, 31))  # leased records are not re-leased
        assert spool.stats().leased == 30
        assert spool.ack(r.id for r in leased) == 12
        assert spool.ack(r.id for r in leased) == 0  # already gone
        stats = spool.stats()
        assert stats.depth == 18 and stats.acked == 12 and stats.appended == 30
        assert stats.leased == 18
        assert spool.lease(10) == []
        decoded = [r.envelope() for r in again]
        assert [e.seq for e in decoded] == list(range(13, 31))
        streams: dict[str, list[float]] = {}
        for e in decoded:
            streams.setdefault(e.stream, []).append(e.window_start)
        assert all(w == sorted(w) for w in streams.values())


def test_priority_classes_drain_alerts_then_live_then_backlog(spool_config: SpoolConfig) -> None:
    with SyncSpool(spool_config) as spool:
        spool.append(envelopes(5, pipeline="live"))
        spool.append(envelopes(3, pipeline="old"), priority=Priority.BACKLOG)
        spool.append(envelopes(2, kind="alert", pipeline="alarm"))  # alerts by kind
        spool.append(envelopes(2, pipeline="live2"))
        leased = spool.lease(100)
        assert [r.lane for r in leased] == [Lane.ALERT] * 2 + [Lane.LIVE] * 7 + [Lane.BACKLOG] * 3
        assert [r.priority for r in leased[:2]] == [Priority.ALERT] * 2
        assert [r.seq for r in leased] == [9, 10, 1, 2, 3, 4, 5, 11, 12, 6, 7, 8]
        assert [r.backlog for r in leased] == [False] * 9 + [True] * 3
        assert spool.stats().depth_by_priority == (2, 7, 3)


def test_lease_respects_limits_and_backlog_budget(spool_config: SpoolConfig) -> None:
    with SyncSpool(spool_config) as spool:
        spool.append(envelopes(10))
        spool.append(envelopes(10), priority=Priority.BACKLOG)
        one = spool.lease(100, max_bytes=1)
        assert len(one) == 1  # at least one record, even above max_bytes
        size = len(one[0].payload)
        assert len(spool.lease(100, max_bytes=3 * size + 1)) == 3
        live = spool.lease(100, backlog_budget=0)
        assert len(live) == 6 and all(r.lane is Lane.LIVE for r in live)
        backlog = spool.lease(100, backlog_budget=4)
        assert [r.lane for r in backlog] == [Lane.BACKLOG] * 4
        assert len(spool.lease(100)) == 6


def test_release_returns_records_oldest_first(spool_config: SpoolConfig) -> None:
    with SyncSpool(spool_config) as spool:
        spool.append(envelopes(20))
        first = spool.lease(5)
        second = spool.lease(5)
        assert spool.release([r.id for r in first[1:3]]) == 2
        assert [r.seq for r in spool.lease(100)] == [2, 3, *range(11, 21)]
        spool.ack(r.id for r in second)
        assert spool.release() == 15  # everything still leased
        assert [r.seq for r in spool.lease(100)] == [1, 2, 3, 4, 5, *range(11, 21)]


def test_seq_survives_reopen_even_when_everything_was_sent(spool_config: SpoolConfig) -> None:
    with SyncSpool(spool_config) as spool:
        assert spool.append(envelopes(7)) == range(1, 8)
        spool.ack(r.id for r in spool.lease(100))
        assert spool.stats().depth == 0
    with SyncSpool(spool_config) as spool:
        assert spool.append(envelopes(3)) == range(8, 11)
    with SyncSpool(spool_config) as spool:
        got = spool.append_summaries([summary("a", i) for i in range(4)], wrap_at(time.time()))
        assert got == range(11, 15)
        assert sorted(r.envelope().seq for r in spool.lease(100)) == list(range(8, 15))


def test_append_summaries_wraps_with_the_final_seq(spool_config: SpoolConfig) -> None:
    seen: list[int] = []
    base = wrap_at(time.time())

    def wrap(s: object, seq: int) -> object:
        seen.append(seq)
        return base(s, seq)  # type: ignore[arg-type]

    with SyncSpool(spool_config) as spool:
        spool.append(envelopes(2))
        got = spool.append_summaries([summary("x", i) for i in range(5)], wrap)  # type: ignore[arg-type]
        assert got == range(3, 8) and seen == list(got)


def test_records_pending_at_open_are_backlog(spool_config: SpoolConfig) -> None:
    with SyncSpool(spool_config) as spool:
        spool.append(envelopes(4))
    with SyncSpool(spool_config) as spool:
        spool.append(envelopes(2))
        leased = spool.lease(100)
        assert [(r.seq, r.lane, r.backlog) for r in leased] == [
            (5, Lane.LIVE, False),
            (6, Lane.LIVE, False),
            (1, Lane.BACKLOG, True),
            (2, Lane.BACKLOG, True),
            (3, Lane.BACKLOG, True),
            (4, Lane.BACKLOG, True),
        ]
        assert leased[2].envelope().backlog is True
        assert decode_envelopes(pack_message([leased[2].wire_payload()]))[0].backlog is True


def test_link_down_moves_pending_records_to_backlog(spool_config: SpoolConfig) -> None:
    with SyncSpool(spool_config) as spool:
        spool.append(envelopes(6))
        in_flight = spool.lease(3)
        assert not any(r.backlog for r in in_flight)
        assert spool.release(mark_backlog=True) == 3  # the link went down
        spool.append(envelopes(2))
        leased = spool.lease(100)
        assert [(r.seq, r.lane) for r in leased] == [
            (7, Lane.LIVE),
            (8, Lane.LIVE),
            *[(s, Lane.BACKLOG) for s in range(1, 7)],
        ]
        assert [r.backlog for r in leased] == [False] * 2 + [True] * 6


def test_live_window_moves_old_records_to_backlog(spool_config: SpoolConfig) -> None:
    clock = ManualClock(T0)
    with SyncSpool(spool_config, clock=clock) as spool:
        spool.append(envelopes(3, created_at=T0))
        clock.advance(120)
        spool.append(envelopes(2, created_at=T0 + 120))
        leased = spool.lease(100, live_window_s=60)
        assert [(r.seq, r.lane, r.backlog) for r in leased] == [
            (4, Lane.LIVE, False),
            (5, Lane.LIVE, False),
            (1, Lane.BACKLOG, True),
            (2, Lane.BACKLOG, True),
            (3, Lane.BACKLOG, True),
        ]


async def test_group_commit_shares_transactions(tmp_path: Path) -> None:
    config = SpoolConfig(path=str(tmp_path / "s.db"), commit_interval_ms=20)
    async with Spool(config) as spool:
        results = await asyncio.gather(*(spool.append(envelopes(10)) for _ in range(50)))
        stats = spool.stats()
    seqs = sorted(s for r in results for s in r)
    assert seqs == list(range(1, 501))
    assert stats.appended == 500
    assert stats.commits < 10, stats  # 50 concurrent appends, a handful of fsyncs
    assert stats.mean_commit_records > 50
    assert stats.append_p99_ms is not None and stats.commit_p50_ms is not None


def test_group_commit_across_threads(spool_config: SpoolConfig) -> None:
    with SyncSpool(spool_config.model_copy(update={"commit_interval_ms": 20})) as spool:
        got: list[range] = []
        lock = threading.Lock()

        def worker() -> None:
            for _ in range(5):
                r = spool.append(envelopes(20))
                with lock:
                    got.append(r)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(s for r in got for s in r) == list(range(1, 801))
        assert spool.stats().commits < 40


def test_stats_report_the_backlog(spool_config: SpoolConfig) -> None:
    clock = ManualClock(T0 + 100)
    with SyncSpool(spool_config, clock=clock) as spool:
        spool.append(envelopes(40, created_at=T0))
        spool.maintain()
        leased = spool.lease(10)
        spool.ack(r.id for r in leased)
        stats = spool.stats()
        assert stats.depth == 30 and stats.depth_by_priority == (0, 30, 0)
        assert stats.payload_bytes > 30 * 100
        assert stats.disk_bytes > stats.payload_bytes and stats.file_bytes > 0
        assert stats.oldest_pending_age_s == pytest.approx(100)
        assert stats.drain_rate_per_s > 0 and stats.eta_s is not None
        flat = stats.as_dict()
        assert flat["dropped_expired_ttl"] == 0 and flat["depth_by_priority_1"] == 30


async def test_async_facade_and_closed_spool(spool_config: SpoolConfig) -> None:
    spool = Spool(spool_config)
    async with spool:
        assert await spool.append(envelopes(3)) == range(1, 4)
        leased = await spool.lease(10)
        assert await spool.ack([r.id for r in leased]) == 3
        await spool.append(envelopes(1))
        assert await spool.wait_leasable(1.0)
    with pytest.raises(SpoolClosedError):
        await spool.append(envelopes(1))


def test_a_second_opener_is_refused(spool_config: SpoolConfig) -> None:
    with SyncSpool(spool_config) as spool:
        spool.append(envelopes(1))
        with pytest.raises(SpoolError, match="another process"):
            SyncSpool(spool_config).open()


def test_unencodable_envelope_is_refused_whole(spool_config: SpoolConfig) -> None:
    good = envelopes(2)
    bad = replace(good[1], attrs={"x": object()})
    with SyncSpool(spool_config) as spool:
        with pytest.raises(SpoolError, match="cannot be encoded"):
            spool.append([good[0], bad])
        assert spool.append(good) == range(1, 3)  # no sequence number was used up


@pytest.mark.parametrize("model", [SpoolConfig, CompactionConfig, SenderConfig])
def test_every_config_field_is_described(model: type[BaseModel]) -> None:
    for name, field in model.model_fields.items():
        assert field.description and len(field.description) > 20, name
    with pytest.raises(ValidationError, match="extra"):
        model.model_validate({"no_such_field": 1})


def test_config_cross_checks() -> None:
    with pytest.raises(ValidationError, match="ttl_s"):
        SpoolConfig(ttl_s=60, compaction=CompactionConfig(min_age_s=600))
    assert SpoolConfig(path="/abs/x.db").resolve_path("/data") == Path("/abs/x.db")
    assert SpoolConfig(path="s/x.db").resolve_path("/data") == Path("/data/s/x.db")
