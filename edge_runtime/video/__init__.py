"""The video stage: frames in from cameras, batched across cameras, through a detector model.

Pieces, in the order a frame meets them::

    parse_payload      MQTT payload -> (capture ts, JPEG bytes); raw JPEG or msgpack envelope
    OpenCVSource       or: a file / RTSP URL read in its own thread, with reconnect
    FpsSampler         per-camera frame-rate cap (sampling on capture time)
    FrameSlots         latest-frame-wins slot per camera; batch former under a deadline
    prepare_batch      JPEG decode + resize + normalise in threads, into a BatchBuffer
    BatchEngine        former -> decode threads -> inference workers -> results in order
    VideoStats         counters and the frame-to-result latency (p50 / p99)

The camera pipeline plugin (``pipelines/camera.py``) wires these to the per-camera analytics
of :mod:`edge_runtime.inference` and to the uplink.
"""

from edge_runtime.video.batching import (
    BatchBuffer,
    FrameResult,
    PreparedBatch,
    fill_slot,
    prepare_batch,
)
from edge_runtime.video.engine import BatchEngine, ResultsFn
from edge_runtime.video.frames import (
    PAYLOAD_ERROR_REASONS,
    FpsSampler,
    Frame,
    PayloadError,
    PayloadErrorReason,
    parse_payload,
)
from edge_runtime.video.metrics import LatencyTracker, VideoStats
from edge_runtime.video.opencv_source import OpenCVSource, is_live_url
from edge_runtime.video.slots import FrameSlots

__all__ = [
    "PAYLOAD_ERROR_REASONS",
    "BatchBuffer",
    "BatchEngine",
    "FpsSampler",
    "Frame",
    "FrameResult",
    "FrameSlots",
    "LatencyTracker",
    "OpenCVSource",
    "PayloadError",
    "PayloadErrorReason",
    "PreparedBatch",
    "ResultsFn",
    "VideoStats",
    "fill_slot",
    "is_live_url",
    "parse_payload",
    "prepare_batch",
]
