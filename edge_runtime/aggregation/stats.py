"""Vectorised summary statistics over float64 readings, and merging of window summaries.

A value that is NaN (or ±inf) is a *missing* reading: it is counted in ``missing`` and ignored by
every other statistic. The statistics a window can carry:

==========  =====================================================================================
``count``   readings with a value (int)
``missing`` readings without one (int)
``sum``     sum of the values
``min``     smallest value
``max``     largest value
``mean``    arithmetic mean
``stddev``  *population* standard deviation (``ddof=0``, as ``numpy.std``): sqrt(Σ(x-mean)²/count)
``p50``     50th percentile, ``numpy.percentile``'s default ``'linear'`` method (exact)
``p95``     95th percentile, same method
``p99``     99th percentile, same method
==========  =====================================================================================

A window with no valid reading has ``count`` 0, ``missing`` N and ``None`` (never NaN) for the
other statistics.

Numeric range: readings are IEEE float64, so any finite value within ±1.8e308 is kept (integers
beyond 2**53 are rounded to the nearest float64, as JSON parsers do). A ``sum`` beyond that range
cannot be represented and is reported as ``None``; ``mean``, ``stddev`` and the percentiles are
computed with each window's values scaled by its largest magnitude where the plain computation
would overflow, so they stay exact up to rounding (ten readings of 1e308 have mean 1e308).

:func:`grouped_stats` computes them for many groups (one per key of a window) at once, without a
Python loop over readings or groups; :func:`compute_stats` is its one-group form;
:func:`merge_stats` combines the summaries of adjacent windows into a coarser one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final, Literal, get_args

import numpy as np
import numpy.typing as npt

from edge_runtime.types import Stat

__all__ = [
    "ALL_STATS",
    "PERCENTILES",
    "StatName",
    "compute_stats",
    "grouped_stats",
    "merge_stats",
]

StatName = Literal["count", "missing", "sum", "min", "max", "mean", "stddev", "p50", "p95", "p99"]
ALL_STATS: Final[tuple[StatName, ...]] = get_args(StatName)
#: percentile statistics and their level in percent
PERCENTILES: Final[Mapping[str, float]] = {"p50": 50.0, "p95": 95.0, "p99": 99.0}
_APPROX: Final = "approx_percentiles"
#: merged moments are computed on scaled values above this magnitude (squares would overflow)
_SCALE_ABOVE: Final = 1e150

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _check_names(stats: Iterable[str]) -> tuple[str, ...]:
    names = tuple(stats)
    unknown = [s for s in names if s not in ALL_STATS]
    if unknown:
        raise ValueError(f"unknown statistics {unknown}; choose from {list(ALL_STATS)}")
    return names


def grouped_stats(
    groups: npt.NDArray[np.integer],
    values: FloatArray,
    stats: Sequence[str] = ALL_STATS,
    *,
    sorted_runs: bool = False,
) -> tuple[IntArray, list[dict[str, Stat]]]:
    """Statistics of ``values`` per distinct value of ``groups`` (parallel arrays).

    Returns the distinct group codes in ascending order and, for each, a dict with the
    requested ``stats`` (in the order given). Cost: one sort of the readings plus a few passes
    of ``numpy`` reductions; no Python work per reading, and per group only building its dict.
    ``sorted_runs`` says that ``values`` is a concatenation of a few runs each sorted by value
    (NaN last); a run-adaptive sort then makes percentiles much cheaper.
    """
    names = _check_names(stats)
    n = int(values.shape[0])
    if groups.shape[0] != n:
        raise ValueError(f"groups has {groups.shape[0]} entries but values has {n}")
    if n == 0:
        return np.empty(0, dtype=np.int64), []
    want = frozenset(names)
    by_value = not want.isdisjoint(PERCENTILES)
    codes, sizes, v = _group(groups, values, by_value=by_value, sorted_runs=sorted_runs)
    starts = np.zeros(sizes.shape[0], dtype=np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    ok = ~np.isnan(v)
    all_ok = bool(ok.all())
    count = sizes if all_ok else np.add.reduceat(ok, starts, dtype=np.int64)
    columns = _columns(want, v, ok=None if all_ok else ok, starts=starts, sizes=sizes, count=count)
    lists = [columns[name].tolist() for name in names]
    rows = [dict(zip(names, row, strict=True)) for row in zip(*lists, strict=True)]
    if "sum" in columns:
        for i in np.flatnonzero(~np.isfinite(columns["sum"]) & (count > 0)).tolist():
            rows[i]["sum"] = None  # beyond the float64 range: no value to report
    empty = np.flatnonzero(count == 0)
    if empty.size:
        missing = sizes[empty].tolist()
        for i, m in zip(empty.tolist(), missing, strict=True):
            rows[i] = _empty_row(names, m)
    return codes, rows


def _group(
    groups: npt.NDArray[np.integer], values: FloatArray, *, by_value: bool, sorted_runs: bool
) -> tuple[IntArray, IntArray, FloatArray]:
    """The distinct codes, the size of each group and the values ordered by group, missing ones
    as NaN. With ``by_value`` each group's valid values are a sorted run at its start, its
    missing ones after them."""
    finite = np.isfinite(values)
    if not finite.all():
        values = np.where(finite, values, np.nan)  # ±inf is missing too
    if by_value:
        # A value sort, then a *stable* sort by group: about 3x faster than np.lexsort.
        by_v = np.argsort(values, kind="stable" if sorted_runs else None)
        values, groups = values[by_v], groups[by_v]
    low, high = int(groups.min()), int(groups.max())
    ordered = values[_stable_order(groups, low, high)]
    if high - low <= max(2 * groups.shape[0], 2**16):
        counts = np.bincount(groups - low, minlength=high - low + 1)
        present = np.flatnonzero(counts)
        return present + low, counts[present], ordered
    codes, sizes = np.unique(groups, return_counts=True)
    return codes.astype(np.int64), sizes.astype(np.int64), ordered


def _stable_order(codes: npt.NDArray[np.integer], low: int, high: int) -> npt.NDArray[np.intp]:
    """``np.argsort(codes, kind="stable")`` for codes in [low, high], done as one or two radix
    sorts of 16-bit digits (numpy radix-sorts 16-bit integers) when the span is below 2**32."""
    span = high - low
    if span >= 2**32:
        return np.argsort(codes, kind="stable")
    if span < 2**16:
        return np.argsort((codes - low).astype(np.uint16), kind="stable")
    rebased = codes.astype(np.int64) - low
    order = np.argsort(rebased.astype(np.uint16), kind="stable")  # low digit, then high
    top = (rebased[order] >> 16).astype(np.uint16)
    return order[np.argsort(top, kind="stable")]


def _columns(
    want: frozenset[str],
    v: FloatArray,
    *,
    ok: npt.NDArray[np.bool_] | None,
    starts: IntArray,
    sizes: IntArray,
    count: IntArray,
) -> dict[str, FloatArray | IntArray]:
    """Per-group statistics as arrays; ``ok`` marks valid values (None: all are)."""
    columns: dict[str, FloatArray | IntArray] = {"count": count, "missing": sizes - count}
    vz = v if ok is None else np.where(ok, v, 0.0)
    # empty groups are fixed by the caller; sums beyond the float64 range by _scaled_moments
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if not want.isdisjoint(("sum", "mean", "stddev")):
            sums = np.add.reduceat(vz, starts)
            columns["sum"] = sums
            columns["mean"] = mean = sums / count
            if "stddev" in want:
                dev = vz - np.repeat(mean, sizes)
                if ok is not None:
                    dev[~ok] = 0.0
                columns["stddev"] = np.sqrt(np.add.reduceat(dev * dev, starts) / count)
            overflow = (count > 0) & ~np.isfinite(columns.get("stddev", mean))
            if overflow.any():  # values near the float64 limit: scale them, then scale back
                scaled_mean, scaled_std = _scaled_moments(vz, ok, starts, sizes, count)
                mean[overflow] = scaled_mean[overflow]
                if "stddev" in want:
                    columns["stddev"][overflow] = scaled_std[overflow]
    if not want.isdisjoint(PERCENTILES):  # v is sorted within each group
        columns["min"] = v[starts]
        columns["max"] = v[starts + np.maximum(count - 1, 0)]
        for name in PERCENTILES:
            if name in want:
                columns[name] = _sorted_percentile(v, starts, count, PERCENTILES[name])
    elif not want.isdisjoint(("min", "max")):
        lows = v if ok is None else np.where(ok, v, np.inf)
        highs = v if ok is None else np.where(ok, v, -np.inf)
        columns["min"] = np.minimum.reduceat(lows, starts)
        columns["max"] = np.maximum.reduceat(highs, starts)
    return columns


def _scaled_moments(
    vz: FloatArray,
    ok: npt.NDArray[np.bool_] | None,
    starts: IntArray,
    sizes: IntArray,
    count: IntArray,
) -> tuple[FloatArray, FloatArray]:
    """Mean and population stddev per group computed on the values divided by the group's
    largest magnitude (so no intermediate overflows), then multiplied back."""
    scale = np.maximum.reduceat(np.abs(vz), starts)
    scale[scale == 0] = 1.0
    unit = vz / np.repeat(scale, sizes)
    mean = np.add.reduceat(unit, starts) / count
    dev = unit - np.repeat(mean, sizes)
    if ok is not None:
        dev[~ok] = 0.0
    std = np.sqrt(np.add.reduceat(dev * dev, starts) / count)
    return mean * scale, std * scale


def _sorted_percentile(
    v: FloatArray, starts: IntArray, count: IntArray, level: float
) -> FloatArray:
    """Percentile per group of ``v``, whose groups start at ``starts`` with ``count`` sorted
    valid values each; the same arithmetic as ``numpy.percentile(method='linear')``."""
    virtual = (count - 1) * (level / 100)
    below = np.floor(virtual)
    gamma = virtual - below
    top = np.maximum(count - 1, 0)
    lo = np.minimum(below.astype(np.int64), top)
    hi = np.minimum(lo + 1, top)
    a = v[starts + np.maximum(lo, 0)]
    b = v[starts + hi]
    with np.errstate(over="ignore", invalid="ignore"):
        diff = b - a
        out: FloatArray = a + diff * gamma
        upper = gamma >= 0.5
        out[upper] = b[upper] - diff[upper] * (1 - gamma[upper])
        wide = ~np.isfinite(diff)  # a and b of opposite sign near the float64 limit
        if wide.any():
            out[wide] = a[wide] * (1 - gamma[wide]) + b[wide] * gamma[wide]
    return out


def _empty_row(names: Sequence[str], missing: int) -> dict[str, Stat]:
    row: dict[str, Stat] = dict.fromkeys(names)
    if "count" in row:
        row["count"] = 0
    if "missing" in row:
        row["missing"] = missing
    return row


def compute_stats(values: FloatArray, stats: Sequence[str] = ALL_STATS) -> dict[str, Stat]:
    """Statistics of one window's ``values`` (NaN = missing); see the module docs."""
    if values.shape[0] == 0:
        return _empty_row(_check_names(stats), 0)
    _, rows = grouped_stats(np.zeros(values.shape[0], dtype=np.int64), values, stats)
    return rows[0]


