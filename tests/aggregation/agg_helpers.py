"""Shared helpers for the aggregation tests: payload builders and an independent reference."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import orjson
import pytest

from edge_runtime import RawMessage, Summary

T0 = 1_699_999_200.0  # event times in the tests start here (a whole hour since the epoch)


def json_message(key: str, value: float | None, ts: float) -> RawMessage:
    """One JSON reading on topic ``city/<key>``, the default decode spec's layout."""
    return RawMessage(f"city/{key}", orjson.dumps({"value": value, "ts": ts}), received_at=ts)


def json_messages(rows: Iterable[tuple[str, float | None, float]]) -> list[RawMessage]:
    return [json_message(k, v, t) for k, v, t in rows]


def senml_pack(base: str, rows: Sequence[tuple[str, float | None, float]]) -> RawMessage:
    """A SenML pack: base name and base time on the first record, relative times after it."""
    bt = rows[0][2]
    records: list[dict[str, Any]] = []
    for i, (name, value, ts) in enumerate(rows):
        rec: dict[str, Any] = {"n": name, "v": value, "t": ts - bt}  # null: a missing reading
        if i == 0:
            rec = {"bn": base, "bt": bt, **rec}
        records.append(rec)
    return RawMessage(f"city/{base.rstrip('/')}", orjson.dumps(records), received_at=bt)


def reference_stats(values: Sequence[float | None] | np.ndarray) -> dict[str, Any]:
    """The statistics straight from numpy, for comparison with the window store."""
    arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    valid = arr[~np.isnan(arr)]
    out: dict[str, Any] = {"count": int(valid.size), "missing": int(arr.size - valid.size)}
    if valid.size == 0:
        out.update(dict.fromkeys(["sum", "min", "max", "mean", "stddev", "p50", "p95", "p99"]))
        return out
    out.update(
        sum=float(np.sum(valid)),
        min=float(np.min(valid)),
        max=float(np.max(valid)),
        mean=float(np.mean(valid)),
        stddev=float(np.std(valid)),
        p50=float(np.percentile(valid, 50)),
        p95=float(np.percentile(valid, 95)),
        p99=float(np.percentile(valid, 99)),
    )
    return out


ROUNDED = ("sum", "mean", "stddev")  # summation order may differ from numpy's: compare to 1e-12


def assert_stats_equal(got: Mapping[str, Any], want: Mapping[str, Any]) -> None:
    assert set(got) == set(want), (sorted(got), sorted(want))
    for name, expected in want.items():
        value = got[name]
        if expected is None:
            assert value is None, name
        elif name in ROUNDED:
            assert value == pytest.approx(expected, rel=1e-12, abs=1e-9), name
        else:
            assert value == expected, name
            assert type(value) is type(expected), name


def by_window(summaries: Iterable[Summary]) -> dict[tuple[str, float], Summary]:
    """The latest revision of each (key, window_start)."""
    out: dict[tuple[str, float], Summary] = {}
    for s in summaries:
        current = out.get((s.key, s.window_start))
        if current is None or s.revision > current.revision:
            out[(s.key, s.window_start)] = s
    return out
