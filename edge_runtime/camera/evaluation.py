"""Agreement between two sets of detections, for checks that need no labels.

The main use is the *crop check* (``bench/bench_camera_accuracy.py``): a frame is cropped to a
wider aspect ratio (say a 16:9 band of a 4:3 frame), the detector runs on the full frame and on
the crop, and the crop's detections should be the full frame's detections inside that band.  A
preprocessing that distorts wide frames (stretching them to a square input) shows up as low
agreement, with no ground truth needed.

Matching follows the usual detection-benchmark rules: candidates are taken best score first,
each matches the unmatched reference box of the same class with the highest IoU if that IoU is
at least ``iou_threshold``; a reference box matches at most once.  Reference boxes only partly
inside the crop are *ignored*: not counted as missed, and a candidate matching one is neither a
hit nor a false alarm (the crop cuts the object, so either answer is defensible).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edge_runtime.camera.boxes import Detections, box_iou

__all__ = ["Agreement", "centre_crop", "crop_agreement", "match_detections"]

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Agreement:
    """Per-class counts of one comparison, shape (num_classes,) each: ``reference`` boxes that
    count, ``candidate`` boxes that count (not ignored), and ``matched`` pairs."""

    reference: I64
    candidate: I64
    matched: I64

    @classmethod
    def zeros(cls, num_classes: int) -> Agreement:
        z = np.zeros(num_classes, np.int64)
        return cls(z, z.copy(), z.copy())

    def __add__(self, other: Agreement) -> Agreement:
        return Agreement(
            self.reference + other.reference,
            self.candidate + other.candidate,
            self.matched + other.matched,
        )

    def total(self) -> Agreement:
        """All classes pooled, as a one-class :class:`Agreement`."""
        return Agreement(
            self.reference.sum(keepdims=True),
            self.candidate.sum(keepdims=True),
            self.matched.sum(keepdims=True),
        )

    @property
    def recall(self) -> F64:
        """Share of the reference boxes that were found; NaN for a class with none."""
        return _ratio(self.matched, self.reference)

    @property
    def precision(self) -> F64:
        """Share of the candidate boxes that match a reference box; NaN for none."""
        return _ratio(self.matched, self.candidate)

    @property
    def f1(self) -> F64:
        """Harmonic mean of recall and precision: 2 * matched / (reference + candidate)."""
        return _ratio(2 * self.matched, self.reference + self.candidate)


def _ratio(num: I64, den: I64) -> F64:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def match_detections(
    reference: Detections,
    candidate: Detections,
    num_classes: int,
    *,
    iou_threshold: float = 0.5,
    ignore: NDArray[np.bool_] | None = None,
) -> Agreement:
    """Greedy same-class matching of ``candidate`` against ``reference`` (boxes in the same
    coordinates); ``ignore`` marks reference boxes that neither count as missed nor turn a
    candidate matching them into a false alarm."""
    ignored = np.zeros(len(reference), np.bool_) if ignore is None else ignore
    counted = ~ignored
    ref_count = np.bincount(reference.class_ids[counted], minlength=num_classes)
    iou = (
        box_iou(candidate.boxes, reference.boxes)
        if len(candidate) and len(reference)
        else np.zeros((len(candidate), len(reference)))
    )
    iou[candidate.class_ids[:, None] != reference.class_ids[None, :]] = 0.0
    free = counted.copy()
    hit = np.zeros(len(candidate), np.bool_)
    dropped = np.zeros(len(candidate), np.bool_)
    for i in np.argsort(-candidate.scores, kind="stable"):
        open_iou = np.where(free, iou[i], -1.0)
        j = int(np.argmax(open_iou)) if open_iou.size else -1
        if j >= 0 and open_iou[j] >= iou_threshold:
            free[j] = False
            hit[i] = True
        elif ignored.any() and iou[i, ignored].max() >= iou_threshold:
            dropped[i] = True
    return Agreement(
        ref_count.astype(np.int64),
        np.bincount(candidate.class_ids[~dropped], minlength=num_classes).astype(np.int64),
        np.bincount(candidate.class_ids[hit], minlength=num_classes).astype(np.int64),
    )


def centre_crop(width: int, height: int, aspect: float) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) of the largest centred crop of a ``width`` x ``height`` frame with
    ``aspect`` = crop width / crop height (rounded down to whole pixels)."""
    if aspect <= 0:
        raise ValueError(f"aspect must be positive, got {aspect}")
    if width / height >= aspect:  # the frame is wider: keep the full height
        w = max(1, int(height * aspect))
        x1 = (width - w) // 2
        return x1, 0, x1 + w, height
    h = max(1, int(width / aspect))
    y1 = (height - h) // 2
    return 0, y1, width, y1 + h


def crop_agreement(
    full: Detections,
    crop: Detections,
    region: tuple[int, int, int, int],
    num_classes: int,
    *,
    iou_threshold: float = 0.5,
    min_inside: float = 0.75,
) -> Agreement:
    """How well the detections of a crop (``crop``, in crop pixels) reproduce those of the full
    frame (``full``, in frame pixels) inside ``region`` (x1, y1, x2, y2 of the crop).

    Full-frame boxes with at least ``min_inside`` of their area inside the region are the
    reference (clipped to the region); boxes partly inside are ignored; the rest do not take
    part.  The crop's boxes are shifted into frame pixels before matching.
    """
    x1, y1, x2, y2 = region
    clipped = full.boxes.astype(np.float64)
    np.clip(clipped[:, 0::2], x1, x2, out=clipped[:, 0::2])
    np.clip(clipped[:, 1::2], y1, y2, out=clipped[:, 1::2])
    area = np.prod(full.boxes[:, 2:] - full.boxes[:, :2], axis=1, dtype=np.float64)
    inside = np.prod(clipped[:, 2:] - clipped[:, :2], axis=1)
    share = np.divide(inside, area, out=np.zeros_like(area), where=area > 0)
    present = share > 0
    reference = Detections(
        clipped[present].astype(np.float32), full.scores[present], full.class_ids[present]
    )
    shift = np.array([x1, y1, x1, y1], np.float32)
    moved = Detections(crop.boxes + shift, crop.scores, crop.class_ids)
    return match_detections(
        reference,
        moved,
        num_classes,
        iou_threshold=iou_threshold,
        ignore=share[present] < min_inside,
    )
