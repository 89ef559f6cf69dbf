"""The windows pipeline through the no-broker harness, against numpy on the same readings."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import pytest

from edge_runtime import ManualClock, RawMessage, Summary
from edge_runtime.testing import PipelineHarness, run_pipeline
from edge_runtime_pipelines.windows import WindowPipeline
from tests.aggregation.agg_helpers import (
    T0,
    assert_stats_equal,
    by_window,
    json_message,
    json_messages,
    reference_stats,
    senml_pack,
)

Row = tuple[str, float | None, float]


def harness(window: dict[str, Any], *, now: float = T0, **decode: Any) -> PipelineHarness:
    config: dict[str, Any] = {"name": "win", "topics": ["city/#"], "window": window}
    if decode:
        config["decode"] = decode
    return PipelineHarness(WindowPipeline, config, clock=ManualClock(now))


def reference_windows(
    rows: list[Row], size: float, hop: float | None = None, offset: float = 0.0
) -> dict[tuple[str, float], list[float | None]]:
    """Brute force: every grid window [start, start + size) that holds a reading."""
    step = hop or size
    times = np.array([t for _, _, t in rows])
    first = math.floor((times.min() - size - offset) / step)
    last = math.ceil((times.max() - offset) / step)
    out: dict[tuple[str, float], list[float | None]] = defaultdict(list)
    for k in range(first, last + 1):
        start = offset + k * step
        for key, value, t in rows:
            if start <= t < start + size:
                out[(key, start)].append(value)
    return out


def check_against_reference(
    summaries: list[Summary], expected: dict[tuple[str, float], list[float | None]]
) -> None:
    got = by_window(summaries)
    assert set(got) == set(expected)
    for (key, start), values in expected.items():
        summary = got[(key, start)]
        assert summary.window_end - summary.window_start == pytest.approx(
            summary.window_end - start
        )
        assert_stats_equal(summary.stats, reference_stats(values))


def random_rows(rng: np.random.Generator, n: int, keys: list[str], span: float) -> list[Row]:
    times = T0 + np.sort(rng.uniform(0, span, n))
    values = rng.normal(100, 30, n).round(2)
    rows: list[Row] = []
    for t, v in zip(times.tolist(), values.tolist(), strict=True):
        rows.append((str(rng.choice(keys)), None if rng.random() < 0.08 else v, t))
    return rows


def shuffle_within(rng: np.random.Generator, rows: list[Row], disorder: float) -> list[Row]:
    """Arrival order: event time plus up to ``disorder`` seconds of delay."""
    delay = rng.uniform(0, disorder, len(rows))
    order = np.argsort([t for _, _, t in rows] + delay)
    return [rows[i] for i in order]


# -- every stat against numpy ------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 37, 1000])
def test_tumbling_json_matches_numpy(batch_size: int) -> None:
    rng = np.random.default_rng(batch_size)
    rows = random_rows(rng, 800, ["s1", "s2", "s3", "s4", "s5"], 600.0)
    arrival = shuffle_within(rng, rows, 10.0)
    result = run_pipeline(
        WindowPipeline,
        {"name": "win", "topics": ["city/#"], "window": {"size_s": 60, "allowed_lateness_s": 15}},
        json_messages(arrival),
        batch_size=batch_size,
        clock=ManualClock(T0 + 600),
    )
    check_against_reference(result.summaries, reference_windows(rows, 60.0))
    assert result.events["late_dropped"] == 0
    assert result.events["readings"] == 800
    assert result.events["missing"] == sum(v is None for _, v, _ in rows)
    assert result.events["windows_emitted"] == len(result.summaries)
    assert all(s.kind == "summary" and s.revision == 0 for s in result.summaries)


@pytest.mark.parametrize(("size", "hop", "offset"), [(30.0, 10.0, 5.0), (60.0, 15.0, 0.0)])
def test_hopping_senml_matches_numpy(size: float, hop: float, offset: float) -> None:
    rng = np.random.default_rng(7)
    rows = random_rows(rng, 900, ["temp", "rh", "pm25"], 400.0)
    # three gateways, packs of 30 readings each with the gateway as SenML base name
    packs = []
    named: list[Row] = []
    for i in range(0, len(rows), 30):
        gw = f"gw{i // 30 % 3}/"
        chunk = rows[i : i + 30]
        packs.append(senml_pack(gw, chunk))
        named.extend((gw + k, v, t) for k, v, t in chunk)
    window = {
        "kind": "hopping",
        "size_s": size,
        "hop_s": hop,
        "offset_s": offset,
        "allowed_lateness_s": 0,
    }
    h = harness(window, now=T0 + 400, format="senml", key="senml")
    for start in range(0, len(packs), 4):
        h.feed(packs[start : start + 4])
    h.flush()
    expected = reference_windows(named, size, hop, offset)
    check_against_reference(h.result.summaries, expected)
    per_reading = round(size / hop)
    total = sum(s.stats["count"] + s.stats["missing"] for s in h.result.summaries)
    assert total == per_reading * len(rows)  # each reading is in size/hop windows
    assert h.result.events["late_dropped"] == 0


def test_windows_are_aligned_to_the_epoch_plus_offset() -> None:
    h = harness({"size_s": 60, "offset_s": 20, "allowed_lateness_s": 0}, now=T0 + 200)
    h.feed([json_message("a", 1.0, T0 + 25), json_message("a", 2.0, T0 + 79.5)])
    h.feed([json_message("a", 3.0, T0 + 80)])
    (summary,) = h.result.summaries
    assert (summary.window_start, summary.window_end) == (T0 + 20, T0 + 80)
    assert summary.stats["count"] == 2


# -- missing values ----------------------------------------------------------------------------


def test_nan_never_poisons_a_window() -> None:
    h = harness({"size_s": 10, "allowed_lateness_s": 0}, now=T0 + 100)
    h.feed(
        json_messages(
            [("a", 1.0, T0 + 1), ("a", None, T0 + 2), ("a", 3.0, T0 + 3), ("b", None, T0 + 4)]
        )
    )
    h.feed([json_message("a", 0.0, T0 + 10)])
    got = by_window(h.result.summaries)
    a = got[("a", T0)].stats
    assert a["count"] == 2
    assert a["missing"] == 1
    assert a["mean"] == 2.0
    assert a["p50"] == 2.0
    b = got[("b", T0)].stats
    assert b["count"] == 0
    assert b["missing"] == 1
    assert all(b[s] is None for s in ("sum", "min", "max", "mean", "stddev", "p50", "p95", "p99"))
    assert h.result.events["missing"] == 2


def test_senml_null_value_is_a_missing_reading() -> None:
    pack = senml_pack("gw/", [("t", 20.0, T0 + 1), ("t", None, T0 + 2), ("t", 22.0, T0 + 3)])
    result = run_pipeline(
        WindowPipeline,
        {
            "name": "win",
            "topics": ["city/#"],
            "decode": {"format": "senml", "key": "senml"},
            "window": {"size_s": 10, "stats": ["count", "missing", "mean"]},
        },
        [pack],
        clock=ManualClock(T0),
    )
    (summary,) = result.summaries
    assert summary.key == "gw/t"
    assert summary.stats == {"count": 2, "missing": 1, "mean": 21.0}


# -- late data -----------------------------------------------------------------------------------


def test_out_of_order_within_lateness_is_not_late() -> None:
    h = harness({"size_s": 10, "allowed_lateness_s": 5}, now=T0 + 100)
    h.feed([json_message("a", 1.0, T0 + 12)])
    h.feed([json_message("a", 2.0, T0 + 8)])  # watermark is T0+7: window [T0, T0+10) is open
    assert h.result.summaries == []
    h.feed([json_message("a", 3.0, T0 + 15)])
    (first,) = h.result.summaries
    assert first.window_start == T0
    assert first.stats["count"] == 1
    assert first.stats["sum"] == 2.0
    assert h.result.events["late_dropped"] == 0


def test_late_policy_drop_counts_and_drops() -> None:
    h = harness({"size_s": 10, "allowed_lateness_s": 0}, now=T0 + 100)
    h.feed([json_message("a", 1.0, T0 + 1), json_message("a", 2.0, T0 + 12)])
    assert len(h.result.summaries) == 1
    assert h.feed([json_message("a", 5.0, T0 + 5), json_message("b", 5.0, T0 + 9.99)]) == []
    assert h.result.events["late_dropped"] == 2
    h.flush()
    assert [(s.key, s.window_start, s.stats["count"]) for s in h.result.summaries] == [
        ("a", T0, 1),
        ("a", T0 + 10, 1),
    ]


def test_late_policy_correct_emits_revisions() -> None:
    window = {
        "size_s": 10,
        "allowed_lateness_s": 0,
        "late_policy": "correct",
        "correction_horizon_s": 30,
    }
    h = harness(window, now=T0 + 100)
    h.feed(json_messages([("a", 1.0, T0 + 1), ("b", 5.0, T0 + 2), ("a", 7.0, T0 + 12)]))
    assert [(s.key, s.revision) for s in h.result.summaries] == [("a", 0), ("b", 0)]

    (fix1,) = h.feed([json_message("a", 3.0, T0 + 3)])
    assert (fix1.key, fix1.kind, fix1.revision) == ("a", "correction", 1)
    assert (fix1.window_start, fix1.window_end) == (T0, T0 + 10)
    assert_stats_equal(fix1.stats, reference_stats([1.0, 3.0]))  # the whole window, not a delta

    (fix2,) = h.feed([json_message("a", None, T0 + 4)])
    assert (fix2.kind, fix2.revision) == ("correction", 2)
    assert_stats_equal(fix2.stats, reference_stats([1.0, 3.0, None]))

    # a key with no summary for that window yet gets its first one, revision 0
    (first,) = h.feed([json_message("c", 9.0, T0 + 5)])
    assert (first.key, first.kind, first.revision) == ("c", "summary", 0)

    # beyond the horizon (window end + 30 s of event time) the data is gone: dropped
    h.feed([json_message("a", 0.0, T0 + 45)])
    assert h.feed([json_message("a", 4.0, T0 + 6)]) == []
    assert h.result.events["late_dropped"] == 1
    assert h.result.events["late_corrected"] == 3
    assert h.result.events["corrections_emitted"] == 2
    # a correction of a newer window still within the horizon works
    (fix3,) = h.feed([json_message("a", 8.0, T0 + 13)])
    assert (fix3.window_start, fix3.revision) == (T0 + 10, 1)
    assert fix3.stats["count"] == 2


def test_late_correction_in_hopping_windows_fixes_every_closed_window() -> None:
    window = {
        "kind": "hopping",
        "size_s": 30,
        "hop_s": 10,
        "allowed_lateness_s": 0,
        "late_policy": "correct",
    }
    h = harness(window, now=T0 + 200)
    h.feed(json_messages([("a", 1.0, T0 + 25), ("a", 2.0, T0 + 50)]))
    closed = {s.window_start for s in h.result.summaries}
    assert closed == {T0, T0 + 10, T0 + 20}  # windows ending at or before T0+50
    fixes = h.feed([json_message("a", 4.0, T0 + 28)])  # in [T0, T0+30) and the next two
    assert [(s.window_start, s.kind, s.revision) for s in fixes] == [
        (T0, "correction", 1),
        (T0 + 10, "correction", 1),
        (T0 + 20, "correction", 1),
    ]
    # late for [T0+10, T0+40) .. [T0+30, T0+60): two closed windows corrected, one open
    fixes = h.feed([json_message("a", 8.0, T0 + 39)])
    assert [(s.window_start, s.revision) for s in fixes] == [(T0 + 10, 2), (T0 + 20, 2)]
    assert h.result.events["late_corrected"] == 2
    h.flush()
    check_against_reference(
        h.result.summaries,
        reference_windows(
            [("a", 1.0, T0 + 25), ("a", 2.0, T0 + 50), ("a", 4.0, T0 + 28), ("a", 8.0, T0 + 39)],
            30,
            10,
        ),
    )


def test_hopping_reading_late_for_old_windows_still_joins_open_ones() -> None:
    h = harness({"kind": "hopping", "size_s": 30, "hop_s": 10, "allowed_lateness_s": 0}, now=T0)
    h.feed(json_messages([("a", 1.0, T0 + 25), ("a", 2.0, T0 + 50)]))
    assert h.feed([json_message("a", 4.0, T0 + 39)]) == []  # closed: [T0+10, +40), [T0+20, +50)
    assert h.result.events["late_dropped"] == 1
    got = by_window(h.flush())
    assert got[("a", T0 + 30)].stats["count"] == 2  # [T0+30, T0+60) holds 39 and 50
    assert got[("a", T0 + 30)].stats["sum"] == 6.0


def test_readings_too_far_in_the_future_are_dropped() -> None:
    h = harness({"size_s": 10, "max_future_s": 300}, now=T0)
    h.feed([json_message("a", 1.0, T0 + 200), json_message("a", 2.0, T0 + 301)])
    h.flush()
    (summary,) = h.result.summaries
    assert summary.stats["count"] == 1
    assert h.result.events["future_dropped"] == 1
    assert h.result.events["readings"] == 2


# -- closing ------------------------------------------------------------------------------------


def test_idle_timeout_closes_a_quiet_window() -> None:
    window = {"size_s": 10, "allowed_lateness_s": 0, "idle_timeout_s": 30}
    h = harness(window, now=T0 + 3)
    h.feed([json_message("a", 1.0, T0 + 3)])
    assert h.tick(10) == []  # 10 s idle < 30 s
    assert h.tick(10) == []
    (summary,) = h.tick(15)  # idle 35 s: watermark T0+3+35 passes the window end T0+10
    assert (summary.key, summary.window_start, summary.stats["count"]) == ("a", T0, 1)
    assert h.tick(60) == []
    assert h.feed([json_message("a", 2.0, T0 + 9)]) == []  # its window is closed: late
    assert h.result.events["late_dropped"] == 1


def test_no_idle_close_when_disabled() -> None:
    h = harness({"size_s": 10, "allowed_lateness_s": 0, "idle_timeout_s": None}, now=T0)
    h.feed([json_message("a", 1.0, T0 + 3)])
    assert h.tick(3600) == []
    assert len(h.flush()) == 1


def test_max_open_windows_forces_the_oldest_closed() -> None:
    h = harness({"size_s": 10, "allowed_lateness_s": 1000, "max_open_windows": 3}, now=T0 + 100)
    h.feed(json_messages([("a", 1.0, T0 + 1), ("b", 2.0, T0 + 2), ("a", 3.0, T0 + 11)]))
    assert h.result.summaries == []
    assert h.pipeline.gauges()["open_windows"] == 3
    forced = h.feed([json_message("b", 4.0, T0 + 12)])
    assert [(s.key, s.window_start) for s in forced] == [("a", T0), ("b", T0)]
    assert all(s.attrs == {"forced_close": True} for s in forced)
    assert h.result.events["forced_close"] == 2
    assert h.pipeline.gauges()["open_windows"] == 2
    assert h.feed([json_message("a", 5.0, T0 + 5)]) == []  # its window was closed early
    assert h.result.events["late_dropped"] == 1
    rest = h.flush()
    assert [(s.key, s.window_start, s.attrs) for s in rest] == [
        ("a", T0 + 10, {}),
        ("b", T0 + 10, {}),
    ]


def test_flush_closes_everything_and_emits_in_window_end_then_key_order() -> None:
    h = harness({"size_s": 10, "allowed_lateness_s": 100}, now=T0 + 100)
    rows = [("zeta", 1.0, T0 + 31), ("alpha", 2.0, T0 + 2), ("mid", 3.0, T0 + 15)]
    rows += [("alpha", 4.0, T0 + 33), ("zeta", 5.0, T0 + 8)]
    h.feed(json_messages(rows))
    assert h.pipeline.gauges()["open_windows"] == 5
    out = h.flush()
    assert [(s.window_end - T0, s.key) for s in out] == [
        (10, "alpha"),
        (10, "zeta"),
        (20, "mid"),
        (40, "alpha"),
        (40, "zeta"),
    ]
    gauges = h.pipeline.gauges()
    assert gauges["open_windows"] == 0
    assert gauges["buffered_readings"] == 0
    assert h.flush() == []


def test_watermark_closes_many_windows_in_order() -> None:
    h = harness({"size_s": 10, "allowed_lateness_s": 100}, now=T0 + 1000)
    rows = [(k, 1.0, T0 + t) for t in (21, 1, 11) for k in ("b", "a")]
    assert h.feed(json_messages(rows)) == []
    out = h.feed([json_message("c", 1.0, T0 + 500)])
    assert [(s.window_start - T0, s.key) for s in out] == [
        (0, "a"),
        (0, "b"),
        (10, "a"),
        (10, "b"),
        (20, "a"),
        (20, "b"),
    ]


def test_gauges_report_lag_and_buffers() -> None:
    h = harness({"size_s": 60, "allowed_lateness_s": 5}, now=T0 + 100)
    assert h.pipeline.gauges()["open_windows"] == 0
    h.feed(json_messages([("a", 1.0, T0 + 90), ("b", 2.0, T0 + 91)]))
    gauges = h.pipeline.gauges()
    assert gauges["open_windows"] == 2
    assert gauges["buffered_readings"] == 2
    assert gauges["watermark_lag_s"] == pytest.approx(14.0)  # now - (91 - 5)
    assert gauges["event_time_lag_s"] == pytest.approx(9.0)


def test_keys_from_a_growing_key_table() -> None:
    # many keys appear over time; the window's key bookkeeping grows with them
    rows: list[Row] = [(f"k{i:03d}", float(i), T0 + i * 0.05) for i in range(300)]
    result = run_pipeline(
        WindowPipeline,
        {"name": "win", "topics": ["city/#"], "window": {"size_s": 5, "allowed_lateness_s": 0}},
        json_messages(rows),
        batch_size=16,
        clock=ManualClock(T0 + 20),
    )
    check_against_reference(result.summaries, reference_windows(rows, 5.0))


def test_empty_and_unmatched_batches_are_harmless() -> None:
    h = harness({"size_s": 10}, now=T0)
    assert h.feed([RawMessage("other/a", b"{}")]) == []
    assert h.feed([RawMessage("city/a", b"not json")]) == []
    assert h.tick(1000) == []
    assert h.flush() == []
    assert h.result.decode_errors["malformed_json"] == 1


@pytest.mark.parametrize(
    "window",
    [
        {"size_s": 20},
        {"kind": "hopping", "size_s": 30, "hop_s": 10},
        {"size_s": 20, "max_open_windows": 4},
        {"kind": "hopping", "size_s": 40, "hop_s": 10, "max_open_windows": 6},
    ],
)
def test_corrections_converge_to_the_full_window(window: dict[str, Any]) -> None:
    """With late_policy 'correct' and a long horizon nothing is lost: the last revision of each
    (key, window) has the stats of all its readings, however late they came."""
    rng = np.random.default_rng(42)
    rows = random_rows(rng, 600, ["a", "b", "c", "d"], 300.0)
    arrival = shuffle_within(rng, rows, 60.0)
    spec = {
        **window,
        "allowed_lateness_s": 5,
        "late_policy": "correct",
        "correction_horizon_s": 10_000,
    }
    h = harness(spec, now=T0 + 300)
    for start in range(0, len(arrival), 25):
        h.feed(json_messages(arrival[start : start + 25]))
    h.flush()
    events = h.result.events
    assert events["late_corrected"] > 0
    assert events["late_dropped"] == 0
    if "max_open_windows" in window:
        assert events["forced_close"] > 0
    check_against_reference(
        h.result.summaries, reference_windows(rows, window["size_s"], window.get("hop_s"))
    )
    revisions: dict[tuple[str, float], list[int]] = defaultdict(list)
    for s in h.result.summaries:
        assert s.kind == ("summary" if s.revision == 0 else "correction")
        revisions[(s.key, s.window_start)].append(s.revision)
    assert all(r == list(range(len(r))) for r in revisions.values())
    assert events["corrections_emitted"] == sum(len(r) - 1 for r in revisions.values())
    assert events["windows_emitted"] == len(revisions)
