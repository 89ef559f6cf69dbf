"""Helpers for the video tests: the committed model's declaration, TOML snippets, references."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge_runtime.camera import (
    Detections,
    DetectorModel,
    FrameBatch,
    FrameLimits,
    ModelConfig,
    decode_jpeg,
)

REPO = Path(__file__).resolve().parents[3]
MODEL_PATH = REPO / "models/nanodet-m-coco/nanodet_m_coco_fp32_dynbatch.onnx"
MODEL_SHA256 = "930839a9a21d5026e3f25a7484400a85f9d890fef0a88649d5459c08ba409e73"
VIDEO = REPO / "tests/data/video/vtest_first120.avi"
JPEG_QUALITY = 85
T0 = 1_700_000_000.0  # a multiple of every window length the tests use

MODEL_TOML = f"""
[pipelines.model]
name = "nanodet-m-coco"
path = "{MODEL_PATH}"
sha256 = "{MODEL_SHA256}"
session = {{ layout = {{ sessions = 1, intra_op_threads = 2 }}, max_batch = 4 }}
"""


def model_config() -> ModelConfig:
    """The same declaration as MODEL_TOML (so get_model hands out the same shared model)."""
    return ModelConfig.model_validate(
        {
            "name": "nanodet-m-coco",
            "path": str(MODEL_PATH),
            "sha256": MODEL_SHA256,
            "session": {"layout": {"sessions": 1, "intra_op_threads": 2}, "max_batch": 4},
        }
    )


def camera_pipeline(cameras: str, *, name: str = "cams", extra: str = "") -> str:
    """A ``[[pipelines]]`` table of the camera plugin with the committed model."""
    return f"""
[[pipelines]]
type = "camera"
name = "{name}"
{extra}
{MODEL_TOML}
{cameras}
"""


def direct_detections(model: DetectorModel, jpegs: list[bytes]) -> list[Detections]:
    """The reference: the model run directly on the JPEG bytes, same decode and preprocessing."""
    batch = FrameBatch(model.max_batch, model.config.input)
    out: list[Detections] = []
    for start in range(0, len(jpegs), model.max_batch):
        batch.clear()
        for jpeg in jpegs[start : start + model.max_batch]:
            batch.add_image(decode_jpeg(jpeg, FrameLimits()))
        out.extend(model.infer(batch.tensor, batch.frame_sizes))
    return out


def assert_same(a: Detections, b: Detections) -> None:
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.class_ids, b.class_ids)
    np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-4)
    np.testing.assert_allclose(a.boxes, b.boxes, rtol=0, atol=2e-2)


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)
