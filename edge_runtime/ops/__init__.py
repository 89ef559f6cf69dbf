"""Operations: metrics, the health/metrics HTTP endpoint, structured logs."""

from edge_runtime.ops.http import OpsServer
from edge_runtime.ops.image import image_info
from edge_runtime.ops.logs import JsonFormatter, setup_logging
from edge_runtime.ops.stats import RuntimeStats, StatsCollector

__all__ = [
    "JsonFormatter",
    "OpsServer",
    "RuntimeStats",
    "StatsCollector",
    "image_info",
    "setup_logging",
]