def merge_stats(parts: Sequence[Mapping[str, Stat]]) -> dict[str, Stat]:
    """Merge the stats of adjacent windows (same key) into those of the window they cover.

    Pure: the parts are not modified. ``count``, ``missing``, ``sum``, ``min`` and ``max`` are
    exact; ``mean`` and ``stddev`` are exact up to rounding (Chan et al.'s parallel merge of
    count, mean and M2 = stddev² × count). Percentiles cannot be merged exactly: each is
    approximated by the count-weighted mean of the parts' percentiles, and the result carries
    ``"approx_percentiles": 1`` (0 when only one part had readings and it was exact).

    A stat is merged when every part has it and what it depends on (``mean`` and the
    percentiles need ``count``; ``stddev`` needs ``count`` and ``mean``); others are left out.
    Parts without readings (``count`` 0) contribute only their ``missing``.
    """
    if not parts:
        raise ValueError("merge_stats needs at least one part")
    common = set(parts[0])
    for part in parts[1:]:
        common &= set(part)
    common.discard(_APPROX)
    if "count" not in common:
        common -= {"mean", "stddev", *PERCENTILES}
    if "mean" not in common:
        common.discard("stddev")
    names = [s for s in ALL_STATS if s in common]
    full: list[tuple[Mapping[str, Stat], int]] = []  # parts with readings, and their count
    if "count" in common:
        counted = ((p, _as_int(p["count"], "count")) for p in parts)
        full = [(p, c) for p, c in counted if c > 0]
    total = sum(c for _, c in full)
    out: dict[str, Stat] = dict.fromkeys(names)
    for name in names:
        if name == "count":
            out[name] = total
        elif name == "missing":
            out[name] = sum(_as_int(p["missing"], "missing") for p in parts)
        elif name == "sum" and any(p["sum"] is None and p.get("count") for p in parts):
            out[name] = None  # a part's sum was beyond the float64 range already
        elif name in ("sum", "min", "max"):
            # None only where a part had no readings
            present = [_as_float(p[name], name) for p in parts if p[name] is not None]
            out[name] = _reduce(name, present) if present else None
        elif full and name in PERCENTILES:
            out[name] = math.fsum(_as_float(p[name], name) * (c / total) for p, c in full)
    if full and "mean" in names:
        mean, stddev = _merge_moments(full, with_stddev="stddev" in names)
        out["mean"] = mean
        if "stddev" in names:
            out["stddev"] = stddev
    if any(p in names for p in PERCENTILES):
        approx = len(full) > 1 or any(p.get(_APPROX) for p, _ in full)
        out[_APPROX] = int(approx)
    return out


