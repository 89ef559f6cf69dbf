"""Statistics kernels and merge_stats, against numpy."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from edge_runtime.aggregation import ALL_STATS, compute_stats, grouped_stats, merge_stats
from tests.aggregation.agg_helpers import assert_stats_equal, reference_stats


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 20, 101, 1000])
def test_compute_stats_matches_numpy(n: int) -> None:
    rng = np.random.default_rng(n)
    values = rng.normal(50, 20, n).round(2)
    values[rng.random(n) < 0.15] = np.nan
    assert_stats_equal(compute_stats(values), reference_stats(values))


def test_stddev_is_population() -> None:
    stats = compute_stats(np.array([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]))
    assert stats["stddev"] == 2.0  # ddof=0; the sample stddev would be 2.138...


def test_percentiles_use_linear_interpolation() -> None:
    stats = compute_stats(np.array([10.0, 20.0, 30.0, 40.0]))
    assert stats["p50"] == 25.0
    assert stats["p95"] == pytest.approx(38.5)
    assert stats["p99"] == pytest.approx(39.7)


def test_window_without_valid_readings_has_none_not_nan() -> None:
    stats = compute_stats(np.array([np.nan, np.nan, np.nan]))
    assert stats["count"] == 0
    assert stats["missing"] == 3
    assert all(stats[s] is None for s in ALL_STATS if s not in ("count", "missing"))
    empty = compute_stats(np.empty(0))
    assert empty["count"] == 0
    assert empty["missing"] == 0
    assert empty["mean"] is None


def test_infinities_count_as_missing() -> None:
    stats = compute_stats(np.array([1.0, np.inf, 3.0, -np.inf, np.nan]))
    assert stats["count"] == 2
    assert stats["missing"] == 3
    assert stats["max"] == 3.0
    assert stats["mean"] == 2.0


def test_selected_stats_only_and_in_given_order() -> None:
    stats = compute_stats(np.array([1.0, 2.0, np.nan]), ["p50", "count", "max"])
    assert list(stats) == ["p50", "count", "max"]
    assert stats == {"p50": 1.5, "count": 2, "max": 2.0}
    assert compute_stats(np.array([np.nan]), ["min", "missing"]) == {"min": None, "missing": 1}


def test_unknown_stat_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown statistics.*median"):
        compute_stats(np.array([1.0]), ["median"])


@pytest.mark.parametrize(
    "stats", [ALL_STATS, ("count", "missing", "sum", "min", "max", "mean", "stddev"), ("p99",)]
)
@pytest.mark.parametrize("span", [5, 70_000, 2**40])  # one radix digit, two, plain argsort
def test_grouped_stats_matches_per_group_numpy(stats: tuple[str, ...], span: int) -> None:
    rng = np.random.default_rng(span)
    n = 3000
    distinct = np.unique(np.append(rng.integers(-span, span, 40), [-span, span]))
    groups = rng.choice(distinct, n)
    values = rng.normal(0, 1e3, n)
    values[rng.random(n) < 0.1] = np.nan
    values[groups == groups[0]] = np.nan  # one group with no valid reading
    codes, rows = grouped_stats(groups, values, stats)
    assert codes.tolist() == sorted(set(groups.tolist()))
    for code, row in zip(codes.tolist(), rows, strict=True):
        ref = reference_stats(values[groups == code])
        assert_stats_equal(row, {s: ref[s] for s in stats})


def test_grouped_stats_sorted_runs_gives_the_same_result() -> None:
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 50, 4000)
    values = rng.normal(0, 1, 4000)
    values[::17] = np.nan
    runs = [np.argsort(values[i : i + 1000]) + i for i in range(0, 4000, 1000)]
    order = np.concatenate(runs)
    plain = grouped_stats(groups, values)
    from_runs = grouped_stats(groups[order], values[order], sorted_runs=True)
    assert plain[0].tolist() == from_runs[0].tolist()
    for a, b in zip(plain[1], from_runs[1], strict=True):
        assert_stats_equal(b, a)


def test_grouped_stats_checks_lengths() -> None:
    with pytest.raises(ValueError, match="groups has 2 entries but values has 3"):
        grouped_stats(np.zeros(2, dtype=np.int64), np.zeros(3))


# -- merge_stats ---------------------------------------------------------------------------------


def _twelve_windows() -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(12)
    parts = []
    for i in range(12):
        n = int(rng.integers(0, 40))
        values = rng.gamma(2.0, 30.0 + 5 * i, n).round(1)
        values[rng.random(n) < 0.1] = np.nan
        parts.append(values)
    parts[5] = np.array([np.nan, np.nan])  # a window with no valid reading
    parts[8] = np.empty(0)
    return parts, np.concatenate(parts)


def test_merging_twelve_windows_equals_stats_over_all_readings() -> None:
    parts, everything = _twelve_windows()
    summaries = [compute_stats(p) for p in parts]
    merged = merge_stats(summaries)
    whole = reference_stats(everything)
    for name in ("count", "missing", "min", "max"):
        assert merged[name] == whole[name], name
    for name in ("sum", "mean", "stddev"):
        assert merged[name] == pytest.approx(whole[name], rel=1e-12), name
    assert merged["approx_percentiles"] == 1
    full = [(s, s["count"]) for s in summaries if s["count"]]
    for name in ("p50", "p95", "p99"):
        weighted = sum(s[name] * c for s, c in full) / sum(c for _, c in full)
        assert merged[name] == pytest.approx(weighted, rel=1e-12)
        assert merged[name] != whole[name]  # approximate, hence flagged


def test_merge_is_pure_and_associative_for_exact_stats() -> None:
    parts, _ = _twelve_windows()
    summaries = [compute_stats(p) for p in parts]
    before = copy.deepcopy(summaries)
    hourly = [merge_stats(summaries[i : i + 3]) for i in range(0, 12, 3)]
    assert summaries == before
    two_step = merge_stats(hourly)
    one_step = merge_stats(summaries)
    for name in ("count", "missing", "min", "max"):
        assert two_step[name] == one_step[name]
    for name in ("sum", "mean", "stddev"):
        assert two_step[name] == pytest.approx(one_step[name], rel=1e-12)
    assert two_step["approx_percentiles"] == 1


def test_merge_single_part_is_exact_and_not_flagged() -> None:
    stats = compute_stats(np.array([1.0, 5.0, 9.0]))
    merged = merge_stats([stats, compute_stats(np.array([np.nan]))])
    assert merged["p50"] == stats["p50"]
    assert merged["approx_percentiles"] == 0
    assert merged["missing"] == 1


def test_merge_of_empty_windows_has_none() -> None:
    merged = merge_stats([compute_stats(np.array([np.nan])), compute_stats(np.empty(0))])
    assert merged["count"] == 0
    assert merged["missing"] == 1
    assert merged["mean"] is None
    assert merged["stddev"] is None
    assert merged["p95"] is None


def test_merge_keeps_only_stats_every_part_can_supply() -> None:
    a = compute_stats(np.array([1.0, 2.0]), ["sum", "mean", "stddev", "max"])
    b = compute_stats(np.array([3.0]), ["sum", "mean", "stddev", "max"])
    merged = merge_stats([a, b])
    assert merged == {"sum": 6.0, "max": 3.0}  # mean and stddev need count
    c = compute_stats(np.array([1.0, 3.0]), ["count", "mean", "stddev"])
    d = compute_stats(np.array([5.0]), ["count", "mean", "p50"])
    merged = merge_stats([c, d])
    assert merged == {"count": 3, "mean": 3.0}
    assert math.isclose(
        merge_stats([c, compute_stats(np.array([5.0]), ["count", "mean", "stddev"])])["stddev"],
        float(np.std([1.0, 3.0, 5.0])),
    )


def test_merge_needs_parts() -> None:
    with pytest.raises(ValueError, match="at least one part"):
        merge_stats([])
    with pytest.raises(ValueError, match="whole number"):
        merge_stats([{"count": 1.5}])
