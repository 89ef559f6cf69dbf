"""The ``camera`` pipeline: detections batched across cameras, sent as per-camera summaries.

Frames come as JPEGs over MQTT (one topic per camera; the payload is the JPEG itself or a
msgpack map ``{"ts": capture_time, "jpeg": bytes}``) or from OpenCV sources (a video file or an
RTSP/HTTP URL read in its own thread).  Each camera keeps only its latest frame; the batch
former takes frames across cameras under a deadline, decodes them in threads and runs them
through the shared detector model.  Per camera, the detections feed counts, zone occupancy
and line crossings (:class:`~edge_runtime.camera.CameraAnalytics`); each closed window leaves
as one :class:`~edge_runtime.Summary` (``key`` = camera id) and each threshold rule that fires
as an alert (``kind = "alert"``, ``key`` = ``camera/rule``).  All of it is the camera
subsystem's :class:`~edge_runtime.camera.CameraRunner`; this module wires one to the runtime.

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

**Model path.** A relative ``model.path`` is looked up, in order, in the site config file's
folder, the current working directory, the folder that holds the installed ``edge_runtime``
package (the repository root for a source checkout) and that folder's ``models/``
(:func:`~edge_runtime.camera.resolve_model_path`); absolute paths always work.  A relative
OpenCV file ``url`` is taken relative to the working directory.

Summary stats (per camera and window): ``frames`` (frames analysed), ``count.<class>.mean /
max / min`` per frame, ``zone.<zone>.<class>.mean / max``, ``tracks.<class>.unique``,
``line.<line>.<class>.in / out``, ``latency.p50_ms / p99_ms`` (frame receipt to analytics
done), and what was dropped in the window: ``frames.skipped``, ``frames.sampled_out``,
``frames.bad``, ``frames.late``, ``frames.failed``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from edge_runtime.camera import (
    BatchEngine,
    CameraRunner,
    CameraSettings,
    FrameResult,
    FrameSlots,
    OpenCVSource,
    VideoStats,
    resolve_model_path,
)
from edge_runtime.pipelines import Pipeline, PipelineConfig, PipelineContext, RawMessage, Summary
from edge_runtime.pipelines.api import SubmitFn
from edge_runtime.sources.topics import topic_matches

__all__ = ["CameraConfig", "CameraPipeline"]


class CameraConfig(CameraSettings, PipelineConfig):
    """A ``[[pipelines]]`` table with ``type = "camera"``."""

    # The camera fields and their checks come from CameraSettings (edge_runtime.camera.config);
    # this class adds what ties them to the pipeline: its type and the topics it subscribes to.

    type: Literal["camera"] = Field(
        default="camera", description="Selects this plugin: batched camera analytics."
    )
    topics: list[str] = Field(
        default_factory=list,
        description="MQTT filters to subscribe to; by default the topics of the MQTT cameras. "
        "Needed only when no camera uses MQTT (the runtime subscribes to every pipeline's "
        "topics).",
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
    def _check_topics(self) -> CameraConfig:
        if not self.topics:
            raise ValueError(
                "no camera uses MQTT, so topics cannot be derived; set topics to a filter "
                'of your choice (e.g. ["cameras/control"])'
            )
        for camera in self.cameras:
            topic = camera.topic
            if topic is not None and not any(topic_matches(f, topic) for f in self.topics):
                raise ValueError(f"camera topic {topic!r} is not covered by topics {self.topics}")
        return self


class CameraPipeline(Pipeline[CameraConfig]):
    """Camera analytics: detections batched across cameras, per-camera summaries and alerts."""

    # A stream plugin: frames come in through offer() (MQTT) and OpenCV reader threads;
    # window summaries and alerts leave through the submit function given to run().  The
    # work is done by the camera subsystem's CameraRunner; this class wires it to the runtime.

    type_name: ClassVar[str] = "camera"
    config_model: ClassVar[type[PipelineConfig]] = CameraConfig
    input_kind = "stream"

    def __init__(self, config: CameraConfig, context: PipelineContext) -> None:
        super().__init__(config, context)
        self.model_path = resolve_model_path(config.model.path, context.base_dir)
        self.runner = CameraRunner(
            config,
            name=self.name,
            model_path=self.model_path,
            clock=context.clock,
            count=context.count,
        )
        self.stats: VideoStats = self.runner.stats
        self.slots: FrameSlots = self.runner.slots

    @property
    def engine(self) -> BatchEngine | None:
        """The inference engine, once :meth:`run` has loaded the model."""
        return self.runner.engine

    @property
    def sources(self) -> dict[str, OpenCVSource]:
        """The OpenCV reader of each camera that has a ``url``, by camera id."""
        return self.runner.sources

    @property
    def detections_sink(self) -> Callable[[FrameResult], None] | None:
        """Called with every analysed frame's result (tests, debugging, recording)."""
        return self.runner.detections_sink

    @detections_sink.setter
    def detections_sink(self, sink: Callable[[FrameResult], None] | None) -> None:
        self.runner.detections_sink = sink

    def offer(self, message: RawMessage) -> None:
        self.runner.offer(message)

    async def run(self, submit: SubmitFn) -> None:
        await self.runner.run(submit)

    async def settle(self) -> None:
        """Wait until no frame is pending or in flight (replays: nothing is skipped)."""
        await self.runner.settle()

    def close(self) -> None:
        self.runner.close()

    def on_tick(self, now: float) -> Sequence[Summary]:
        """Close the windows of cameras that went quiet (no frame waiting or in flight)."""
        return self.runner.on_tick(now)

    def flush(self) -> Sequence[Summary]:
        return self.runner.flush()

    def gauges(self) -> dict[str, float]:
        return self.runner.gauges()
