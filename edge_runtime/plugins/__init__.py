"""Pipeline plugin API: what plugin authors import."""

from edge_runtime.plugins._types import KeyTable, RawMessage, ReadingBatch, Stat, Summary
from edge_runtime.plugins.api import InputKind, Pipeline, PipelineConfig, PipelineContext
from edge_runtime.plugins.registry import (
    ENTRY_POINT_GROUP,
    PluginRegistry,
    default_registry,
    format_validation_error,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "InputKind",
    "KeyTable",
    "Pipeline",
    "PipelineConfig",
    "PipelineContext",
    "PluginRegistry",
    "RawMessage",
    "ReadingBatch",
    "Stat",
    "Summary",
    "default_registry",
    "format_validation_error",
]
