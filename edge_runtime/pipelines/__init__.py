"""Pipeline plugin API: what plugin authors import."""

from edge_runtime.pipelines.api import (
    InputKind,
    Pipeline,
    PipelineConfig,
    PipelineContext,
    RestoreInfo,
)
from edge_runtime.pipelines.registry import (
    ENTRY_POINT_GROUP,
    PluginRegistry,
    default_registry,
    format_validation_error,
)
from edge_runtime.types import KeyTable, RawMessage, ReadingBatch, Stat, Summary

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
    "RestoreInfo",
    "Stat",
    "Summary",
    "default_registry",
    "format_validation_error",
]
