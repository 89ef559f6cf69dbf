"""The site runtime."""

from edge_runtime.runtime.site import MessageSource, SiteRuntime
from edge_runtime.runtime.slots import PipelineSlot

__all__ = ["MessageSource", "PipelineSlot", "SiteRuntime"]
