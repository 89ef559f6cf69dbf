"""Plugins are validated when registered; errors name the plugin and what to change."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from edge_runtime.errors import PluginError
from edge_runtime.pipelines import (
    Pipeline,
    PipelineConfig,
    PluginRegistry,
    ReadingBatch,
    Summary,
    default_registry,
)


class GoodConfig(PipelineConfig):
    type: Literal["good"] = "good"
    limit: float = Field(default=1.0, description="A limit.")


class Good(Pipeline[GoodConfig]):
    type_name = "good"
    config_model = GoodConfig

    def process(self, batch: ReadingBatch) -> Sequence[Summary]:
        return []


def test_builtin_plugins_come_from_the_entry_point_group() -> None:
    registry = default_registry()
    assert "windows" in registry
    assert "threshold" in registry


def test_register_good_plugin() -> None:
    registry = PluginRegistry()
    registry.register(Good)
    cfg = registry.validate_config({"type": "good", "name": "g", "topics": ["x"]}, "pipelines[0]")
    assert isinstance(cfg, GoodConfig)


def test_undocumented_field_is_refused() -> None:
    class BadConfig(PipelineConfig):
        type: Literal["bad"] = "bad"
        limit: float = 1.0

    class Bad(Pipeline[BadConfig]):
        type_name = "bad"
        config_model = BadConfig

        def process(self, batch: ReadingBatch) -> Sequence[Summary]:
            return []

    with pytest.raises(PluginError, match=r"'bad'.*\['limit'\] have no description"):
        PluginRegistry().register(Bad)


def test_type_must_be_a_literal_of_the_name() -> None:
    class Loose(Pipeline[GoodConfig]):
        type_name = "loose"
        config_model = GoodConfig

        def process(self, batch: ReadingBatch) -> Sequence[Summary]:
            return []

    with pytest.raises(PluginError, match=r"Literal\['loose'\]"):
        PluginRegistry().register(Loose)


def test_missing_process_is_refused() -> None:
    class Lazy(Pipeline[GoodConfig]):
        type_name = "good"
        config_model = GoodConfig

    with pytest.raises(PluginError, match="process"):
        PluginRegistry().register(Lazy)


def test_not_a_pipeline() -> None:
    with pytest.raises(PluginError, match="not a subclass"):
        PluginRegistry().register(object)


def test_duplicate_names_are_refused() -> None:
    registry = PluginRegistry()
    registry.register(Good, origin="a")

    class Good2(Good):
        pass

    with pytest.raises(PluginError, match="registered twice"):
        registry.register(Good2, origin="b")


def test_plugin_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(
        "from typing import Literal\n"
        "from edge_runtime.pipelines import Pipeline, PipelineConfig\n"
        "class MineConfig(PipelineConfig):\n"
        "    type: Literal['mine'] = 'mine'\n"
        "class Mine(Pipeline[MineConfig]):\n"
        "    type_name = 'mine'\n"
        "    config_model = MineConfig\n"
        "    def process(self, batch):\n"
        "        return []\n"
    )
    registry = PluginRegistry()
    registry.load_path(tmp_path)
    assert "mine" in registry


def test_plugin_folder_import_error_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("import does_not_exist_anywhere\n")
    with pytest.raises(PluginError, match=r"broken\.py failed to import"):
        PluginRegistry().load_path(tmp_path)


def test_sensor_site_does_not_import_the_video_stack() -> None:
    """Plugins load when a config asks for their type: a sensor-only site stays lean."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from edge_runtime.config import parse_config\n"
        'parse_config(\'site_id = "s"\\n[[pipelines]]\\ntype = "windows"\\nname = "p"\\n'
        'topics = ["a/+"]\\n\')\n'
        "print(sorted(m for m in ('cv2', 'onnxruntime') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
