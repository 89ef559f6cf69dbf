"""Camera analytics: a detector model on ONNX Runtime, JPEG preprocessing, box decoding,
tracking and per-camera statistics.

The pieces are synchronous and batch-oriented; callers run them in worker threads (onnxruntime
and OpenCV release the GIL).  Typical flow per batch of frames::

    model = get_model(model_config, base_dir)
    batch = FrameBatch(model.max_batch, model_config.input)
    for payload in payloads:
        try:
            batch.add_jpeg(payload, limits)
        except FrameError as exc:
            count(exc.reason)
    for detections in model.infer(batch.tensor, batch.frame_sizes):
        analytics[camera].process(ts, detections, frame_size)
"""

from edge_runtime.inference.analytics import (
    AlertResult,
    CameraAnalytics,
    CameraWindowResult,
    FrameAnalytics,
    LineCrossing,
    points_in_polygon,
)
from edge_runtime.inference.analytics_config import (
    AlertRuleConfig,
    CameraAnalyticsConfig,
    LineConfig,
    ZoneConfig,
)
from edge_runtime.inference.config import (
    FrameLimits,
    InputSpec,
    ModelConfig,
    NanoDetGFLDecoderConfig,
    NanoDetLevel,
    SessionConfig,
    SessionLayout,
    YoloDecoderConfig,
)
from edge_runtime.inference.constants import COCO_CLASSES
from edge_runtime.inference.decode import Detections, batched_nms, box_iou, make_decoder
from edge_runtime.inference.errors import (
    FrameError,
    InferenceError,
    ModelChecksumError,
    ModelLoadError,
)
from edge_runtime.inference.model import (
    AutotuneResult,
    DetectorModel,
    autotune,
    candidate_layouts,
    clear_model_cache,
    file_sha256,
    get_model,
)
from edge_runtime.inference.preprocess import (
    FrameBatch,
    Normaliser,
    decode_jpeg,
    resize_normalise_into,
)
from edge_runtime.inference.tracking import IoUTracker, TrackerConfig, Tracks

__all__ = [
    "COCO_CLASSES",
    "AlertResult",
    "AlertRuleConfig",
    "AutotuneResult",
    "CameraAnalytics",
    "CameraAnalyticsConfig",
    "CameraWindowResult",
    "Detections",
    "DetectorModel",
    "FrameAnalytics",
    "FrameBatch",
    "FrameError",
    "FrameLimits",
    "InferenceError",
    "InputSpec",
    "IoUTracker",
    "LineConfig",
    "LineCrossing",
    "ModelChecksumError",
    "ModelConfig",
    "ModelLoadError",
    "NanoDetGFLDecoderConfig",
    "NanoDetLevel",
    "Normaliser",
    "SessionConfig",
    "SessionLayout",
    "TrackerConfig",
    "Tracks",
    "YoloDecoderConfig",
    "ZoneConfig",
    "autotune",
    "batched_nms",
    "box_iou",
    "candidate_layouts",
    "clear_model_cache",
    "decode_jpeg",
    "file_sha256",
    "get_model",
    "make_decoder",
    "points_in_polygon",
    "resize_normalise_into",
]
