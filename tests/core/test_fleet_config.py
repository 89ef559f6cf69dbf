"""The core's [fleet] table: the example loads, and bad waves are refused with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from edge_runtime.config.loader import load_model
from edge_runtime.core import CoreConfig
from edge_runtime.core.config import FleetRolloutConfig
from edge_runtime.fleet import Bundle

ROOT = Path(__file__).resolve().parents[2]


def test_the_examples_load() -> None:
    config = load_model(CoreConfig, ROOT / "examples" / "fleet" / "core.toml")
    assert config.fleet.waves == [0.2, 1.0] and config.fleet.failure_threshold == 0
    text = (ROOT / "examples" / "fleet" / "managed.toml").read_text()
    assert Bundle("g", 1, text, "0.1.0").document()["pipelines"][0]["name"] == "pm25"


@pytest.mark.parametrize(
    ("waves", "says"),
    [
        ([], "at least one wave"),
        ([0.5, 0.2, 1.0], "each one larger"),
        ([0.2, 0.8], "last wave must be 1.0"),
        ([0.0, 1.0], "in (0, 1]"),
    ],
)
def test_bad_waves_are_refused(waves: list[float], says: str) -> None:
    with pytest.raises(ValidationError, match=says.replace("(", r"\(").replace("]", r"\]")):
        FleetRolloutConfig(waves=waves)
