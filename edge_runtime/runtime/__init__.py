"""The site runtime."""

from edge_runtime.runtime.site import PipelineSlot, SiteRuntime, run_site

__all__ = ["PipelineSlot", "SiteRuntime", "run_site"]
