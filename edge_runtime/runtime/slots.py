"""A configured pipeline in the runtime, and the one guarded path every call of its plugin takes.

A plugin is someone else's code running inside the site. Whatever it raises (in ``process``,
``process_messages``, ``on_tick``, ``flush``, a stream stage's ``offer``, ``run`` or ``close``,
or its ``gauges``) is logged with the pipeline's name, counted as
``edge_pipeline_errors_total{pipeline, call}``, and the batch or tick is set aside; the site goes
on. A pipeline that fails ``error_limit`` calls in a row is *isolated*: its calls are skipped
and its messages set aside (counted), and ``/status`` and ``/readyz`` report it, until the site
restarts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from edge_runtime.decode.decoders import ReadingDecoder
from edge_runtime.ops.stats import RuntimeStats
from edge_runtime.pipelines.api import Pipeline, SubmitFn
from edge_runtime.sources.topics import TopicMatcher
from edge_runtime.types import RawMessage

__all__ = ["PipelineSlot"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class PipelineSlot:
    """One configured pipeline with its decoder and topic matcher; see the module docstring."""

    def __init__(
        self,
        pipeline: Pipeline[Any],
        decoder: ReadingDecoder,
        *,
        stats: RuntimeStats,
        error_limit: int,
    ) -> None:
        self.pipeline = pipeline
        self.decoder = decoder
        self.matcher = TopicMatcher(pipeline.config.topics)
        self.name = pipeline.name
        self.stats = stats
        self.error_limit = error_limit
        self.failures = 0  # failed calls in a row
        self.isolated: str | None = None  # why, once isolated
        self.processed = 0  # messages its plugin took without raising (a reload's health)

    async def call(
        self, call: str, fn: Callable[[], T], *, blocking: bool = False, always: bool = False
    ) -> T | None:
        """Run one call of the plugin (in a worker thread when ``blocking``); its result, or
        None when it raised (logged, counted) or the pipeline is isolated (skipped, unless
        ``always``: a stream stage is closed even then, so that it can end)."""
        if self.isolated is not None and not always:
            return None
        try:
            result = await asyncio.to_thread(fn) if blocking else fn()
        except Exception as exc:  # noqa: BLE001 - a plugin's bug must not stop the site
            self.failed(call, exc)
            return None
        self.failures = 0
        return result

    async def run_stream(self, submit: SubmitFn) -> None:
        """A stream plugin's own stage; one that stops with an error is isolated (nothing
        takes its messages any more)."""
        try:
            await self.pipeline.run(submit)
        except Exception as exc:  # noqa: BLE001 - a plugin's bug must not stop the site
            self.failed("run", exc)
            if self.isolated is None:
                self.isolate(f"its stage stopped: {exc!r}")

    def offer_all(self, messages: Sequence[RawMessage]) -> int:
        offer = self.pipeline.offer
        for message in messages:
            offer(message)
        return len(messages)

    def gauges(self) -> dict[str, float]:
        """The plugin's gauges (at scrape time); an error is counted, not held against it."""
        try:
            return self.pipeline.gauges()
        except Exception as exc:  # noqa: BLE001 - a plugin's bug must not break /metrics
            self.stats.pipeline_errors[(self.name, "gauges")] += 1
            log.error("pipeline %s failed in gauges: %r", self.name, exc)
            return {}

    def failed(self, call: str, exc: BaseException) -> None:
        self.stats.pipeline_errors[(self.name, call)] += 1
        self.failures += 1
        log.error(
            "pipeline %s failed in %s (%d in a row; the batch or tick is set aside): %r",
            self.name,
            call,
            self.failures,
            exc,
            exc_info=exc,
        )
        if self.isolated is None and self.failures >= self.error_limit:
            self.isolate(f"{self.failures} failed calls in a row, the last in {call}: {exc!r}")

    def isolate(self, why: str) -> None:
        self.isolated = why
        self.stats.pipelines_isolated[self.name] = why
        log.error(
            "pipeline %s isolated: %s; its calls are skipped and its messages set aside until "
            "the site restarts (ops.pipeline_error_limit)",
            self.name,
            why,
        )
