"""Command-line interface."""

from edge_runtime.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
