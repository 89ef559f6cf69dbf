"""The crop check of bench/bench_camera_accuracy.py on a subset of the committed cut.

No labels: each frame is cut to centred 16:9 and 21:9 bands, and a band's detections should be
the full frame's detections inside it.  Stretching a wide band to the square input squashes the
people in it and loses most of them; letterboxing keeps their shape.  An assertion about
accuracy, not about time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.camera import (
    Agreement,
    Detections,
    DetectorModel,
    FrameBatch,
    InputSpec,
    ModelConfig,
    centre_crop,
    crop_agreement,
    file_sha256,
    get_model,
)

INT8 = Path("models/nanodet-m-coco/nanodet_m_coco_int8_qop.onnx")
BANDS = {"16:9": 16 / 9, "21:9": 21 / 9}


def _detect(model: DetectorModel, images: list[np.ndarray]) -> list[Detections]:
    batch = FrameBatch(model.max_batch, model.config.input)
    result: list[Detections] = []
    for start in range(0, len(images), model.max_batch):
        batch.clear()
        for image in images[start : start + model.max_batch]:
            batch.add_image(image)
        result.extend(model.infer(batch.tensor, batch.frame_sizes))
    return result


def _agreement(model: DetectorModel, frames: list[np.ndarray]) -> dict[str, Agreement]:
    height, width = frames[0].shape[:2]
    full = _detect(model, frames)
    classes = len(model.class_names)
    result = {}
    for band, aspect in BANDS.items():
        x1, y1, x2, y2 = centre_crop(width, height, aspect)
        crops = _detect(model, [np.ascontiguousarray(f[y1:y2, x1:x2]) for f in frames])
        total = Agreement.zeros(classes)
        for f, c in zip(full, crops, strict=True):
            total += crop_agreement(f, c, (x1, y1, x2, y2), classes)
        result[band] = total.total()
    return result


def test_centre_crops_of_the_cut() -> None:
    assert centre_crop(768, 576, 16 / 9) == (0, 72, 768, 504)
    assert centre_crop(768, 576, 21 / 9) == (0, 123, 768, 452)
    assert centre_crop(1920, 1080, 4 / 3) == (240, 0, 1680, 1080)


def _dets(boxes: list[list[float]], classes: list[int], scores: list[float]) -> Detections:
    return Detections(
        np.array(boxes, np.float32).reshape(-1, 4),
        np.array(scores, np.float32),
        np.array(classes, np.int64),
    )


def test_crop_agreement_counts_hits_misses_and_ignores_cut_objects() -> None:
    region = (0, 100, 200, 200)  # a band of a 200x300 frame
    full = _dets(
        [
            [10, 120, 30, 180],  # inside: a reference
            [50, 120, 70, 180],  # inside: a reference the band misses
            [100, 150, 120, 250],  # half inside: ignored
            [150, 0, 170, 50],  # outside: takes no part
            [10, 120, 30, 180],  # inside, another class
        ],
        [0, 0, 0, 0, 2],
        [0.9, 0.8, 0.7, 0.6, 0.5],
    )
    crop = _dets(  # in band pixels (y - 100)
        [
            [11, 21, 31, 79],  # the first person: a hit
            [100, 50, 120, 100],  # the cut person: ignored, not a false alarm
            [150, 10, 170, 60],  # nothing there: a false alarm
            [10, 20, 30, 80],  # a person where the full frame saw a car: a false alarm
        ],
        [0, 0, 0, 0],
        [0.9, 0.8, 0.7, 0.6],
    )
    got = crop_agreement(full, crop, region, num_classes=3)
    assert got.reference.tolist() == [2, 0, 1]
    assert got.candidate.tolist() == [3, 0, 0]
    assert got.matched.tolist() == [1, 0, 0]
    total = got.total()
    assert total.recall[0] == pytest.approx(1 / 3)
    assert total.precision[0] == pytest.approx(1 / 3)
    assert np.isnan(got.precision[2])  # no car in the band: undefined, not zero
    empty = crop_agreement(full, Detections.empty(), region, num_classes=3)
    assert empty.matched.sum() == 0 and empty.reference.sum() == 3


@pytest.mark.parametrize("weights", ["fp32", "int8"])
def test_letterbox_agrees_with_the_full_frame_better_than_stretch(
    repo_root: Path,
    make_config: Callable[..., ModelConfig],
    frames: list[np.ndarray],
    weights: str,
) -> None:
    picked = frames[::4]  # 30 frames
    extra: dict[str, object] = {}
    if weights == "int8":
        extra = {"path": INT8, "sha256": file_sha256(repo_root / INT8)}
    scores = {}
    for resize in ("stretch", "letterbox"):
        model = get_model(make_config(input=InputSpec(resize=resize), **extra), repo_root)
        scores[resize] = _agreement(model, picked)
    for band in BANDS:
        stretch, letterbox = scores["stretch"][band], scores["letterbox"][band]
        assert letterbox.reference[0] > 100, "too few full-frame boxes inside the band"
        assert letterbox.f1[0] > stretch.f1[0], (
            f"{weights}, band {band}: letterbox F1 {letterbox.f1[0]:.3f} is not above "
            f"stretch F1 {stretch.f1[0]:.3f}"
        )
        assert letterbox.recall[0] > stretch.recall[0]
        # a floor, so that both collapsing together would not pass
        assert letterbox.f1[0] >= 0.85
