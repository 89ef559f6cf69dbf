"""The ``record``, ``replay``, ``import`` and ``recording`` subcommands, one module each.

:func:`add_commands` adds them to the ``edge-runtime`` parser; each sets ``func`` to a
function of the parsed arguments that returns the exit status (errors are raised as
:class:`~edge_runtime.errors.EdgeRuntimeError`, which the main command prints).
"""

from edge_runtime.replay.cli.common import (
    Subparsers,
    parse_size,
    parse_speed,
    parse_time_shift,
)
from edge_runtime.replay.cli.imports import add_import
from edge_runtime.replay.cli.record import add_record
from edge_runtime.replay.cli.recording import add_recording
from edge_runtime.replay.cli.replay import add_replay

__all__ = ["add_commands", "parse_size", "parse_speed", "parse_time_shift"]


def add_commands(sub: Subparsers) -> None:
    """Add ``record``, ``replay``, ``import {akl,video}`` and ``recording info``."""
    add_record(sub)
    add_replay(sub)
    add_import(sub)
    add_recording(sub)
