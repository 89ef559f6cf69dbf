"""Fixtures for the video tests: the committed model and the committed cut as JPEG frames."""

from __future__ import annotations

import cv2
import pytest

from edge_runtime.camera import DetectorModel, get_model
from tests.camera.video._helpers import JPEG_QUALITY, REPO, VIDEO, model_config


@pytest.fixture(scope="session")
def clip_jpegs() -> list[bytes]:
    """The 120 frames of the cut, re-encoded once as JPEG (the bytes the cameras send)."""
    capture = cv2.VideoCapture(str(VIDEO))
    jpegs = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        assert ok
        jpegs.append(buf.tobytes())
    capture.release()
    assert len(jpegs) == 120
    return jpegs


@pytest.fixture(scope="session")
def model() -> DetectorModel:
    return get_model(model_config(), REPO)
