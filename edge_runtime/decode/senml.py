"""SenML column helpers: base fields forward-filled per RFC 8428, names resolved to key codes,
numeric columns checked for type, all over whole packs at once."""

from __future__ import annotations

import math
import operator
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_runtime.types import KeyTable

__all__ = [
    "base_values",
    "ffill_num",
    "numeric_column",
    "resolve_relative",
    "senml_codes",
]

NUMERIC = frozenset({int, float})
NUMERIC_OR_NONE = frozenset({int, float, type(None)})
SENML_RELATIVE_LIMIT = 2**28  # times below this are relative to "now" (RFC 8428 section 4.5.3)


def resolve_relative(times: npt.NDArray[np.float64], received_at: float) -> None:
    """SenML times below 2**28 are relative to now (RFC 8428 4.5.3): the receive time."""
    relative = times < SENML_RELATIVE_LIMIT
    if relative.any():
        times[relative] += received_at


def senml_codes(
    records: list[dict[str, Any]], rest: set[str], table: KeyTable
) -> npt.NDArray[np.int32]:
    """Key codes of the resolved names (base name + name).

    When ``bn`` is set on the first record only (the usual pack), names are interned per base
    name without joining strings; a name that is not a string fails the join (TypeError)."""
    rel_names = list(map(dict.get, records, repeat("n"), repeat("")))
    n = len(records)
    if "bn" not in rest:
        base = records[0].get("bn", "")
        if type(base) is not str:
            raise TypeError("bn")
        if not base and "" in rel_names:
            raise ValueError("empty name")
        view = table.prefixed(base)
        return np.fromiter(map(view.__getitem__, rel_names), dtype=np.int32, count=n)
    if not set(map(type, rel_names)) <= {str}:
        raise TypeError("n")
    names = list(
        map(operator.add, _ffill_str(list(map(dict.get, records, repeat("bn")))), rel_names)
    )
    if "" in names:
        raise ValueError("empty name")
    return table.encode(names)


def base_values(
    records: list[dict[str, Any]], label: str, rest: set[str]
) -> float | npt.NDArray[np.float64]:
    """A numeric base field (``bt``, ``bv``): it applies to its record and those after it."""
    if label not in rest:
        first = records[0].get(label, 0.0)
        if type(first) not in NUMERIC:
            raise TypeError(label)
        return float(first)
    return ffill_num(list(map(dict.get, records, repeat(label))))


def _ffill_index(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.intp]:
    idx = np.where(mask, np.arange(mask.shape[0]), 0)
    np.maximum.accumulate(idx, out=idx)
    return idx


def _ffill_str(column: list[Any]) -> list[str]:
    present = np.fromiter(map(operator.is_not, column, repeat(None)), dtype=bool, count=len(column))
    if not present.any():
        return [""] * len(column)
    if not set(map(type, column)) <= {str, type(None)}:
        raise TypeError("bn")
    if present.all():
        return column
    if not present[0]:
        column[0] = ""
        present[0] = True
    return list(map(column.__getitem__, _ffill_index(present).tolist()))


def numeric_column(column: list[Any], default: float) -> npt.NDArray[np.float64]:
    types = set(map(type, column))
    if not types <= NUMERIC_OR_NONE:
        raise TypeError("value")
    arr = np.array(column, dtype=np.float64)  # None becomes NaN
    if default == default and type(None) in types:  # noqa: PLR0124 (NaN check on the default)
        arr[np.isnan(arr)] = default
    return arr


def ffill_num(column: list[Any]) -> npt.NDArray[np.float64]:
    arr = numeric_column(column, math.nan)
    present = ~np.isnan(arr)
    if not present.any():
        return np.zeros(arr.shape[0])
    if not present[0]:
        arr[0] = 0.0
        present[0] = True
    return arr[_ffill_index(present)]
