"""The site runtime."""

from edge_runtime.runtime.site import MessageSource, PipelineSlot, SiteRuntime

__all__ = ["MessageSource", "PipelineSlot", "SiteRuntime"]
