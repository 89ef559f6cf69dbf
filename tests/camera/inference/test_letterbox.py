"""Letterbox preprocessing: where a frame lands in the input, the padded tensor, and boxes mapped
back to frame pixels, on both batch paths (FrameBatch and BatchBuffer/fill_slot)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from edge_runtime.camera import (
    BatchBuffer,
    DetectorModel,
    Frame,
    FrameBatch,
    FrameLimits,
    InputSpec,
    NanoDetGFLDecoderConfig,
    NanoDetLevel,
    Normaliser,
    fill_slot,
    place_frames,
)
from edge_runtime.camera.boxes import NanoDetGFLDecoder, Postprocess


def test_default_is_letterbox_with_gray_padding() -> None:
    spec = InputSpec()
    assert spec.resize == "letterbox"
    assert spec.pad_value == 114.0


def test_bad_resize_and_pad_value_are_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="resize"):
        InputSpec(resize="fit")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="pad_value"):
        InputSpec(pad_value=300)


@pytest.mark.parametrize(
    ("frame", "size", "offset"),
    [
        ((768, 576), (416, 312), (0, 52)),  # 4:3
        ((1920, 1080), (416, 234), (0, 91)),  # 16:9
        ((640, 272), (416, 177), (0, 119)),  # 2.35:1
        ((272, 640), (177, 416), (119, 0)),  # portrait
        ((416, 416), (416, 416), (0, 0)),  # already the input size
        ((100, 100), (416, 416), (0, 0)),  # square and small: scaled up, no padding
    ],
)
def test_letterbox_placement(
    frame: tuple[int, int], size: tuple[int, int], offset: tuple[int, int]
) -> None:
    place = place_frames(InputSpec(), [frame])
    assert place.size.tolist() == [list(size)]
    assert place.offset.tolist() == [list(offset)]
    # one scale for both axes, up to the rounding of the resized size to whole pixels
    sx, sy = place.scale[0]
    assert sx == pytest.approx(sy, rel=0.01)


def test_stretch_placement_fills_the_input() -> None:
    place = place_frames(InputSpec(resize="stretch"), [[768, 576], [640, 272]])
    assert place.size.tolist() == [[416, 416], [416, 416]]
    assert place.offset.tolist() == [[0, 0], [0, 0]]
    np.testing.assert_allclose(place.scale, [[416 / 768, 416 / 576], [416 / 640, 416 / 272]])


def test_box_mapping_round_trips_and_clips_to_the_frame() -> None:
    spec = InputSpec()
    sizes = np.array([[640, 272], [768, 576], [272, 640]])
    place = place_frames(spec, sizes)
    rng = np.random.default_rng(1)
    image_idx = rng.integers(0, 3, 500).astype(np.int64)
    xy = rng.uniform(0, 1, (500, 2)) * sizes[image_idx] * 0.5
    wh = rng.uniform(1, 50, (500, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    back = place.to_frame(place.to_input(boxes, image_idx), image_idx)
    np.testing.assert_allclose(back, boxes, atol=1e-3)
    # a box reaching into the padding ends at the frame's edge
    pad_box = np.array([[-20, 0, 50, 416]], np.float32)  # frame 0: picture rows 119..296
    mapped = place.to_frame(pad_box, np.array([0]))
    assert mapped[0, 0] == 0 and mapped[0, 1] == 0 and mapped[0, 3] == 272


def test_letterbox_tensor_matches_reference_math(frames: list[np.ndarray]) -> None:
    spec = InputSpec()
    wide = np.ascontiguousarray(frames[0][123:452])  # a 768x329 band, 21:9
    slot = np.full((3, 416, 416), np.nan, np.float32)
    Normaliser(spec)(wide, slot)
    resized = cv2.resize(wide, (416, 178), interpolation=cv2.INTER_LINEAR)
    top = (416 - 178) // 2
    padded = cv2.copyMakeBorder(
        resized, top, 416 - 178 - top, 0, 0, cv2.BORDER_CONSTANT, value=(114, 114, 114)
    ).astype(np.float64)
    expected = ((padded - np.array(spec.mean)) / np.array(spec.std)).transpose(2, 0, 1)
    assert not np.isnan(slot).any()  # every value written, padding included
    np.testing.assert_allclose(slot, expected, rtol=0, atol=1e-4)


def test_rgb_letterbox_pads_with_the_same_gray(frames: list[np.ndarray]) -> None:
    spec = InputSpec(channel_order="RGB", mean=(0, 0, 0), std=(1, 1, 1), pad_value=7)
    slot = np.empty((3, 416, 416), np.float32)
    Normaliser(spec)(frames[0], slot)
    assert np.all(slot[:, :52] == 7) and np.all(slot[:, 364:] == 7)
    np.testing.assert_array_equal(
        slot[::-1, 52:364], cv2.resize(frames[0], (416, 312)).transpose(2, 0, 1)
    )


def test_reused_slot_gets_its_padding_rewritten(frames: list[np.ndarray]) -> None:
    normalise = Normaliser(InputSpec())
    slot = np.empty((3, 416, 416), np.float32)
    normalise(cv2.resize(frames[0], (416, 416)), slot)  # fills the whole slot with picture
    normalise(frames[1], slot)  # 4:3: padding rows 0..51 and 364..415
    pad = slot[:, 0, 0].copy()
    assert np.all(slot[:, :52] == pad[:, None, None])
    assert np.all(slot[:, 364:] == pad[:, None, None])


def test_both_batch_paths_letterbox_alike(frames: list[np.ndarray]) -> None:
    spec = InputSpec()
    images = [frames[0], np.ascontiguousarray(frames[1][72:504]), cv2.resize(frames[2], (200, 300))]
    batch = FrameBatch(3, spec)
    buffer = BatchBuffer(3, spec)
    for i, image in enumerate(images):
        batch.add_image(image)
        fill_slot(Frame("cam", float(i), float(i), image=image), buffer, i, FrameLimits())
    np.testing.assert_array_equal(batch.tensor, buffer.tensor)
    np.testing.assert_array_equal(batch.frame_sizes, buffer.sizes)


def _peaked(bins: int, distances: tuple[int, int, int, int]) -> np.ndarray:
    logits = np.full((4, bins), -50.0, np.float32)
    for side, k in enumerate(distances):
        logits[side, k] = 50.0
    return logits.ravel()


def test_decoder_maps_letterboxed_boxes_to_each_frame() -> None:
    spec = InputSpec(width=32, height=32)
    cfg = NanoDetGFLDecoderConfig(
        levels=(NanoDetLevel(stride=8, scores_output="s8", boxes_output="b8"),),
        reg_max=4,
        num_classes=3,
    )
    decoder = NanoDetGFLDecoder(cfg, spec, Postprocess(0.4, 0.5, 100))
    out = {"s8": np.zeros((2, 16, 3), np.float32), "b8": np.zeros((2, 16, 20), np.float32)}
    # both images: cell row 1 col 2 -> centre (20, 12); distances 1, 2, 1, 0 bins of 8 px
    # -> (12, -4, 28, 12) in input pixels
    for image in (0, 1):
        out["s8"][image, 6, 1] = 0.9
        out["b8"][image, 6] = _peaked(5, (1, 2, 1, 0))
    dets = decoder.decode(out, frame_sizes=np.array([[64, 32], [32, 64]]))
    # image 0 (64x32): scale 0.5, picture at rows 8..24 -> clip y to 8..24 -> (24, 0, 56, 8)
    np.testing.assert_allclose(dets[0].boxes, [[24, 0, 56, 8]], atol=1e-4)
    # image 1 (32x64): scale 0.5, picture at cols 8..24 -> clip x to 8..24 -> (8, 0, 32, 24)
    np.testing.assert_allclose(dets[1].boxes, [[8, 0, 32, 24]], atol=1e-4)
    assert [d.class_ids.tolist() for d in dets] == [[1], [1]]
    # without frame sizes the boxes stay in input pixels, clipped to the input
    raw = decoder.decode(out)
    np.testing.assert_allclose(raw[0].boxes, [[12, 0, 28, 12]], atol=1e-4)


def test_letterboxed_band_finds_the_people_of_the_full_frame(
    model: DetectorModel, frames: list[np.ndarray]
) -> None:
    """A 16:9 band cut from frame 0 gives the full frame's people at the same places."""
    assert model.config.input.resize == "letterbox"
    band = np.ascontiguousarray(frames[0][72:504])
    batch = FrameBatch(2, model.config.input)
    batch.add_image(frames[0])
    batch.add_image(band)
    full, crop = model.infer(batch.tensor, batch.frame_sizes)
    people_full = full.boxes[full.class_ids == 0]
    people_crop = crop.boxes[crop.class_ids == 0] + np.array([0, 72, 0, 72], np.float32)
    assert len(people_full) == len(people_crop) == 3
    key = np.argsort(people_full[:, 0])
    np.testing.assert_allclose(people_crop[np.argsort(people_crop[:, 0])], people_full[key], atol=3)
