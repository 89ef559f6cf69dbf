"""Types of the compiled row loop (edge_runtime/spool/_rows.c)."""

from collections.abc import Callable, Sequence
from typing import Any

def encode(
    items: Sequence[Any],
    wrap_fields: tuple[str, str, str, float, bool] | None,
    fixed: int,
    seq: int,
    flat: list[object],
    counts: list[int],
    consts: tuple[bytes, bytes, bytes, bytes, bytes, bytes],
    prefixes: dict[tuple[Any, ...], bytes],
    prefix_fn: Callable[[tuple[Any, ...]], bytes],
    streams: dict[str, dict[str, tuple[bytes, str]]],
    stream_fn: Callable[[str, str], tuple[bytes, str]],
    eid_fn: Callable[[str, Any], str],
    slow: Callable[[Any, int], int],
) -> tuple[int, int]: ...
