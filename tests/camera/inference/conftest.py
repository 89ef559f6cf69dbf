"""Fixtures for the inference tests: the committed NanoDet-m model and the committed video cut."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.camera import (
    Detections,
    DetectorModel,
    FrameBatch,
    ModelConfig,
    SessionConfig,
    SessionLayout,
    get_model,
)

REPO = Path(__file__).resolve().parents[3]
MODEL_PATH = Path("models/nanodet-m-coco/nanodet_m_coco_fp32_dynbatch.onnx")
MODEL_SHA256 = "930839a9a21d5026e3f25a7484400a85f9d890fef0a88649d5459c08ba409e73"
VIDEO = REPO / "tests/data/video/vtest_first120.avi"


def _nanodet_config(**overrides: object) -> ModelConfig:
    fields: dict[str, object] = {
        "name": "nanodet-m-coco",
        "path": MODEL_PATH,
        "sha256": MODEL_SHA256,
        "session": SessionConfig(layout=SessionLayout(sessions=1, intra_op_threads=2)),
    }
    fields.update(overrides)
    return ModelConfig.model_validate(fields)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def make_config() -> Callable[..., ModelConfig]:
    """Builds the committed model's declaration, with field overrides."""
    return _nanodet_config


@pytest.fixture(scope="session")
def model() -> DetectorModel:
    return get_model(_nanodet_config(), REPO)


@pytest.fixture(scope="session")
def frames() -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(VIDEO))
    decoded = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        decoded.append(frame)
    capture.release()
    assert len(decoded) == 120, f"{VIDEO} should hold 120 frames, decoded {len(decoded)}"
    return decoded


@pytest.fixture(scope="session")
def cut_detections(model: DetectorModel, frames: list[np.ndarray]) -> list[Detections]:
    """Detections for every frame of the cut, inferred in batches of max_batch."""
    batch = FrameBatch(model.max_batch, model.config.input)
    result: list[Detections] = []
    for start in range(0, len(frames), model.max_batch):
        batch.clear()
        for frame in frames[start : start + model.max_batch]:
            batch.add_image(frame)
        result.extend(model.infer(batch.tensor, batch.frame_sizes))
    return result
