"""The built-in ``windows`` pipeline: per-key statistics over event-time windows.

Site config::

    [[pipelines]]
    type = "windows"
    name = "air-quality-1min"
    topics = ["city/+/air/#"]
    decode = { format = "senml", key = "senml" }
    window = { kind = "tumbling", size_s = 60, allowed_lateness_s = 10, late_policy = "correct" }

Each closed (key, window) becomes one :class:`~edge_runtime.Summary` with the configured
statistics; see :mod:`edge_runtime.aggregation` for how windows close and what late data does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import Field

from edge_runtime.aggregation import WindowSpec, WindowStore
from edge_runtime.pipelines import (
    Pipeline,
    PipelineConfig,
    PipelineContext,
    ReadingBatch,
    RestoreInfo,
    Summary,
)

__all__ = ["WindowConfig", "WindowPipeline"]


class WindowConfig(PipelineConfig):
    """A ``[[pipelines]]`` table with ``type = "windows"``."""

    type: Literal["windows"] = Field(
        default="windows", description="Selects this plugin: windowed statistics per key."
    )
    window: WindowSpec = Field(
        default_factory=WindowSpec,
        description="The windows: kind, size, hop, lateness, late-data policy, statistics.",
    )


class WindowPipeline(Pipeline[WindowConfig]):
    """Emits one summary per key and closed window, and corrections for late data."""

    type_name: ClassVar[str] = "windows"
    config_model: ClassVar[type[PipelineConfig]] = WindowConfig

    def __init__(self, config: WindowConfig, context: PipelineContext) -> None:
        super().__init__(config, context)
        self.store = WindowStore(config.window, pipeline=config.name, count=context.count)

    def process(self, batch: ReadingBatch) -> Sequence[Summary]:
        return self.store.add(batch, self.context.clock.time())

    def on_tick(self, now: float) -> Sequence[Summary]:
        return self.store.tick(now)

    def flush(self) -> Sequence[Summary]:
        return self.store.flush()

    def snapshot(self) -> bytes | None:
        return self.store.snapshot()

    def restore(self, data: bytes, info: RestoreInfo) -> Sequence[str]:
        table = self.context.key_table
        dropped = self.store.restore(data, table, table.names, self.context.clock.time())
        if info.maybe_lost_before is not None:
            self.store.mark_incomplete_before(info.maybe_lost_before)
            if info.reemit_revision:
                self.store.raise_revisions(info.reemit_revision, info.maybe_lost_before)
        return dropped

    def start_fresh(self, info: RestoreInfo) -> None:
        self.store.number_parts(info.part)
        if info.maybe_lost_before is not None:
            self.store.mark_incomplete_before(info.maybe_lost_before)
            if info.reemit_revision:
                self.store.raise_revisions(info.reemit_revision, info.maybe_lost_before)

    def gauges(self) -> dict[str, float]:
        return self.store.gauges(self.context.clock.time())

    def correction_horizon_s(self) -> float | None:
        window = self.config.window
        if window.late_policy != "correct":
            return None
        return window.allowed_lateness_s + window.correction_horizon_s
