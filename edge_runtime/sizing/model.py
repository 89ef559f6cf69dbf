"""The sizing arithmetic: a :class:`SiteProfile` and a :class:`Calibration` in, an answer out.

No measurement happens here (see :mod:`edge_runtime.sizing.calibrate`); every figure is a sum
of rate x per-unit cost, so the breakdown says where each core and MiB goes:

* runtime CPU = idle + per sensor group (messages x CPU per message, further pipelines,
  readings beyond the first of a pack, summaries x CPU per summary) + per camera group
  (frames/s x CPU per frame at its resolution and model);
* site broker CPU = sensor messages and camera frames x the broker's CPU per message/frame;
* runtime memory = base + keys x memory per key + readings held in open windows + each model
  variant's camera pipeline + cameras x memory per camera;
* spool disk = the outage's summaries x bytes per summary (every summary kept), and the
  smaller figure with the spool's compaction into coarse windows (``compact_to_s``);
* uplink = live summaries + the outage's backlog sent within ``drain_h``.

The answer adds ``headroom`` to each and rounds cores up to whole cores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edge_runtime.errors import ConfigError
from edge_runtime.sizing.calibration import Calibration, CameraCost
from edge_runtime.sizing.profile import CameraGroup, SensorGroup, SiteProfile

__all__ = ["CameraEstimate", "Line", "SizingAnswer", "camera_cost", "size_site"]

COMPACT_TO_S = 3600.0  # the spool's default compaction.compact_to_s
SUMMARIES_PER_CAMERA_WINDOW = 1.0  # one summary per camera and window (counts, zones, lines)
MIB = 1024 * 1024


@dataclass(frozen=True)
class Line:
    """One row of the breakdown."""

    group: str
    what: str
    cores: float = 0.0
    memory_mb: float = 0.0
    broker_cores: float = 0.0


@dataclass(frozen=True)
class CameraEstimate:
    cpu_s_per_frame: float
    rss_mb_per_camera: float
    how: str  # "measured", "fitted over N resolutions" or "scaled from WxH"


@dataclass(frozen=True)
class SizingAnswer:
    """Predicted needs (``runtime_cores``, ``memory_mb``: without headroom, what a stress test
    of the profile should measure) and what to provision (the ``*_needed`` figures)."""

    profile: SiteProfile
    runtime_cores: float
    broker_cores: float
    memory_mb: float
    spool_bytes_full: float
    spool_bytes_compacted: float
    uplink_live_bps: float
    uplink_drain_bps: float
    summaries_per_s: float
    lines: list[Line] = field(default_factory=list)

    @property
    def factor(self) -> float:
        return 1.0 + self.profile.headroom

    @property
    def cores_needed(self) -> int:
        return max(1, math.ceil((self.runtime_cores + self.broker_cores) * self.factor))

    @property
    def memory_needed_mb(self) -> float:
        return self.memory_mb * self.factor

    @property
    def spool_disk_needed_bytes(self) -> float:
        return self.spool_bytes_full * self.factor

    @property
    def uplink_needed_bps(self) -> float:
        return (self.uplink_live_bps + self.uplink_drain_bps) * self.factor


def camera_cost(cal: Calibration, group: CameraGroup) -> CameraEstimate:
    """CPU per frame and memory per camera for a group's resolution and model variant.

    The measured figure when the calibration has that resolution; else a straight line in the
    number of pixels through the measured resolutions (JPEG decode and resize grow with the
    pixels, inference runs at the model's fixed input size); with a single resolution
    measured, that resolution's figures as they are (``how`` says which).
    """
    tests = [c for c in cal.cameras if c.model == group.model]
    if not tests:
        measured: list[str] = sorted({c.model for c in cal.cameras}) or ["none"]
        raise ConfigError(
            f"camera group {group.name!r} uses the {group.model} model, but the calibration "
            f"measured {', '.join(measured)}: run 'edge-runtime size --calibrate "
            f"--camera-models {group.model}'",
            field=f"cameras.{group.name}.model",
        )
    for t in tests:
        if (t.width, t.height) == (group.width, group.height):
            return CameraEstimate(t.cpu_s_per_frame, t.rss_mb_per_camera, "measured")
    by_pixels: dict[int, CameraCost] = {}
    for t in tests:
        by_pixels.setdefault(t.width * t.height, t)
    if len(by_pixels) == 1:
        (t,) = by_pixels.values()
        return CameraEstimate(
            t.cpu_s_per_frame, t.rss_mb_per_camera, f"taken from {t.width}x{t.height}"
        )
    xs = list(by_pixels)
    cpu = _line([float(x) for x in xs], [by_pixels[x].cpu_s_per_frame for x in xs])
    mem = _line([float(x) for x in xs], [by_pixels[x].rss_mb_per_camera for x in xs])
    px = float(group.pixels)
    return CameraEstimate(
        max(cpu[0] + cpu[1] * px, min(t.cpu_s_per_frame for t in tests) * 0.5),
        max(mem[0] + mem[1] * px, 0.0),
        f"fitted over {len(xs)} resolutions",
    )


def _line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return my - slope * mx, slope


def _sensor_line(cal: Calibration, g: SensorGroup) -> Line:
    msgs = g.msgs_per_s
    cores = (
        msgs * cal.cpu_s_per_msg
        + msgs * (g.pipelines - 1) * cal.cpu_s_per_extra_pipeline_msg
        + msgs * (g.readings_per_msg - 1) * g.pipelines * cal.cpu_s_per_extra_reading
        + g.summaries_per_s * cal.cpu_s_per_summary
    )
    # readings held until their window closes: on average the whole window's worth (a window
    # fills while the previous one's arrays are still referenced until it is emitted)
    held = g.readings_per_s * g.window_s * g.pipelines
    memory = g.keys * g.pipelines * cal.rss_mb_per_key + held * cal.bytes_per_buffered_reading / MIB
    what = (
        f"{g.count:,} sensors x {g.msg_per_s:g} msg/s ({msgs:,.0f} msg/s, "
        f"{g.readings_per_s:,.0f} readings/s, {g.keys:,} keys, {g.summaries_per_s:,.1f} "
        f"summaries/s)"
    )
    return Line(g.name, what, cores, memory, msgs * cal.broker_cpu_s_per_msg)


def _camera_line(cal: Calibration, g: CameraGroup) -> Line:
    est = camera_cost(cal, g)
    what = (
        f"{g.count} cameras {g.width}x{g.height} x {g.fps:g} fps, {g.model} "
        f"({est.cpu_s_per_frame * 1000:.0f} ms CPU/frame, {est.how})"
    )
    return Line(
        g.name,
        what,
        g.frames_per_s * est.cpu_s_per_frame,
        g.count * est.rss_mb_per_camera,
        g.frames_per_s * cal.broker_cpu_s_per_frame,
    )


def size_site(profile: SiteProfile, cal: Calibration) -> SizingAnswer:
    """What ``profile`` needs on the machine ``cal`` was measured on."""
    lines = [Line("runtime", "idle runtime (ticks, sender, ops)", cal.idle_cores, cal.base_rss_mb)]
    lines += [_sensor_line(cal, g) for g in profile.sensors]
    lines += [_camera_line(cal, g) for g in profile.cameras]
    for variant in sorted({g.model for g in profile.cameras}):
        fixed = cal.camera_fixed_rss_mb.get(variant)
        if fixed is None:
            raise ConfigError(
                f"the calibration has no camera pipeline memory for the {variant} model: run "
                f"'edge-runtime size --calibrate --camera-models {variant}'",
                field="cameras.model",
            )
        lines.append(Line("cameras", f"camera pipeline with the {variant} model", 0.0, fixed))
    summaries = sum(g.summaries_per_s for g in profile.sensors) + sum(
        g.count * SUMMARIES_PER_CAMERA_WINDOW / g.window_s for g in profile.cameras
    )
    outage_s = profile.outage_h * 3600.0
    backlog = summaries * outage_s
    # compaction keeps one summary per stream and compact_to_s bucket for the old part
    streams_per_bucket = sum(
        g.keys * g.pipelines * min(1.0, g.summaries_per_s / (g.keys * g.pipelines) * COMPACT_TO_S)
        for g in profile.sensors
    ) + sum(g.count * min(1.0, COMPACT_TO_S / g.window_s) for g in profile.cameras)
    compacted = min(backlog, streams_per_bucket * math.ceil(outage_s / COMPACT_TO_S))
    live_bps = summaries * cal.uplink_bytes_per_summary * 8
    drain_bps = backlog * cal.uplink_bytes_per_summary * 8 / (profile.drain_h * 3600.0)
    return SizingAnswer(
        profile=profile,
        runtime_cores=sum(line.cores for line in lines),
        broker_cores=sum(line.broker_cores for line in lines),
        memory_mb=sum(line.memory_mb for line in lines),
        spool_bytes_full=backlog * cal.spool_bytes_per_summary,
        spool_bytes_compacted=compacted * cal.spool_bytes_per_compacted_summary,
        uplink_live_bps=live_bps,
        uplink_drain_bps=drain_bps,
        summaries_per_s=summaries,
        lines=lines,
    )
