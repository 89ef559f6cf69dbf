"""A test plugin that raises where its config says: loaded from a ``plugin_paths`` folder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import Field

from edge_runtime.pipelines import Pipeline, PipelineConfig, ReadingBatch, Summary

__all__ = ["FailingConfig", "FailingPipeline"]

Call = Literal["process", "on_tick", "flush"]


class FailingConfig(PipelineConfig):
    """A ``[[pipelines]]`` table with ``type = "failing"``."""

    type: Literal["failing"] = Field(default="failing", description="Selects this plugin.")
    fail_in: list[Call] = Field(
        default_factory=list, description="The calls that raise RuntimeError."
    )


class FailingPipeline(Pipeline[FailingConfig]):
    """Counts its readings into one summary per batch, unless told to fail."""

    type_name: ClassVar[str] = "failing"
    config_model: ClassVar[type[PipelineConfig]] = FailingConfig

    def _maybe_fail(self, call: Call) -> None:
        if call in self.config.fail_in:
            raise RuntimeError(f"{self.name} was told to fail in {call}")

    def process(self, batch: ReadingBatch) -> Sequence[Summary]:
        self._maybe_fail("process")
        now = self.context.clock.time()
        return [Summary(self.name, "all", now, now, {"count": len(batch)})]

    def on_tick(self, now: float) -> Sequence[Summary]:
        self._maybe_fail("on_tick")
        return ()

    def flush(self) -> Sequence[Summary]:
        self._maybe_fail("flush")
        return ()
