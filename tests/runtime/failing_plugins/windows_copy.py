"""The built-in ``windows`` plugin under another type name, loaded from a ``plugin_paths``
folder: a reload that switches a pipeline between the two types cannot hand its open windows
over (the types differ), so the old instance is flushed and the new one starts empty."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from edge_runtime.pipelines import PipelineConfig
from edge_runtime_pipelines.windows import WindowConfig, WindowPipeline

__all__ = ["WindowCopyConfig", "WindowCopyPipeline"]


class WindowCopyConfig(WindowConfig):
    """A ``[[pipelines]]`` table with ``type = "windows-copy"``."""

    type: Literal["windows-copy"] = Field(  # type: ignore[assignment]
        default="windows-copy", description="Selects this plugin: the windows plugin again."
    )


class WindowCopyPipeline(WindowPipeline):
    """The windows plugin, registered as ``windows-copy``."""

    type_name: ClassVar[str] = "windows-copy"
    config_model: ClassVar[type[PipelineConfig]] = WindowCopyConfig
