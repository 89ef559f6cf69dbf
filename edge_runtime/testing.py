"""A no-broker harness to run a pipeline plugin over a list of messages in a unit test.

It uses the same decoder and the same plugin calls as the runtime; only the transport is
replaced by a list, and the clock by a :class:`~edge_runtime.clock.ManualClock`::

    result = run_pipeline(MyPipeline, {"name": "p", "topics": ["s/#"]}, messages)
    assert result.summaries[0].stats["count"] == 3
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_runtime.clock import ManualClock
from edge_runtime.decode.decoders import ReadingDecoder
from edge_runtime.pipelines.api import Pipeline, PipelineConfig, PipelineContext
from edge_runtime.pipelines.registry import PluginRegistry
from edge_runtime.sources.topics import TopicMatcher
from edge_runtime.types import RawMessage, Summary

__all__ = ["HarnessResult", "PipelineHarness", "run_pipeline"]


@dataclass
class HarnessResult:
    summaries: list[Summary] = field(default_factory=list)
    decode_errors: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    unmatched: int = 0


class PipelineHarness:
    """Drive one plugin instance by hand: ``feed`` messages, ``tick`` the clock, ``flush``."""

    def __init__(
        self,
        plugin: type[Pipeline[Any]],
        config: Mapping[str, Any] | PipelineConfig,
        *,
        clock: ManualClock | None = None,
        site_id: str = "test-site",
    ) -> None:
        registry = PluginRegistry()
        registry.register(plugin, origin="harness")
        if isinstance(config, PipelineConfig):
            cfg = config
        else:
            cfg = registry.validate_config({"type": plugin.type_name, **config}, "pipeline")
        self.clock = clock or ManualClock(0.0)
        self.context = PipelineContext(site_id=site_id, pipeline=cfg.name, clock=self.clock)
        self.pipeline = plugin(cfg, self.context)
        self.decoder = ReadingDecoder(cfg.decode)
        self.matcher = TopicMatcher(cfg.topics)
        self.result = HarnessResult(events=self.context.counters)

    def feed(self, messages: Sequence[RawMessage]) -> list[Summary]:
        matched = [m for m in messages if self.matcher.matches(m.topic)]
        self.result.unmatched += len(messages) - len(matched)
        if self.pipeline.input_kind == "messages":
            out = list(self.pipeline.process_messages(matched))
        else:
            batch = self.decoder.decode(matched, self.result.decode_errors)
            out = list(self.pipeline.process(batch)) if len(batch) else []
        self.result.summaries.extend(out)
        return out

    def tick(self, seconds: float = 0.0) -> list[Summary]:
        self.clock.advance(seconds)
        out = list(self.pipeline.on_tick(self.clock.time()))
        self.result.summaries.extend(out)
        return out

    def flush(self) -> list[Summary]:
        out = list(self.pipeline.flush())
        self.result.summaries.extend(out)
        return out


def run_pipeline(
    plugin: type[Pipeline[Any]],
    config: Mapping[str, Any] | PipelineConfig,
    messages: Iterable[RawMessage],
    *,
    batch_size: int = 256,
    clock: ManualClock | None = None,
    flush: bool = True,
) -> HarnessResult:
    """Run ``plugin`` over ``messages`` in batches of ``batch_size``; flush at the end."""
    harness = PipelineHarness(plugin, config, clock=clock)
    batch: list[RawMessage] = []
    for msg in messages:
        batch.append(msg)
        if len(batch) >= batch_size:
            harness.feed(batch)
            batch = []
    if batch:
        harness.feed(batch)
    if flush:
        harness.flush()
    return harness.result
