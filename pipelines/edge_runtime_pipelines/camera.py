"""The ``camera`` pipeline: detections batched across cameras, sent as per-camera summaries.

Frames come as JPEGs over MQTT (one topic per camera; the payload is the JPEG itself or a
msgpack map ``{"ts": capture_time, "jpeg": bytes}``) or from OpenCV sources (a video file or an
RTSP/HTTP URL read in its own thread).  Each camera keeps only its latest frame; the batch
former takes frames across cameras under a deadline, decodes them in threads and runs them
through the shared detector model (:mod:`edge_runtime.camera`).  Per camera, the detections feed
counts, zone occupancy and line crossings (:class:`~edge_runtime.camera.CameraAnalytics`);
each closed window leaves as one :class:`~edge_runtime.Summary` (``key`` = camera id) and each
threshold rule that fires as an alert (``kind = "alert"``, ``key`` = ``camera/rule``).

Site config::

    [[pipelines]]
    type = "camera"
    name = "street-cams"
    window_s = 60

    [pipelines.model]
    name = "nanodet-m-coco"
    path = "models/nanodet-m-coco/nanodet_m_coco_fp32_dynbatch.onnx"
    sha256 = "930839a9a21d5026e3f25a7484400a85f9d890fef0a88649d5459c08ba409e73"

    [[pipelines.cameras]]
    id = "queen-st-north"
    topic = "cameras/queen-st-north/jpeg"
    max_fps = 5
    zones = [{ name = "kerb", polygon = [[0, 0.6], [1, 0.6], [1, 1]], coords = "normalized" }]

    [[pipelines.cameras]]
    id = "car-park"
    url = "rtsp://10.0.0.21/stream1"

**Model path.** A relative ``model.path`` is looked up, in order, in the current working
directory, in the folder that holds the installed ``edge_runtime`` package's parent (the
repository root for a source checkout) and in that folder's ``models/``.  (The plugin API does
not pass the config file's folder to plugins yet; absolute paths always work.)  A relative
OpenCV file ``url`` is taken relative to the working directory.

Summary stats (per camera and window): ``frames`` (frames analysed), ``count.<class>.mean /
max / min`` per frame, ``zone.<zone>.<class>.mean / max``, ``tracks.<class>.unique``,
``line.<line>.<class>.in / out``, ``latency.p50_ms / p99_ms`` (frame receipt to analytics
done), and what was dropped in the window: ``frames.skipped``, ``frames.sampled_out``,
``frames.bad``, ``frames.late``, ``frames.failed``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

import edge_runtime
from edge_runtime.camera import (
    AlertResult,
    AlertRuleConfig,
    BatchEngine,
    CameraAnalytics,
    CameraAnalyticsConfig,
    CameraWindowResult,
    FpsSampler,
    Frame,
    FrameLimits,
    FrameResult,
    FrameSlots,
    LineConfig,
    ModelConfig,
    OpenCVSource,
    PayloadError,
    TrackerConfig,
    VideoStats,
    ZoneConfig,
    get_model,
    parse_payload,
)
from edge_runtime.errors import ConfigError
from edge_runtime.pipelines import Pipeline, PipelineConfig, PipelineContext, RawMessage, Summary
from edge_runtime.pipelines.api import SubmitFn
from edge_runtime.sources.topics import topic_matches

__all__ = [
    "CameraBatchConfig",
    "CameraConfig",
    "CameraPipeline",
    "CameraSourceConfig",
    "resolve_model_path",
]

_FROZEN = ConfigDict(extra="forbid", frozen=True)
_ID = r"^[A-Za-z0-9_.-]{1,64}$"
_REPO = Path(edge_runtime.__file__).resolve().parents[1]
_DEFAULT_CLASSES = ("person", "bicycle", "car", "motorcycle", "bus", "truck")


class CameraSourceConfig(BaseModel):
    """One camera: where its frames come from, its rate cap, and its zones, lines and alerts."""

    model_config = _FROZEN

    id: str = Field(pattern=_ID, description="Camera id; the key of its summaries.")
    topic: str | None = Field(
        default=None,
        description="MQTT topic the camera publishes frames on (JPEG bytes, or msgpack "
        '{"ts": capture time in s, "jpeg": bytes}). Set this or url.',
    )
    url: str | None = Field(
        default=None,
        description="OpenCV source instead of MQTT: a video file path (relative to the working "
        "directory) or a stream URL (rtsp://, http://), read in its own thread with reconnect.",
    )
    max_fps: float | None = Field(
        default=None,
        gt=0,
        le=240,
        description="Most frames per second (of capture time) analysed; extra frames are "
        "sampled out before decoding. No cap when omitted.",
    )
    realtime: bool = Field(
        default=True,
        description="Video files only: read at the file's own frame rate like a live camera "
        "(true), or as fast as the pipeline takes frames without skipping any (false).",
    )
    repeat: bool = Field(default=False, description="Video files only: start over at the end.")
    reconnect_min_s: float = Field(
        default=0.5, gt=0, description="First retry delay of a failed OpenCV source."
    )
    reconnect_max_s: float = Field(
        default=30.0, gt=0, description="Cap of the exponential retry delay (with jitter)."
    )
    classes: tuple[str, ...] | None = Field(
        default=None, description="Classes counted for this camera; the pipeline's when omitted."
    )
    zones: tuple[ZoneConfig, ...] = Field(default=(), description="Occupancy zones (polygons).")
    lines: tuple[LineConfig, ...] = Field(default=(), description="Counting lines.")
    alerts: tuple[AlertRuleConfig, ...] = Field(
        default=(), description="Threshold rules; each firing leaves as an alert."
    )

    @model_validator(mode="after")
    def _check_source(self) -> CameraSourceConfig:
        if (self.topic is None) == (self.url is None):
            raise ValueError(f"camera {self.id!r}: set exactly one of topic (MQTT) or url (OpenCV)")
        if self.topic is not None and ("+" in self.topic or "#" in self.topic):
            raise ValueError(
                f"camera {self.id!r}: topic {self.topic!r} must be one exact topic, no wildcards"
            )
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(f"camera {self.id!r}: reconnect_min_s exceeds reconnect_max_s")
        return self


class CameraBatchConfig(BaseModel):
    """How frames of several cameras are batched for inference."""

    model_config = _FROZEN

    max_batch: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Most frames (of different cameras) in one inference call; at most the "
        "model's session.max_batch.",
    )
    max_wait_ms: float = Field(
        default=25.0,
        ge=0,
        le=2000,
        description="How long after the first waiting frame arrived the former waits for "
        "more cameras before running a smaller batch (the latency paid for batching).",
    )
    prefetch: int = Field(
        default=1,
        ge=0,
        le=4,
        description="Batches decoded ahead while inference runs (1 overlaps decoding of the "
        "next batch with inference of this one).",
    )


class CameraConfig(PipelineConfig):
    """A ``[[pipelines]]`` table with ``type = "camera"``."""

    type: Literal["camera"] = Field(
        default="camera", description="Selects this plugin: batched camera analytics."
    )
    topics: list[str] = Field(
        default_factory=list,
        description="MQTT filters to subscribe to; by default the topics of the MQTT cameras. "
        "Needed only when no camera uses MQTT (the runtime subscribes to every pipeline's "
        "topics).",
    )
    cameras: tuple[CameraSourceConfig, ...] = Field(
        min_length=1, description="The cameras of this pipeline."
    )
    model: ModelConfig = Field(description="Detector model (loaded once, shared by pipelines).")
    batch: CameraBatchConfig = Field(
        default_factory=CameraBatchConfig, description="Cross-camera batching."
    )
    decode_threads: int = Field(
        default=2, ge=1, le=32, description="Threads decoding and resizing JPEG frames."
    )
    opencv_threads: int = Field(
        default=1,
        ge=0,
        le=64,
        description="OpenCV's own thread pool size (process-wide, set when the pipeline "
        "starts; 0 keeps OpenCV's default). 1 keeps it from competing with onnxruntime.",
    )
    limits: FrameLimits = Field(
        default_factory=FrameLimits, description="Bounds a JPEG frame must respect."
    )
    window_s: float = Field(
        default=60.0, gt=0, description="Length of each camera's statistics window, seconds."
    )
    classes: tuple[str, ...] = Field(
        default=_DEFAULT_CLASSES, min_length=1, description="Class names counted by default."
    )
    anchor: Literal["bottom_center", "center"] = Field(
        default="bottom_center",
        description="Point of a box tested against zones and lines (bottom centre = feet).",
    )
    tracker: TrackerConfig = Field(
        default_factory=TrackerConfig, description="Per-camera tracker settings."
    )
    idle_close_s: float = Field(
        default=5.0,
        ge=0,
        description="A camera's open window is closed this long after its end when no newer "
        "frame has arrived (a camera that stopped sending still reports).",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_topics(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("topics"):
            cams = data.get("cameras") or ()
            topics = [c.get("topic") for c in cams if isinstance(c, dict) and c.get("topic")]
            if topics:
                data = {**data, "topics": topics}
        return data

    @model_validator(mode="after")
    def _check(self) -> CameraConfig:
        if not self.topics:
            raise ValueError(
                "no camera uses MQTT, so topics cannot be derived; set topics to a filter "
                'of your choice (e.g. ["cameras/control"])'
            )
        ids = [c.id for c in self.cameras]
        topics = [c.topic for c in self.cameras if c.topic is not None]
        for kind, names in (("camera ids", ids), ("camera topics", topics)):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind} must be unique, repeated: {dupes}")
        for topic in topics:
            if not any(topic_matches(f, topic) for f in self.topics):
                raise ValueError(f"camera topic {topic!r} is not covered by topics {self.topics}")
        if self.batch.max_batch > self.model.session.max_batch:
            raise ValueError(
                f"batch.max_batch = {self.batch.max_batch} exceeds the model's "
                f"session.max_batch = {self.model.session.max_batch}; raise the latter or "
                "lower the former"
            )
        known = set(self.model.class_names)
        for cam in self.cameras:
            unknown = sorted(set(cam.classes or self.classes) - known)
            if unknown:
                raise ValueError(
                    f"camera {cam.id!r}: classes {unknown} are not produced by model "
                    f"{self.model.name!r}"
                )
            self.analytics_for(cam)
        return self

    def analytics_for(self, camera: CameraSourceConfig) -> CameraAnalyticsConfig:
        """The analytics settings of one camera (pipeline defaults + the camera's geometry)."""
        try:
            return CameraAnalyticsConfig(
                window_s=self.window_s,
                classes=camera.classes or self.classes,
                anchor=self.anchor,
                tracker=self.tracker,
                zones=camera.zones,
                lines=camera.lines,
                alerts=camera.alerts,
            )
        except ValidationError as exc:
            problems = "; ".join(str(e["msg"]) for e in exc.errors())
            raise ValueError(f"camera {camera.id!r}: {problems}") from exc


def resolve_model_path(path: Path, base_dir: Path | None = None) -> Path:
    """Find a model file: absolute as is; relative against the site config's folder, the
    working directory, then the repository (or install) root, then its ``models/`` folder."""
    bases = [base_dir] if base_dir is not None else []
    candidates = [path] if path.is_absolute() else [b / path for b in (*bases, Path.cwd(), _REPO)]
    if not path.is_absolute():
        candidates.append(_REPO / "models" / path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    looked = ", ".join(str(c) for c in candidates)
    raise ConfigError(
        f"model file {str(path)!r} not found (looked in: {looked}); give an absolute path or "
        "one relative to the site config file",
        field="model.path",
    )


@dataclass(slots=True)
class _Camera:
    """Per-camera state, owned by the event loop."""

    analytics: CameraAnalytics
    sampler: FpsSampler
    latencies: list[float] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)  # since the last window closed
    open_until: float | None = None  # end of the window the last analysed frame fell in
    closed_until: float = -math.inf  # frames before this belong to windows already sent
    offset: float = 0.0  # wall clock minus capture time of the last analysed frame
    source: OpenCVSource | None = None
    source_sampled_out: int = 0  # source counter already accounted


class CameraPipeline(Pipeline[CameraConfig]):
    """Camera analytics: detections batched across cameras, per-camera summaries and alerts."""

    # A stream plugin: frames come in through offer() (MQTT) and OpenCV reader threads;
    # window summaries and alerts leave through the submit function given to run().

    type_name: ClassVar[str] = "camera"
    config_model: ClassVar[type[PipelineConfig]] = CameraConfig
    input_kind = "stream"

    def __init__(self, config: CameraConfig, context: PipelineContext) -> None:
        super().__init__(config, context)
        self.model_path = resolve_model_path(config.model.path, context.base_dir)
        self.stats = VideoStats()
        self.slots = FrameSlots(c.id for c in config.cameras)
        self.engine: BatchEngine | None = None
        #: Called with every analysed frame's result (tests, debugging, recording).
        self.detections_sink: Callable[[FrameResult], None] | None = None
        self._closed = False
        self._by_topic = {c.topic: c.id for c in config.cameras if c.topic is not None}
        self._cameras: dict[str, _Camera] = {}
        for cam in config.cameras:
            state = _Camera(
                analytics=CameraAnalytics(
                    cam.id, config.analytics_for(cam), config.model.class_names
                ),
                sampler=FpsSampler(cam.max_fps),
            )
            if cam.url is not None:
                state.source = OpenCVSource(
                    cam.id,
                    cam.url,
                    deliver=self._deliver,
                    max_fps=cam.max_fps,
                    realtime=cam.realtime,
                    repeat=cam.repeat,
                    reconnect_min_s=cam.reconnect_min_s,
                    reconnect_max_s=cam.reconnect_max_s,
                )
            self._cameras[cam.id] = state

    @property
    def sources(self) -> dict[str, OpenCVSource]:
        """The OpenCV reader of each camera that has a ``url``, by camera id."""
        return {c: s.source for c, s in self._cameras.items() if s.source is not None}

    # -- frames in (event loop) --------------------------------------------------------------

    def offer(self, message: RawMessage) -> None:
        camera = self._by_topic.get(message.topic)
        if camera is None:
            self.context.count("frames_unknown_topic")
            return
        if self._closed:
            return
        self._arrived()
        try:
            ts, jpeg = parse_payload(message.payload)
        except PayloadError as exc:
            self._bad(camera, exc.reason)
            return
        received = message.received_at or self.context.clock.time()
        capture_ts = received if ts is None else ts
        if not self._cameras[camera].sampler.accept(capture_ts):
            self._drop(camera, "sampled_out")
            return
        self._store(Frame(camera, capture_ts, received, jpeg=jpeg))

    def _deliver(self, frame: Frame) -> None:
        """A frame from an OpenCV source thread, already sampled (runs on the loop)."""
        if self._closed:
            return
        self._arrived()
        self._store(frame)

    def _arrived(self) -> None:
        self.stats.frames_in += 1
        self.context.count("frames_in")

    def _store(self, frame: Frame) -> None:
        if self.slots.put(frame):
            self._drop(frame.camera, "skipped")

    def _drop(self, camera: str, what: Literal["skipped", "sampled_out", "late"]) -> None:
        if what == "skipped":
            self.stats.frames_skipped += 1
        elif what == "sampled_out":
            self.stats.frames_sampled_out += 1
        self._cameras[camera].dropped[what] += 1
        self.context.count(f"frames_{what}")

    def _bad(self, camera: str, reason: str) -> None:
        self.stats.frames_bad[reason] += 1
        self._cameras[camera].dropped["bad"] += 1
        self.context.count(f"frames_bad_{reason}")

    # -- the stage ----------------------------------------------------------------------------

    async def run(self, submit: SubmitFn) -> None:
        cfg = self.config
        if cfg.opencv_threads:
            cv2.setNumThreads(cfg.opencv_threads)
        model_config = cfg.model.model_copy(update={"path": self.model_path})
        model = await asyncio.to_thread(get_model, model_config, self.model_path.parent)
        self.engine = BatchEngine(
            model,
            self.slots,
            max_batch=cfg.batch.max_batch,
            max_wait_s=cfg.batch.max_wait_ms / 1000.0,
            decode_threads=cfg.decode_threads,
            limits=cfg.limits,
            prefetch=cfg.batch.prefetch,
            stats=self.stats,
        )
        loop = asyncio.get_running_loop()
        sources = [s.source for s in self._cameras.values() if s.source is not None]
        for source in sources:
            self.slots.on_taken(source.camera, source.frame_taken)
            source.start(loop)

        async def on_results(results: Sequence[FrameResult]) -> None:
            summaries = self._analyse(results)
            if summaries:
                await submit(summaries)

        try:
            await self.engine.run(on_results)
        finally:
            for source in sources:
                source.stop()
            if sources:
                await asyncio.to_thread(_join_all, sources, 5.0)

    async def settle(self) -> None:
        """Wait until no frame is pending or in flight (replays: nothing is skipped)."""
        # the engine has no "idle" event: look every 2 ms
        while self._busy():  # noqa: ASYNC110
            await asyncio.sleep(0.002)

    def _busy(self) -> bool:
        in_flight = sum(self.engine.in_flight.values()) if self.engine is not None else 0
        return bool(len(self.slots) or in_flight)

    def close(self) -> None:
        self._closed = True
        self.slots.close()
        for state in self._cameras.values():
            if state.source is not None:
                state.source.stop()

    def _analyse(self, results: Sequence[FrameResult]) -> list[Summary]:
        """Per-camera analytics of one batch, in frame order; summaries of closed windows."""
        out: list[Summary] = []
        inferred = 0
        for result in results:
            frame = result.frame
            state = self._cameras[frame.camera]
            if result.detections is None or result.frame_size is None:
                if result.error == "inference_failed":
                    state.dropped["failed"] += 1
                    self.context.count("frames_failed")
                else:
                    self._bad(frame.camera, result.error or "unknown")
                continue
            inferred += 1
            if self.detections_sink is not None:
                self.detections_sink(result)
            if frame.ts < state.closed_until:
                self._drop(frame.camera, "late")
                continue
            analysed = state.analytics.process(frame.ts, result.detections, result.frame_size)
            out.extend(self._window_summary(state, w) for w in analysed.windows)
            out.extend(self._alert(a) for a in analysed.alerts)
            window_s = self.config.window_s
            if state.open_until is None or frame.ts >= state.open_until:
                state.open_until = (frame.ts // window_s) * window_s + window_s
            now = self.context.clock.time()
            state.offset = now - frame.ts
            latency = max(0.0, now - frame.received_at)
            state.latencies.append(latency)
            self.stats.latency.add(latency)
        self.context.count("batches")
        self.context.count("frames_inferred", inferred)
        return out

    def _window_summary(self, state: _Camera, window: CameraWindowResult) -> Summary:
        self._collect_source_counts(state)
        stats: dict[str, float | int | None] = dict(window.stats)
        if state.latencies:
            p50, p99 = np.percentile(np.asarray(state.latencies), [50, 99]).tolist()
            stats["latency.p50_ms"] = round(p50 * 1000, 2)
            stats["latency.p99_ms"] = round(p99 * 1000, 2)
        else:
            stats["latency.p50_ms"] = stats["latency.p99_ms"] = None
        for what in ("skipped", "sampled_out", "bad", "late", "failed"):
            stats[f"frames.{what}"] = state.dropped[what]
        state.latencies.clear()
        state.dropped.clear()
        state.closed_until = max(state.closed_until, window.window_end)
        return Summary(
            pipeline=self.name,
            key=window.camera,
            window_start=window.window_start,
            window_end=window.window_end,
            stats=stats,
            attrs={"model": self.config.model.name},
        )

    def _alert(self, alert: AlertResult) -> Summary:
        self.context.count("alerts")
        return Summary(
            pipeline=self.name,
            key=f"{alert.camera}/{alert.rule}",
            window_start=alert.ts,
            window_end=alert.ts,
            stats={"value": alert.value, "threshold": alert.threshold},
            kind="alert",
            attrs={
                "camera": alert.camera,
                "rule": alert.rule,
                "metric": alert.metric,
                "class": alert.class_name,
                "zone": alert.zone,
                "op": alert.op,
                "message": alert.message,
            },
        )

    def _collect_source_counts(self, state: _Camera) -> None:
        """Fold an OpenCV source thread's sampling counter into the loop-side counters."""
        if state.source is None:
            return
        delta = state.source.frames_sampled_out - state.source_sampled_out
        if delta:
            state.source_sampled_out += delta
            self.stats.frames_in += delta
            self.stats.frames_sampled_out += delta
            state.dropped["sampled_out"] += delta
            self.context.count("frames_in", delta)
            self.context.count("frames_sampled_out", delta)

    # -- timer, shutdown, gauges --------------------------------------------------------------

    def on_tick(self, now: float) -> Sequence[Summary]:
        """Close the windows of cameras that went quiet (no frame waiting or in flight)."""
        out: list[Summary] = []
        in_flight = self.engine.in_flight if self.engine is not None else Counter[str]()
        for camera, state in self._cameras.items():
            self._collect_source_counts(state)
            if state.open_until is None or camera in self.slots or in_flight[camera] > 0:
                continue
            if now - state.offset < state.open_until + self.config.idle_close_s:
                continue
            out.extend(self._close_window(state))
        return out

    def flush(self) -> Sequence[Summary]:
        out: list[Summary] = []
        for state in self._cameras.values():
            out.extend(self._close_window(state))
        return out

    def _close_window(self, state: _Camera) -> list[Summary]:
        summaries = [self._window_summary(state, w) for w in state.analytics.flush()]
        if state.open_until is not None:
            state.closed_until = max(state.closed_until, state.open_until)
        state.open_until = None
        return summaries

    def gauges(self) -> dict[str, float]:
        stats = self.stats
        p50, p99 = stats.latency.percentiles(50, 99)
        engine = self.engine
        return {
            "pending_frames": float(len(self.slots)),
            "in_flight_frames": float(sum(engine.in_flight.values())) if engine else 0.0,
            "queued_batches": float(engine.queued_batches) if engine else 0.0,
            "latency_p50_ms": p50 * 1000,
            "latency_p99_ms": p99 * 1000,
            "frames_skipped": float(stats.frames_skipped),
            "frames_sampled_out": float(stats.frames_sampled_out),
            "frames_bad": float(sum(stats.frames_bad.values())),
            "frames_inferred": float(stats.frames_inferred),
            "batches": float(stats.batches),
            "mean_batch_size": stats.mean_batch,
            "inference_busy_seconds": stats.infer_busy_s,
        }


def _join_all(sources: Sequence[OpenCVSource], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for source in sources:
        source.join(max(0.0, deadline - time.monotonic()))
