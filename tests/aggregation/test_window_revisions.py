"""A window emitted again after a crash that lost QoS 0 input gets a higher revision, so the
two results never share an envelope id (issue 12, item 4); its corrections go on above it."""

from __future__ import annotations

import numpy as np

from edge_runtime.aggregation.spec import WindowSpec
from edge_runtime.aggregation.windows import WindowStore
from edge_runtime.types import KeyTable, ReadingBatch, Summary
from tests.aggregation.agg_helpers import T0


def batch(table: KeyTable, rows: list[tuple[str, float, float]]) -> ReadingBatch:
    return ReadingBatch(
        keys=table.encode([k for k, _, _ in rows]),
        values=np.array([v for _, v, _ in rows], dtype=np.float64),
        times=np.array([t for _, _, t in rows], dtype=np.float64),
        key_table=table,
    )


def store(table: KeyTable) -> WindowStore:
    spec = WindowSpec.model_validate(
        {
            "kind": "tumbling",
            "size_s": 60,
            "allowed_lateness_s": 0,
            "late_policy": "correct",
            "correction_horizon_s": 600,
            "stats": ["count", "sum"],
        }
    )
    return WindowStore(spec, pipeline="p")


def test_results_restored_after_a_lossy_crash_carry_the_raised_revision() -> None:
    table = KeyTable()
    before = store(table)
    assert before.add(batch(table, [("a", 1.0, T0 + 1), ("b", 2.0, T0 + 2)]), T0 + 2) == []
    data = before.snapshot()
    # the crashed run emitted window [T0, T0+60) at revision 0 from input now lost
    first = before.add(batch(table, [("a", 5.0, T0 + 30), ("a", 9.0, T0 + 61)]), T0 + 61)
    assert [(s.key, s.revision, s.stats["count"]) for s in first] == [("a", 0, 2), ("b", 0, 1)]

    table2 = KeyTable()
    after = store(table2)
    assert after.restore(data, table2, table2.names, T0 + 70) == []
    after.mark_incomplete_before(T0 + 70)
    after.raise_revisions(1000, T0 + 70)
    again = after.add(batch(table2, [("a", 3.0, T0 + 62)]), T0 + 70)
    assert [(s.key, s.kind, s.revision, s.stats["count"]) for s in again] == [
        ("a", "summary", 1000, 1),
        ("b", "summary", 1000, 1),
    ]
    assert all(s.attrs.get("incomplete") for s in again)
    # a late reading corrects it above that revision, and the state keeps the floor
    late = after.add(batch(table2, [("a", 4.0, T0 + 10)]), T0 + 71)
    assert [(s.key, s.kind, s.revision) for s in late] == [("a", "correction", 1001)]
    table3 = KeyTable()
    resumed = store(table3)
    resumed.restore(after.snapshot(), table3, table3.names, T0 + 72)
    closed: list[Summary] = resumed.add(batch(table3, [("c", 1.0, T0 + 125)]), T0 + 125)
    assert [(s.key, s.window_start, s.revision) for s in closed] == [("a", T0 + 60, 1000)]


def test_without_a_raise_a_state_emits_revision_zero_as_before() -> None:
    table = KeyTable()
    windows = store(table)
    windows.add(batch(table, [("a", 1.0, T0 + 1)]), T0 + 1)
    data = windows.snapshot()
    table2 = KeyTable()
    restored = store(table2)
    restored.restore(data, table2, table2.names, T0 + 2)
    out = restored.add(batch(table2, [("a", 2.0, T0 + 61)]), T0 + 61)
    assert [(s.revision, s.stats["count"]) for s in out] == [(0, 1)]


def test_without_checkpoints_a_stop_cuts_windows_into_numbered_parts() -> None:
    """Checkpoints off: run 1 flushes its open window at a stop as part 1; run 2 emits the
    rest of that window as part 2 at a revision above run 1's, both flagged incomplete.
    Windows that start after run 2 started are whole: no flag, revision 0."""
    table = KeyTable()
    run1 = store(table)
    run1.number_parts(1)
    closed = run1.add(batch(table, [("a", 1.0, T0 + 1), ("a", 2.0, T0 + 61)]), T0 + 61)
    assert [(s.window_start, s.revision, dict(s.attrs)) for s in closed] == [(T0, 0, {})]
    cut = run1.flush()
    assert [(s.window_start, s.revision, s.stats["count"]) for s in cut] == [(T0 + 60, 0, 1)]
    assert dict(cut[0].attrs) == {"incomplete": True, "part": 1}

    table2 = KeyTable()
    run2 = store(table2)
    run2.number_parts(2)
    run2.mark_incomplete_before(T0 + 90)
    run2.raise_revisions(2000, T0 + 90)
    rest = run2.add(batch(table2, [("a", 3.0, T0 + 95), ("a", 4.0, T0 + 125)]), T0 + 125)
    assert [(s.window_start, s.revision, s.stats["count"]) for s in rest] == [(T0 + 60, 2000, 1)]
    assert dict(rest[0].attrs) == {"incomplete": True, "part": 2}
    # a late reading corrects part 2 within part 2
    late = run2.add(batch(table2, [("a", 5.0, T0 + 70)]), T0 + 126)
    assert [(s.kind, s.revision, dict(s.attrs)) for s in late] == [
        ("correction", 2001, {"incomplete": True, "part": 2})
    ]
    whole = run2.add(batch(table2, [("a", 6.0, T0 + 185)]), T0 + 185)
    assert [(s.window_start, s.revision, dict(s.attrs)) for s in whole] == [(T0 + 120, 0, {})]
