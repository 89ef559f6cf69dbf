"""Per-camera analytics over detections: counts, zone occupancy, line crossings and alerts.

:class:`CameraAnalytics` is fed one frame at a time (``process(ts, detections, frame_size)``)
with the frame's own timestamp as its clock, so it runs the same in tests, replays and live.
Per frame it counts detections per class, tests each detection's anchor point against the zones,
tracks objects (:class:`~edge_runtime.camera.tracking.IoUTracker`) to count line crossings
and unique objects, and evaluates alert rules.  Per-frame values are accumulated and, when a
frame falls past the current tumbling window, summarised into a :class:`CameraWindowResult`.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from edge_runtime.camera.boxes import Detections
from edge_runtime.camera.tracking import IoUTracker, Tracks
from edge_runtime.camera.zones_config import (
    AlertRuleConfig,
    CameraAnalyticsConfig,
    Coords,
)
from edge_runtime.errors import ConfigError

__all__ = [
    "AlertResult",
    "CameraAnalytics",
    "CameraWindowResult",
    "FrameAnalytics",
    "LineCrossing",
    "anchor_points",
    "line_sides",
    "points_in_polygon",
]

log = logging.getLogger(__name__)

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}


def anchor_points(boxes: NDArray[np.floating], anchor: str = "bottom_center") -> F64:
    """(n, 2) anchor points of xyxy boxes: bottom centre (feet) or centre."""
    b = boxes.astype(np.float64, copy=False)
    x = (b[:, 0] + b[:, 2]) / 2
    y = b[:, 3] if anchor == "bottom_center" else (b[:, 1] + b[:, 3]) / 2
    return np.stack([x, y], axis=1)


def points_in_polygon(points: F64, polygon: F64) -> NDArray[np.bool_]:
    """Even-odd ray casting for all points against one polygon at once: (n, 2), (m, 2) -> (n,)."""
    x, y = points[:, 0:1], points[:, 1:2]
    x1, y1 = polygon[:, 0], polygon[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    spans = (y1 > y) != (y2 > y)  # edge straddles the horizontal ray through the point
    dy = np.where(y2 == y1, 1.0, y2 - y1)
    x_cross = x1 + (y - y1) * (x2 - x1) / dy
    hits = spans & (x < x_cross)
    return np.asarray(hits.sum(axis=1) % 2 == 1)


def line_sides(points: F64, start: F64, end: F64) -> NDArray[np.int64]:
    """Side of each point relative to the directed line start -> end: -1 = A (left in the
    image, y down), +1 = B (right), 0 = on the line."""
    d = end - start
    cross = d[0] * (points[:, 1] - start[1]) - d[1] * (points[:, 0] - start[0])
    return np.asarray(np.sign(cross), dtype=np.int64)


@dataclass(frozen=True, slots=True)
class CameraWindowResult:
    """Statistics of one camera over one window; ``stats`` keys are dotted names such as
    ``count.person.mean``, ``zone.door.person.max``, ``line.gate.person.in``,
    ``tracks.person.unique``."""

    camera: str
    window_start: float
    window_end: float
    frames: int
    stats: dict[str, float | int]


@dataclass(frozen=True, slots=True)
class AlertResult:
    camera: str
    rule: str
    ts: float
    metric: str
    class_name: str
    zone: str | None
    value: float
    op: str
    threshold: float
    message: str


@dataclass(frozen=True, slots=True)
class LineCrossing:
    camera: str
    line: str
    ts: float
    track_id: int
    class_name: str
    direction: Literal["in", "out"]


@dataclass(frozen=True, slots=True)
class FrameAnalytics:
    """What one frame produced: its counts, and any crossings, alerts and closed windows."""

    ts: float
    counts: dict[str, int]
    zone_counts: dict[str, dict[str, int]]
    tracks: Tracks
    crossings: list[LineCrossing] = field(default_factory=list)
    alerts: list[AlertResult] = field(default_factory=list)
    windows: list[CameraWindowResult] = field(default_factory=list)


@dataclass(slots=True)
class _AlertState:
    since: float | None = None
    active: bool = False
    last_fired: float | None = None


@dataclass(slots=True)
class _Window:
    start: float
    end: float
    rows: list[I64] = field(default_factory=list)  # per frame: class counts, then zone counts
    track_pairs: list[I64] = field(default_factory=list)  # (k, 2) class index, track id
    crossings: dict[str, int] = field(default_factory=dict)


def _to_pixels(
    points: Sequence[tuple[float, float]], coords: Coords, frame_size: tuple[int, int]
) -> F64:
    arr = np.asarray(points, np.float64)
    return arr * np.asarray(frame_size, np.float64) if coords == "normalized" else arr


class CameraAnalytics:
    """Analytics state of one camera; feed frames in timestamp order."""

    def __init__(self, camera: str, config: CameraAnalyticsConfig, class_names: Sequence[str]):
        self.camera = camera
        self.config = config
        self._names = tuple(class_names)
        index = {name: i for i, name in enumerate(self._names)}
        missing = [c for c in config.classes if c not in index]
        if missing:
            raise ConfigError(
                f"camera {camera!r}: classes {missing} are not produced by the model "
                f"(it knows {len(self._names)} classes such as {list(self._names[:6])})",
                field="analytics.classes",
            )
        self._class_ids = np.asarray([index[c] for c in config.classes], np.int64)
        self._slot = {c: i for i, c in enumerate(config.classes)}  # name -> analytics column
        self._model_to_slot = np.full(len(self._names), -1, np.int64)
        self._model_to_slot[self._class_ids] = np.arange(len(config.classes))
        self.tracker = IoUTracker(config.tracker)
        self._line_state: dict[str, dict[int, tuple[int, F64]]] = {
            ln.name: {} for ln in config.lines
        }
        self._alerts = {rule.name: _AlertState() for rule in config.alerts}
        self._geometry: tuple[tuple[int, int], list[F64], list[tuple[F64, F64]]] | None = None
        self._window: _Window | None = None
        self.late_frames = 0

    def _shapes(self, frame_size: tuple[int, int]) -> tuple[list[F64], list[tuple[F64, F64]]]:
        if self._geometry is None or self._geometry[0] != frame_size:
            zones = [_to_pixels(z.polygon, z.coords, frame_size) for z in self.config.zones]
            lines = []
            for ln in self.config.lines:
                pts = _to_pixels((ln.start, ln.end), ln.coords, frame_size)
                lines.append((pts[0], pts[1]))
            self._geometry = (frame_size, zones, lines)
        return self._geometry[1], self._geometry[2]

    def _counts(self, class_ids: I64) -> I64:
        return np.bincount(class_ids, minlength=len(self._names))[self._class_ids]

    def process(
        self, ts: float, detections: Detections, frame_size: tuple[int, int]
    ) -> FrameAnalytics:
        """Account one frame (``frame_size`` is (width, height)) taken at ``ts`` seconds."""
        cfg = self.config
        closed: list[CameraWindowResult] = []
        if self._window is not None and ts >= self._window.end:
            closed.append(self._close(self._window))
            self._window = None
        if self._window is not None and ts < self._window.start:
            self.late_frames += 1
            log.debug(
                "camera %s: frame at %.3f is before the window start %.3f, dropped",
                self.camera,
                ts,
                self._window.start,
            )
            return FrameAnalytics(ts, {}, {}, Tracks.empty(), windows=closed)
        if self._window is None:
            start = (ts // cfg.window_s) * cfg.window_s
            self._window = _Window(start, start + cfg.window_s)
        window = self._window

        zones, lines = self._shapes(frame_size)
        counts = self._counts(detections.class_ids)
        anchors = anchor_points(detections.boxes, cfg.anchor)
        zone_rows = [
            self._counts(detections.class_ids[points_in_polygon(anchors, poly)]) for poly in zones
        ]
        window.rows.append(np.concatenate([counts, *zone_rows]))

        tracks = self.tracker.update(detections)
        slots = self._model_to_slot[tracks.class_ids]
        counted = slots >= 0
        window.track_pairs.append(np.stack([slots[counted], tracks.ids[counted]], axis=1))
        crossings = self._crossings(ts, tracks, lines, window)

        count_map = {c: int(n) for c, n in zip(cfg.classes, counts.tolist(), strict=True)}
        zone_map = {
            z.name: {c: int(row[self._slot[c]]) for c in (z.classes or cfg.classes)}
            for z, row in zip(cfg.zones, zone_rows, strict=True)
        }
        alerts = [
            a
            for rule in cfg.alerts
            if (a := self._evaluate(rule, ts, count_map, zone_map)) is not None
        ]
        return FrameAnalytics(ts, count_map, zone_map, tracks, crossings, alerts, closed)

    def _crossings(
        self, ts: float, tracks: Tracks, lines: list[tuple[F64, F64]], window: _Window
    ) -> list[LineCrossing]:
        if not self.config.lines:
            return []
        points = anchor_points(tracks.boxes, self.config.anchor)
        alive = set(self.tracker.live_ids.tolist())
        found: list[LineCrossing] = []
        for line, (a, b) in zip(self.config.lines, lines, strict=True):
            state = self._line_state[line.name]
            for gone in [tid for tid in state if tid not in alive]:
                del state[gone]
            sides = line_sides(points, a, b)
            wanted = set(line.classes or self.config.classes)
            for i, (tid, side) in enumerate(zip(tracks.ids.tolist(), sides.tolist(), strict=True)):
                if side == 0:
                    continue  # on the line: keep the last side it was seen on
                p1 = points[i]
                prev = state.get(tid)
                state[tid] = (side, p1)
                if prev is None or prev[0] == side:
                    continue
                p0 = prev[1]
                # the movement must cross the segment itself, not only its extension
                ends = line_sides(np.stack([a, b]), p0, p1)
                if ends[0] * ends[1] > 0:
                    continue
                name = self._names[int(tracks.class_ids[i])]
                if name not in wanted:
                    continue
                direction: Literal["in", "out"] = "in" if side > 0 else "out"
                key = f"line.{line.name}.{name}.{direction}"
                window.crossings[key] = window.crossings.get(key, 0) + 1
                found.append(LineCrossing(self.camera, line.name, ts, tid, name, direction))
        return found

    def _evaluate(
        self,
        rule: AlertRuleConfig,
        ts: float,
        counts: dict[str, int],
        zones: dict[str, dict[str, int]],
    ) -> AlertResult | None:
        if rule.metric == "zone_occupancy":
            value = float(zones[str(rule.zone)].get(rule.class_name, 0))
        else:
            value = float(counts[rule.class_name])
        state = self._alerts[rule.name]
        if not _OPS[rule.op](value, rule.threshold):
            state.since = None
            state.active = False
            return None
        if state.since is None:
            state.since = ts
        if state.active or ts - state.since < rule.min_duration_s:
            return None
        if state.last_fired is not None and ts - state.last_fired < rule.cooldown_s:
            return None
        state.active = True
        state.last_fired = ts
        where = f"in zone {rule.zone!r}" if rule.metric == "zone_occupancy" else "in frame"
        return AlertResult(
            camera=self.camera,
            rule=rule.name,
            ts=ts,
            metric=rule.metric,
            class_name=rule.class_name,
            zone=rule.zone,
            value=value,
            op=rule.op,
            threshold=rule.threshold,
            message=f"{rule.class_name} count {value:g} {where} {rule.op} {rule.threshold:g}",
        )

    def _close(self, window: _Window) -> CameraWindowResult:
        cfg = self.config
        rows = np.stack(window.rows)
        k = len(cfg.classes)
        stats: dict[str, float | int] = {"frames": int(rows.shape[0])}
        means, maxes, mins = rows.mean(axis=0), rows.max(axis=0), rows.min(axis=0)
        for j, name in enumerate(cfg.classes):
            stats[f"count.{name}.mean"] = round(float(means[j]), 4)
            stats[f"count.{name}.max"] = int(maxes[j])
            stats[f"count.{name}.min"] = int(mins[j])
        for z_i, zone in enumerate(cfg.zones):
            for name in zone.classes or cfg.classes:
                col = k * (z_i + 1) + self._slot[name]
                stats[f"zone.{zone.name}.{name}.mean"] = round(float(means[col]), 4)
                stats[f"zone.{zone.name}.{name}.max"] = int(maxes[col])
        pairs = np.unique(np.concatenate(window.track_pairs), axis=0)
        unique = np.bincount(pairs[:, 0], minlength=k) if pairs.size else np.zeros(k, np.int64)
        for j, name in enumerate(cfg.classes):
            stats[f"tracks.{name}.unique"] = int(unique[j])
        for line in cfg.lines:
            for name in line.classes or cfg.classes:
                for direction in ("in", "out"):
                    key = f"line.{line.name}.{name}.{direction}"
                    stats[key] = window.crossings.get(key, 0)
        if self.late_frames:
            stats["late_frames"] = self.late_frames
            self.late_frames = 0
        return CameraWindowResult(self.camera, window.start, window.end, len(window.rows), stats)

    def flush(self) -> list[CameraWindowResult]:
        """Close the current window now (e.g. at shutdown or end of a replay)."""
        if self._window is None or not self._window.rows:
            return []
        result = self._close(self._window)
        self._window = None
        return [result]
