"""Validation of the windows plugin's config: errors name the field and say what to change."""

from __future__ import annotations

from typing import Any

import pytest

from edge_runtime import PluginError
from edge_runtime.aggregation import ALL_STATS, WindowSpec
from edge_runtime.pipelines import PluginRegistry, default_registry
from edge_runtime_pipelines.threshold import ThresholdPipeline
from edge_runtime_pipelines.windows import WindowConfig, WindowPipeline


def validate(window: dict[str, Any]) -> WindowConfig:
    registry = PluginRegistry()
    registry.register(WindowPipeline)
    raw = {"type": "windows", "name": "w", "topics": ["a/#"], "window": window}
    config = registry.validate_config(raw, "pipelines[0]")
    assert isinstance(config, WindowConfig)
    return config


def test_defaults() -> None:
    spec = validate({}).window
    assert spec.kind == "tumbling"
    assert spec.size_s == 60.0
    assert spec.hop == 60.0
    assert spec.windows_per_reading == 1
    assert spec.late_policy == "drop"
    assert tuple(spec.stats) == ALL_STATS


def test_hopping_config() -> None:
    spec = validate({"kind": "hopping", "size_s": 300, "hop_s": 60, "offset_s": 30}).window
    assert spec.hop == 60.0
    assert spec.windows_per_reading == 5


@pytest.mark.parametrize(
    ("window", "field", "advice"),
    [
        ({"kind": "hopping", "size_s": 60}, "window.hop_s", "hopping windows need hop_s"),
        ({"kind": "hopping", "size_s": 60, "hop_s": 25}, "window.hop_s", "whole multiple"),
        ({"kind": "hopping", "size_s": 60, "hop_s": 90}, "window.hop_s", "must not exceed"),
        ({"kind": "hopping", "size_s": 6000, "hop_s": 1}, "window.hop_s", "raise hop_s"),
        ({"size_s": 60, "hop_s": 30}, "window.hop_s", "set kind = 'hopping'"),
        ({"size_s": 0}, "window.size_s", "greater than 0"),
        ({"size_s": 60, "offset_s": 75}, "window.offset_s", "use offset_s = 15"),
        ({"allowed_lateness_s": -1}, "window.allowed_lateness_s", "greater than or equal"),
        ({"late_policy": "keep"}, "window.late_policy", "'drop' or 'correct'"),
        ({"max_open_windows": 0}, "window.max_open_windows", "greater than or equal to 1"),
        ({"idle_timeout_s": 0}, "window.idle_timeout_s", "greater than 0"),
        ({"stats": ["mean", "median"]}, "window.stats.1", "'count'"),
        ({"stats": ["mean", "mean"]}, "window.stats", "list each statistic once"),
        ({"stats": []}, "window.stats", "at least 1"),
        ({"sise_s": 60}, "window.sise_s", "unknown field"),
    ],
)
def test_invalid_window_names_the_field(window: dict[str, Any], field: str, advice: str) -> None:
    with pytest.raises(PluginError) as info:
        validate(window)
    message = str(info.value)
    assert "'windows'" in message
    assert f"pipelines[0].{field}:" in message
    assert advice in message


def test_every_config_field_is_documented() -> None:
    for model in (WindowSpec, WindowConfig):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"


def test_plugins_are_registered_through_entry_points() -> None:
    registry = default_registry()
    assert registry["windows"] is WindowPipeline
    assert registry["threshold"] is ThresholdPipeline


@pytest.mark.parametrize(("size", "hop"), [(20, 7), (60, 25), (60, 7), (1, 0.3), (86400, 1000)])
def test_a_hop_that_does_not_divide_the_size_suggests_values_that_are_accepted(
    size: float, hop: float
) -> None:
    with pytest.raises(PluginError) as info:
        validate({"kind": "hopping", "size_s": size, "hop_s": hop})
    message = str(info.value)
    suggestions = message.split("e.g. ")[1].split(" (got", maxsplit=1)[0].split(" or ")
    assert suggestions, message
    for text in suggestions:
        accepted = validate({"kind": "hopping", "size_s": size, "hop_s": float(text)}).window
        assert accepted.hop == float(text)


def test_an_unknown_field_suggests_the_closest_known_one() -> None:
    with pytest.raises(PluginError) as info:
        validate({"lateness_s": 10})
    expected = "window.lateness_s: unknown field; did you mean 'allowed_lateness_s'?"
    assert f"pipelines[0].{expected}" in str(info.value)
