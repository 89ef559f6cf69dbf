"""Configuration of the camera subsystem: the cameras, cross-camera batching, and the settings a
camera pipeline adds to a pipeline's config, with the checks that span them.

The camera pipeline plugin's config (``edge_runtime_pipelines.camera.CameraConfig``) is a
pipeline config with :class:`CameraSettings` mixed in, so a ``[[pipelines]]`` table of
``type = "camera"`` holds these fields directly.  :func:`resolve_model_path` finds the model
file a config names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_runtime.camera.model_config import FrameLimits, ModelConfig
from edge_runtime.camera.tracking import TrackerConfig
from edge_runtime.camera.zones_config import (
    AlertRuleConfig,
    CameraAnalyticsConfig,
    LineConfig,
    ZoneConfig,
)
from edge_runtime.errors import ConfigError

__all__ = [
    "DEFAULT_CLASSES",
    "CameraBatchConfig",
    "CameraSettings",
    "CameraSourceConfig",
    "resolve_model_path",
]

_FROZEN = ConfigDict(extra="forbid", frozen=True)
_ID = r"^[A-Za-z0-9_.-]{1,64}$"
_REPO = Path(__file__).resolve().parents[2]  # the folder that holds the edge_runtime package
DEFAULT_CLASSES = ("person", "bicycle", "car", "motorcycle", "bus", "truck")


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


class CameraSettings(BaseModel):
    """The camera fields of a camera pipeline's config, and the checks across them (unique
    camera ids and topics, batch size within the model's, classes the model produces, each
    camera's zones, lines and alerts)."""

    model_config = _FROZEN

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
        default=DEFAULT_CLASSES, min_length=1, description="Class names counted by default."
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

    def weight_files(self, base_dir: Path) -> dict[str, Path]:
        """The detector model (see :meth:`PipelineConfig.weight_files`)."""
        path = self.model.resolved_path(base_dir)
        return {path.name: path}

    @model_validator(mode="after")
    def _check_cameras(self) -> CameraSettings:
        ids = [c.id for c in self.cameras]
        topics = [c.topic for c in self.cameras if c.topic is not None]
        for kind, names in (("camera ids", ids), ("camera topics", topics)):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind} must be unique, repeated: {dupes}")
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
