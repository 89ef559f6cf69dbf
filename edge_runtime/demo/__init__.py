"""The one-command demo: a whole site on this machine, an outage, and a report."""

from edge_runtime.demo.run import DemoOptions, DemoReport, run_demo

__all__ = ["DemoOptions", "DemoReport", "run_demo"]