_REDUCE: Final[Mapping[str, Callable[[list[float]], float]]] = {
    "sum": math.fsum,
    "min": min,
    "max": max,
}


def _reduce(name: str, values: list[float]) -> float | None:
    try:
        return _REDUCE[name](values)
    except OverflowError:  # a sum beyond the float64 range has no value to report
        return None


def _merge_moments(
    full: Sequence[tuple[Mapping[str, Stat], int]], *, with_stddev: bool
) -> tuple[float, float]:
    """Chan et al.'s merge, on means and stddevs divided by the largest of their magnitudes so
    that values near the float64 limit do not overflow (see the module docs)."""
    means = [_as_float(part["mean"], "mean") for part, _ in full]
    stds = [_as_float(part["stddev"], "stddev") if with_stddev else 0.0 for part, _ in full]
    largest = max(map(abs, means + stds))
    scale = largest if largest > _SCALE_ABOVE else 1.0
    n = 0
    mean = 0.0
    m2 = 0.0  # of the scaled values, divided by the total count as it grows
    for (_, count), part_mean, part_std in zip(full, means, stds, strict=True):
        total = n + count
        delta = part_mean / scale - mean
        mean += delta * count / total
        m2 = (m2 * n + (part_std / scale) ** 2 * count + delta * delta * n * count / total) / total
        n = total
    return mean * scale, math.sqrt(m2) * scale


def _as_int(value: Stat, name: str) -> int:
    if value is None or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"stat {name!r} must be a whole number, got {value!r}")
    return int(value)


def _as_float(value: Stat, name: str) -> float:
    if value is None:
        raise ValueError(f"stat {name!r} is None in a part that has readings")
    return float(value)
