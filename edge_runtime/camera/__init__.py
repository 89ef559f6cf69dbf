"""The camera subsystem: frames in from cameras, batched across cameras, through a detector
model on ONNX Runtime, into per-camera tracking, zone and line statistics, window summaries
and alerts.

Pieces, in the order a frame meets them::

    config      CameraSettings: cameras (CameraSourceConfig), batching, model, analytics
                defaults; resolve_model_path
    runner      CameraRunner: the whole stage, wiring the pieces below; per-camera state
    frames      parse_payload: MQTT payload -> (capture ts, JPEG bytes); FpsSampler rate cap
    capture     OpenCVSource: a file / RTSP URL read in its own thread, with reconnect
    slots       FrameSlots: latest-frame-wins slot per camera; batch former under a deadline
    preprocess  decode_jpeg, resize + normalise into the model's input tensor
    batching    prepare_batch: decode threads fill a BatchBuffer
    model       DetectorModel: onnxruntime sessions (model_config: input, sessions, decoder)
    boxes       box decoding and batched NMS -> Detections
    engine      BatchEngine: former -> decode threads -> inference workers -> results in order
    tracking    IoUTracker: track ids across frames
    zones       CameraAnalytics: zone occupancy, line crossings, alerts (zones_config)
    metrics     VideoStats: counters and frame-to-result latency

The pieces are synchronous and batch-oriented and run in worker threads (onnxruntime and
OpenCV release the GIL); :class:`CameraRunner` owns those threads and the event-loop side.
The camera pipeline plugin (``edge_runtime_pipelines.camera``) is a thin layer that wires a
runner to the site runtime: its config is a pipeline config with :class:`CameraSettings` mixed
in.  Nothing here imports the pipeline plugin API.
"""

from edge_runtime.camera.batching import (
    BatchBuffer,
    FrameResult,
    PreparedBatch,
    fill_slot,
    prepare_batch,
)
from edge_runtime.camera.boxes import Detections, batched_nms, box_iou, make_decoder
from edge_runtime.camera.capture import OpenCVSource, is_live_url
from edge_runtime.camera.classes import COCO_CLASSES
from edge_runtime.camera.config import (
    DEFAULT_CLASSES,
    CameraBatchConfig,
    CameraSettings,
    CameraSourceConfig,
    resolve_model_path,
)
from edge_runtime.camera.engine import BatchEngine, ResultsFn
from edge_runtime.camera.errors import (
    FrameError,
    InferenceError,
    ModelChecksumError,
    ModelLoadError,
)
from edge_runtime.camera.evaluation import (
    Agreement,
    centre_crop,
    crop_agreement,
    match_detections,
)
from edge_runtime.camera.frames import (
    PAYLOAD_ERROR_REASONS,
    FpsSampler,
    Frame,
    PayloadError,
    PayloadErrorReason,
    parse_payload,
)
from edge_runtime.camera.metrics import LatencyTracker, VideoStats
from edge_runtime.camera.model import (
    AutotuneResult,
    DetectorModel,
    autotune,
    candidate_layouts,
    clear_model_cache,
    file_sha256,
    get_model,
)
from edge_runtime.camera.model_config import (
    FrameLimits,
    InputSpec,
    ModelConfig,
    NanoDetGFLDecoderConfig,
    NanoDetLevel,
    SessionConfig,
    SessionLayout,
    YoloDecoderConfig,
)
from edge_runtime.camera.placement import Placement, place_frames
from edge_runtime.camera.preprocess import (
    FrameBatch,
    Normaliser,
    decode_jpeg,
    resize_normalise_into,
)
from edge_runtime.camera.runner import CameraRunner, CameraState, CountFn
from edge_runtime.camera.slots import FrameSlots
from edge_runtime.camera.tracking import IoUTracker, TrackerConfig, Tracks
from edge_runtime.camera.zones import (
    AlertResult,
    CameraAnalytics,
    CameraWindowResult,
    FrameAnalytics,
    LineCrossing,
    points_in_polygon,
)
from edge_runtime.camera.zones_config import (
    AlertRuleConfig,
    CameraAnalyticsConfig,
    LineConfig,
    ZoneConfig,
)

__all__ = [
    "COCO_CLASSES",
    "DEFAULT_CLASSES",
    "PAYLOAD_ERROR_REASONS",
    "Agreement",
    "AlertResult",
    "AlertRuleConfig",
    "AutotuneResult",
    "BatchBuffer",
    "BatchEngine",
    "CameraAnalytics",
    "CameraAnalyticsConfig",
    "CameraBatchConfig",
    "CameraRunner",
    "CameraSettings",
    "CameraSourceConfig",
    "CameraState",
    "CameraWindowResult",
    "CountFn",
    "Detections",
    "DetectorModel",
    "FpsSampler",
    "Frame",
    "FrameAnalytics",
    "FrameBatch",
    "FrameError",
    "FrameLimits",
    "FrameResult",
    "FrameSlots",
    "InferenceError",
    "InputSpec",
    "IoUTracker",
    "LatencyTracker",
    "LineConfig",
    "LineCrossing",
    "ModelChecksumError",
    "ModelConfig",
    "ModelLoadError",
    "NanoDetGFLDecoderConfig",
    "NanoDetLevel",
    "Normaliser",
    "OpenCVSource",
    "PayloadError",
    "PayloadErrorReason",
    "Placement",
    "PreparedBatch",
    "ResultsFn",
    "SessionConfig",
    "SessionLayout",
    "TrackerConfig",
    "Tracks",
    "VideoStats",
    "YoloDecoderConfig",
    "ZoneConfig",
    "autotune",
    "batched_nms",
    "box_iou",
    "candidate_layouts",
    "centre_crop",
    "clear_model_cache",
    "crop_agreement",
    "decode_jpeg",
    "file_sha256",
    "fill_slot",
    "get_model",
    "is_live_url",
    "make_decoder",
    "match_detections",
    "parse_payload",
    "place_frames",
    "points_in_polygon",
    "prepare_batch",
    "resize_normalise_into",
    "resolve_model_path",
]
