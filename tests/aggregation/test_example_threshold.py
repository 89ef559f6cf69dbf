"""The example threshold plugin: one alert per excursion, with hysteresis."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_runtime import ManualClock, PluginError
from edge_runtime.testing import PipelineHarness, run_pipeline
from edge_runtime_pipelines.threshold import ThresholdPipeline
from tests.aggregation.agg_helpers import T0, json_message, json_messages, senml_pack


def config(**fields: Any) -> dict[str, Any]:
    return {"name": "alarm", "topics": ["city/#"], **fields}


def alerts_for(values: list[float | None], batch_size: int = 256, **fields: Any) -> list[float]:
    rows = [("river", v, T0 + i) for i, v in enumerate(values)]
    result = run_pipeline(
        ThresholdPipeline, config(**fields), json_messages(rows), batch_size=batch_size
    )
    return [s.window_start - T0 for s in result.summaries]


def test_one_alert_per_excursion() -> None:
    values: list[float | None] = [1, 2, 5, 6, 7, 2, 1, 6, 1]
    assert alerts_for(values, limit=4) == [2, 7]


def test_hysteresis_suppresses_wobble_around_the_limit() -> None:
    values: list[float | None] = [3.9, 4.1, 3.95, 4.2, 3.8, 4.05, 3.4, 4.3]
    assert alerts_for(values, limit=4) == [1, 3, 5, 7]
    assert alerts_for(values, limit=4, hysteresis=0.5) == [1, 7]


def test_direction_below() -> None:
    values: list[float | None] = [10, 8, 3, 2, 9, 1]
    assert alerts_for(values, limit=5, direction="below") == [2, 5]


def test_missing_values_change_nothing() -> None:
    values: list[float | None] = [5, None, 5, 1, None, 6]
    assert alerts_for(values, limit=4) == [0, 5]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 7])
def test_state_carries_across_batches(batch_size: int) -> None:
    rng = np.random.default_rng(batch_size)
    values: list[float | None] = rng.normal(0, 1, 200).round(2).tolist()
    expected = _reference(values, limit=0.5, hysteresis=0.3)
    assert expected  # the series does cross
    assert alerts_for(values, batch_size=batch_size, limit=0.5, hysteresis=0.3) == expected


def _reference(values: list[float | None], limit: float, hysteresis: float) -> list[float]:
    """A plain loop: what the vectorised plugin must agree with."""
    armed, out = True, []
    for i, v in enumerate(values):
        if v is None:
            continue
        if armed and v > limit:
            out.append(float(i))
            armed = False
        elif v < limit - hysteresis:
            armed = True
    return out


def test_keys_are_independent_and_time_ordered_within_a_batch() -> None:
    h = PipelineHarness(ThresholdPipeline, config(limit=10), clock=ManualClock(T0))
    rows = [("b", 11.0, T0 + 2), ("a", 12.0, T0 + 3), ("a", 1.0, T0 + 1), ("b", 1.0, T0 + 1)]
    out = h.feed(json_messages(rows))
    assert [(s.key, s.window_start - T0, s.stats["value"]) for s in out] == [
        ("b", 2, 11.0),
        ("a", 3, 12.0),
    ]
    assert out[0].kind == "alert"
    assert out[0].stats["limit"] == 10
    assert out[0].attrs == {"direction": "above"}
    assert h.feed([json_message("a", 13.0, T0 + 4)]) == []  # still the same excursion
    assert h.result.events["alerts"] == 2


def test_senml_feed() -> None:
    pack = senml_pack("pump/", [("pressure", 1.0, T0), ("pressure", 9.0, T0 + 1)])
    result = run_pipeline(
        ThresholdPipeline, config(limit=5, decode={"format": "senml", "key": "senml"}), [pack]
    )
    assert [(s.key, s.stats["value"]) for s in result.summaries] == [("pump/pressure", 9.0)]


def test_config_errors_name_the_field() -> None:
    with pytest.raises(PluginError, match=r"pipeline\.limit: Field required"):
        PipelineHarness(ThresholdPipeline, config())
    with pytest.raises(PluginError, match=r"pipeline\.hysteresis: .*greater than or equal to 0"):
        PipelineHarness(ThresholdPipeline, config(limit=1, hysteresis=-1))
