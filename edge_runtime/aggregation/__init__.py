"""Aggregation: event-time windows over keyed readings and the statistics they summarise."""

from edge_runtime.aggregation.spec import LatePolicy, WindowKind, WindowSpec
from edge_runtime.aggregation.stats import (
    ALL_STATS,
    PERCENTILES,
    StatName,
    compute_stats,
    grouped_stats,
    merge_stats,
)
from edge_runtime.aggregation.windows import CountFn, WindowStore

__all__ = [
    "ALL_STATS",
    "PERCENTILES",
    "CountFn",
    "LatePolicy",
    "StatName",
    "WindowKind",
    "WindowSpec",
    "WindowStore",
    "compute_stats",
    "grouped_stats",
    "merge_stats",
]
