"""edge-runtime: an edge stream-processing runtime for smart-city micro data centers."""

from importlib.metadata import PackageNotFoundError, version

from edge_runtime.clock import Clock, ManualClock, SystemClock
from edge_runtime.errors import (
    ConfigError,
    DecodeError,
    EdgeRuntimeError,
    PluginError,
    TransportError,
    UplinkError,
    UplinkRefusedError,
)
from edge_runtime.pipelines import (
    KeyTable,
    Pipeline,
    PipelineConfig,
    PipelineContext,
    RawMessage,
    ReadingBatch,
    Summary,
)

try:
    __version__ = version("edge-runtime")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "Clock",
    "ConfigError",
    "DecodeError",
    "EdgeRuntimeError",
    "KeyTable",
    "ManualClock",
    "Pipeline",
    "PipelineConfig",
    "PipelineContext",
    "PluginError",
    "RawMessage",
    "ReadingBatch",
    "Summary",
    "SystemClock",
    "TransportError",
    "UplinkError",
    "UplinkRefusedError",
    "__version__",
]
