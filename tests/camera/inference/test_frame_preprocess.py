"""JPEG validation, decoding and writing frames into the input batch."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_runtime.camera import (
    FrameBatch,
    FrameError,
    FrameLimits,
    InferenceError,
    InputSpec,
    decode_jpeg,
    resize_normalise_into,
)
from edge_runtime.camera.preprocess import jpeg_size
from edge_runtime.errors import EdgeRuntimeError

LIMITS = FrameLimits()


def _jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def frame_jpeg(frames: list[np.ndarray]) -> bytes:
    return _jpeg(frames[0])


def _reason(payload: bytes, limits: FrameLimits = LIMITS) -> str:
    with pytest.raises(FrameError) as info:
        decode_jpeg(payload, limits)
    assert isinstance(info.value, InferenceError)
    assert isinstance(info.value, EdgeRuntimeError)
    return info.value.reason


def test_valid_jpeg_decodes_to_bgr_frame(frame_jpeg: bytes, frames: list[np.ndarray]) -> None:
    image = decode_jpeg(frame_jpeg, LIMITS)
    assert image.shape == (576, 768, 3)
    assert image.dtype == np.uint8
    assert np.abs(image.astype(int) - frames[0]).mean() < 3  # JPEG q90 round trip
    assert jpeg_size(frame_jpeg) == (768, 576)


def test_nul_padding_after_end_marker_is_accepted(frame_jpeg: bytes) -> None:
    assert decode_jpeg(frame_jpeg + b"\x00" * 7, LIMITS).shape == (576, 768, 3)


def test_empty_payload() -> None:
    assert _reason(b"") == "empty"


@pytest.mark.parametrize(
    "payload",
    [b"hello world, not a picture", b"\x89PNG\r\n\x1a\n" + bytes(64), b'{"temp": 21.5}'],
)
def test_non_image_bytes(payload: bytes) -> None:
    assert _reason(payload) == "not_jpeg"


def test_png_is_not_a_jpeg(frames: list[np.ndarray]) -> None:
    ok, png = cv2.imencode(".png", frames[0][:64, :64])
    assert ok
    assert _reason(png.tobytes()) == "not_jpeg"


@pytest.mark.parametrize("keep", [0.25, 0.6, 0.95])
def test_truncated_jpeg_is_refused_not_half_decoded(frame_jpeg: bytes, keep: float) -> None:
    cut = frame_jpeg[: int(len(frame_jpeg) * keep)]
    # OpenCV alone would return a frame with a grey lower part for this payload
    assert _reason(cut) == "truncated"


def test_truncated_header_only() -> None:
    assert _reason(b"\xff\xd8\xff") == "truncated"


def test_garbage_between_markers_is_corrupt() -> None:
    payload = b"\xff\xd8" + bytes(range(1, 200)) + b"\xff\xd9"
    assert _reason(payload) == "corrupt"


def test_corrupt_scan_header_is_corrupt(frame_jpeg: bytes) -> None:
    sos = frame_jpeg.index(b"\xff\xda")
    broken = bytearray(frame_jpeg)
    broken[sos + 4 : sos + 12] = b"\xee" * 8  # component selectors and table ids of the scan
    assert _reason(bytes(broken)) == "corrupt"


def test_missing_frame_header_is_corrupt(frame_jpeg: bytes) -> None:
    sos = frame_jpeg.index(b"\xff\xda")
    without_sof = b"\xff\xd8" + frame_jpeg[sos:]
    assert _reason(without_sof) == "corrupt"


def test_oversize_frame_is_refused_from_its_header(frame_jpeg: bytes) -> None:
    small = FrameLimits(max_width=640, max_height=480)
    assert _reason(frame_jpeg, small) == "too_large"


def test_oversize_payload_is_refused_before_parsing(frame_jpeg: bytes) -> None:
    assert _reason(frame_jpeg, FrameLimits(max_bytes=4096)) == "too_large"


def test_tiny_frame_has_bad_size() -> None:
    tiny = _jpeg(np.full((8, 8, 3), 128, np.uint8))
    assert _reason(tiny) == "bad_size"


def test_zero_width_header_has_bad_size(frame_jpeg: bytes) -> None:
    sof = frame_jpeg.index(b"\xff\xc0")
    patched = bytearray(frame_jpeg)
    patched[sof + 7 : sof + 9] = b"\x00\x00"
    assert _reason(bytes(patched)) == "bad_size"


def test_resize_normalise_matches_reference_math(frames: list[np.ndarray]) -> None:
    spec = InputSpec(resize="stretch")  # letterbox: test_letterbox.py
    slot = np.full((3, spec.height, spec.width), np.nan, np.float32)
    resize_normalise_into(frames[0], slot, spec)
    resized = cv2.resize(frames[0], (spec.width, spec.height)).astype(np.float64)
    expected = ((resized - np.array(spec.mean)) / np.array(spec.std)).transpose(2, 0, 1)
    assert not np.isnan(slot).any()  # every value of the slot was written
    np.testing.assert_allclose(slot, expected, rtol=0, atol=1e-4)


def test_rgb_models_get_channels_swapped(frames: list[np.ndarray]) -> None:
    bgr = InputSpec(mean=(0, 0, 0), std=(1, 1, 1))
    rgb = InputSpec(mean=(0, 0, 0), std=(1, 1, 1), channel_order="RGB")
    a = np.empty((3, 416, 416), np.float32)
    b = np.empty((3, 416, 416), np.float32)
    resize_normalise_into(frames[0], a, bgr)
    resize_normalise_into(frames[0], b, rgb)
    np.testing.assert_array_equal(a[::-1], b)


def test_failed_frame_never_occupies_a_slot(frame_jpeg: bytes, frames: list[np.ndarray]) -> None:
    batch = FrameBatch(3, InputSpec())
    assert batch.add_jpeg(frame_jpeg, LIMITS) == 0
    first = batch.tensor[0].copy()
    with pytest.raises(FrameError):
        batch.add_jpeg(frame_jpeg[:5000], LIMITS)
    assert len(batch) == 1  # the truncated frame took no slot
    other = cv2.flip(frames[10], 1)
    assert batch.add_image(other) == 1
    assert batch.tensor.shape == (2, 3, 416, 416)
    np.testing.assert_array_equal(batch.tensor[0], first)
    assert not np.array_equal(batch.tensor[1], first)
    np.testing.assert_array_equal(batch.frame_sizes, [[768, 576], [768, 576]])
    batch.clear()
    assert len(batch) == 0
    assert batch.tensor.shape[0] == 0
    small = cv2.resize(frames[0], (320, 240))
    batch.add_image(small)
    np.testing.assert_array_equal(batch.frame_sizes, [[320, 240]])


def test_full_batch_says_what_to_do(frames: list[np.ndarray]) -> None:
    batch = FrameBatch(1, InputSpec())
    batch.add_image(frames[0])
    with pytest.raises(IndexError, match="infer and clear"):
        batch.add_image(frames[1])
