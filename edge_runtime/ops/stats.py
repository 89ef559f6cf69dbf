"""Runtime counters kept as plain Python numbers on the hot path, exported at scrape time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = ["BATCH_BUCKETS", "RuntimeStats", "StatsCollector"]

BATCH_BUCKETS = np.array([1, 4, 16, 64, 256, 1024, 4096, 16384], dtype=np.int64)


@dataclass
class RuntimeStats:
    """Everything the runtime counts. Incremented per batch, never per reading."""

    messages_in: int = 0
    bytes_in: int = 0
    ingest_dropped: Counter[str] = field(default_factory=Counter)
    readings_in: Counter[str] = field(default_factory=Counter)
    decode_errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    summaries_out: Counter[str] = field(default_factory=Counter)
    summaries_refused: Counter[tuple[str, str]] = field(default_factory=Counter)
    pipeline_errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    pipelines_isolated: dict[str, str] = field(default_factory=dict)
    batch_count: int = 0
    batch_items: int = 0
    batch_hist: npt.NDArray[np.int64] = field(
        default_factory=lambda: np.zeros(len(BATCH_BUCKETS) + 1, dtype=np.int64)
    )
    pipeline_events: dict[str, Counter[str]] = field(default_factory=dict)
    pipeline_gauges: dict[str, Callable[[], dict[str, float]]] = field(default_factory=dict)
    gauges: dict[str, Callable[[], float]] = field(default_factory=dict)
    uplink: Callable[[], dict[str, Any]] | None = None
    started_at: float = 0.0

    def observe_batch(self, size: int) -> None:
        self.batch_count += 1
        self.batch_items += size
        self.batch_hist[int(np.searchsorted(BATCH_BUCKETS, size))] += 1

    def snapshot(self) -> dict[str, Any]:
        """Plain-data view for /status and ``edge-runtime status``."""
        return {
            "messages_in": self.messages_in,
            "bytes_in": self.bytes_in,
            "ingest_dropped": dict(self.ingest_dropped),
            "readings_in": dict(self.readings_in),
            "decode_errors": {f"{p}:{r}": n for (p, r), n in self.decode_errors.items()},
            "summaries_out": dict(self.summaries_out),
            "summaries_refused": {f"{p}:{r}": n for (p, r), n in self.summaries_refused.items()},
            "pipeline_errors": {f"{p}:{c}": n for (p, c), n in self.pipeline_errors.items()},
            "pipelines_isolated": dict(self.pipelines_isolated),
            "batches": self.batch_count,
            "mean_batch_size": self.batch_items / self.batch_count if self.batch_count else 0.0,
            "pipelines": {
                name: {**events, **self.pipeline_gauges[name]()}
                for name, events in self.pipeline_events.items()
            },
            "gauges": {name: fn() for name, fn in self.gauges.items()},
            "uplink": self.uplink() if self.uplink is not None else {},
        }


class StatsCollector(Collector):
    """Turns a :class:`RuntimeStats` into Prometheus metric families when scraped."""

    def __init__(self, stats: RuntimeStats, site_id: str) -> None:
        self.stats = stats
        self.site_id = site_id

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        c = CounterMetricFamily("edge_messages_in", "Messages received from the site broker.")
        c.add_metric([], s.messages_in)
        yield c
        c = CounterMetricFamily("edge_bytes_in", "Payload bytes received from the site broker.")
        c.add_metric([], s.bytes_in)
        yield c
        c = CounterMetricFamily(
            "edge_ingest_dropped", "Messages set aside before decoding.", labels=["reason"]
        )
        for reason, n in s.ingest_dropped.items():
            c.add_metric([reason], n)
        yield c
        c = CounterMetricFamily("edge_readings_in", "Readings decoded.", labels=["pipeline"])
        for pipeline, n in s.readings_in.items():
            c.add_metric([pipeline], n)
        yield c
        c = CounterMetricFamily(
            "edge_decode_errors", "Payloads rejected by a decoder.", labels=["pipeline", "reason"]
        )
        for (pipeline, reason), n in s.decode_errors.items():
            c.add_metric([pipeline, reason], n)
        yield c
        c = CounterMetricFamily(
            "edge_summaries", "Summaries emitted by pipelines.", labels=["pipeline"]
        )
        for pipeline, n in s.summaries_out.items():
            c.add_metric([pipeline], n)
        yield c
        yield from self._refusals_and_errors()
        c = CounterMetricFamily(
            "edge_pipeline_events",
            "Plugin-level events (windows_emitted, late_dropped, missing ...).",
            labels=["pipeline", "event"],
        )
        for pipeline, events in s.pipeline_events.items():
            for event, n in events.items():
                c.add_metric([pipeline, event], n)
        yield c
        g = GaugeMetricFamily(
            "edge_pipeline_gauge", "Plugin-level gauges.", labels=["pipeline", "name"]
        )
        for pipeline, fn in s.pipeline_gauges.items():
            for name, value in fn().items():
                g.add_metric([pipeline, name], value)
        yield g
        buckets = []
        acc = 0
        for bound, n in zip(BATCH_BUCKETS.tolist(), s.batch_hist[:-1].tolist(), strict=True):
            acc += n
            buckets.append((str(float(bound)), acc))
        buckets.append(("+Inf", acc + int(s.batch_hist[-1])))
        h = HistogramMetricFamily("edge_batch_size", "Messages per micro-batch.")
        h.add_metric([], buckets, sum_value=s.batch_items)
        yield h
        for name, gauge in s.gauges.items():
            g = GaugeMetricFamily(f"edge_{name}", name.replace("_", " ").capitalize() + ".")
            g.add_metric([], gauge())
            yield g
        if s.uplink is not None:
            up = s.uplink()
            g = GaugeMetricFamily("edge_uplink", "Uplink figures.", labels=["name"])
            for name, value in up.items():
                if isinstance(value, (int, float)):
                    g.add_metric([name], float(value))
            yield g

    def _refusals_and_errors(self) -> Iterator[Metric]:
        s = self.stats
        c = CounterMetricFamily(
            "edge_summaries_refused",
            "Summaries the uplink refused, by reason (disk_full, spool_full, spool_error).",
            labels=["pipeline", "reason"],
        )
        for (pipeline, reason), n in s.summaries_refused.items():
            c.add_metric([pipeline, reason], n)
        yield c
        c = CounterMetricFamily(
            "edge_pipeline_errors",
            "Calls of a pipeline plugin that raised (process, on_tick, flush ...); the batch or "
            "tick was set aside.",
            labels=["pipeline", "call"],
        )
        for (pipeline, call), n in s.pipeline_errors.items():
            c.add_metric([pipeline, call], n)
        yield c
        g = GaugeMetricFamily(
            "edge_pipeline_isolated",
            "1 for a pipeline isolated after failing ops.pipeline_error_limit calls in a row.",
            labels=["pipeline"],
        )
        for pipeline in s.pipeline_events:
            g.add_metric([pipeline], float(pipeline in s.pipelines_isolated))
        yield g
