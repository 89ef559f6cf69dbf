"""Turn raw detector outputs into boxes, vectorised over the whole batch.

Both decoders work the same way: threshold the class scores of every image of the batch at once
(one flat ``nonzero`` over ``[batch, cells, classes]``), decode boxes only for the surviving
(image, cell, class) candidates, then run one class-aware, image-aware non-maximum suppression
over all candidates of the batch (boxes are shifted apart per image and class, so that boxes of
different groups never overlap) and map the kept boxes back to each frame's own pixels: the
placement of each frame in the input (letterbox offset and scale, or stretch) is derived from its
size and the :class:`InputSpec` (:func:`~edge_runtime.camera.placement.place_frames`), for all
boxes of the batch at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from edge_runtime.camera.errors import InferenceError
from edge_runtime.camera.model_config import (
    InputSpec,
    ModelConfig,
    NanoDetGFLDecoderConfig,
    YoloDecoderConfig,
)
from edge_runtime.camera.placement import place_frames

__all__ = [
    "Decoder",
    "Detections",
    "NanoDetGFLDecoder",
    "Postprocess",
    "YoloDecoder",
    "batched_nms",
    "box_iou",
    "make_decoder",
]

F32 = NDArray[np.float32]
I64 = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Detections:
    """Detections of one image: ``boxes`` (n, 4) float32 x1, y1, x2, y2 in frame pixels,
    ``scores`` (n,) float32 and ``class_ids`` (n,) int64, best score first."""

    boxes: F32
    scores: F32
    class_ids: I64

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def select(self, mask: NDArray[np.bool_] | I64) -> Detections:
        """The detections picked by a boolean mask or an index array."""
        return Detections(self.boxes[mask], self.scores[mask], self.class_ids[mask])

    def counts(self, num_classes: int) -> I64:
        """Number of detections per class id, shape (num_classes,)."""
        return np.bincount(self.class_ids, minlength=num_classes).astype(np.int64)


@dataclass(frozen=True, slots=True)
class Postprocess:
    """Thresholds shared by all decoders."""

    score_threshold: float
    iou_threshold: float
    max_detections: int
    max_candidates: int = 1000  # per image, before NMS

    @classmethod
    def from_config(cls, config: ModelConfig) -> Postprocess:
        return cls(config.score_threshold, config.iou_threshold, config.max_detections)


class Decoder(Protocol):
    """Decodes the named outputs of a batch into one :class:`Detections` per image."""

    @property
    def output_names(self) -> tuple[str, ...]: ...

    def decode(
        self, outputs: Mapping[str, F32], frame_sizes: NDArray[np.integer] | None = None
    ) -> list[Detections]:
        """``frame_sizes`` is (batch, 2) of (width, height); ``None`` keeps input pixels."""
        ...


def box_iou(a: NDArray[np.floating], b: NDArray[np.floating]) -> NDArray[np.float64]:
    """Pairwise intersection over union of xyxy boxes: (n, 4) x (m, 4) -> (n, m)."""
    a64 = a.astype(np.float64, copy=False)
    b64 = b.astype(np.float64, copy=False)
    lt = np.maximum(a64[:, None, :2], b64[None, :, :2])
    rb = np.minimum(a64[:, None, 2:], b64[None, :, 2:])
    wh = np.clip(rb - lt, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a64[:, 2] - a64[:, 0]) * (a64[:, 3] - a64[:, 1])
    area_b = (b64[:, 2] - b64[:, 0]) * (b64[:, 3] - b64[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def batched_nms(boxes: NDArray[np.floating], scores: F32, groups: I64, iou_threshold: float) -> I64:
    """Greedy NMS within each group (e.g. image * classes + class); indices kept, best first.

    Boxes of different groups are shifted apart by more than the coordinate extent, so one pass
    over all candidates never lets a box suppress one of another group.
    """
    if scores.shape[0] == 0:
        return np.zeros(0, np.int64)
    b = boxes.astype(np.float64)
    extent = float(b.max() - b.min()) + 1.0
    b += (groups.astype(np.float64) * extent)[:, None]
    order = np.argsort(-scores, kind="stable")
    b = b[order]
    areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    suppressed = np.zeros(order.shape[0], np.bool_)
    kept: list[int] = []
    for i in range(order.shape[0]):
        if suppressed[i]:
            continue
        kept.append(i)
        rest = b[i + 1 :]
        w = np.minimum(b[i, 2], rest[:, 2]) - np.maximum(b[i, 0], rest[:, 0])
        h = np.minimum(b[i, 3], rest[:, 3]) - np.maximum(b[i, 1], rest[:, 1])
        inter = np.clip(w, 0.0, None) * np.clip(h, 0.0, None)
        union = areas[i] + areas[i + 1 :] - inter
        iou = inter / np.where(union > 0, union, 1.0)
        suppressed[i + 1 :] |= iou > iou_threshold
    return order[np.asarray(kept, np.int64)].astype(np.int64)


def _top_per_image(image_idx: I64, scores: F32, limit: int) -> I64:
    """Indices of at most ``limit`` best candidates per image."""
    order = np.lexsort((-scores, image_idx))
    sorted_images = image_idx[order]
    starts = np.searchsorted(sorted_images, sorted_images, side="left")
    rank = np.arange(order.shape[0]) - starts
    return order[rank < limit].astype(np.int64)


def _finish(
    *,
    batch: int,
    image_idx: I64,
    boxes: F32,
    scores: F32,
    class_ids: I64,
    num_classes: int,
    spec: InputSpec,
    frame_sizes: NDArray[np.integer] | None,
    post: Postprocess,
) -> list[Detections]:
    """Shared tail: pre-NMS cap, clipping, batched NMS, mapping to frame pixels, per-image
    split."""
    top = _top_per_image(image_idx, scores, post.max_candidates)
    image_idx, boxes, scores, class_ids = image_idx[top], boxes[top], scores[top], class_ids[top]
    placement = None if frame_sizes is None else place_frames(spec, frame_sizes)
    if placement is None:
        np.clip(boxes[:, 0::2], 0.0, spec.width, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0.0, spec.height, out=boxes[:, 1::2])
    else:
        if placement.frame.shape[0] != batch:
            raise InferenceError(f"{batch} images but {placement.frame.shape[0]} frame sizes")
        placement.clip_to_content(boxes, image_idx)  # never into the letterbox padding
    keep = batched_nms(boxes, scores, image_idx * num_classes + class_ids, post.iou_threshold)
    image_idx, boxes, scores, class_ids = (
        image_idx[keep],
        boxes[keep],
        scores[keep],
        class_ids[keep],
    )
    if placement is not None:
        boxes = placement.to_frame(boxes, image_idx)

    # keep is best-first; a stable sort by image keeps that order inside each image
    by_image = np.argsort(image_idx, kind="stable")
    image_idx, boxes, scores, class_ids = (
        image_idx[by_image],
        boxes[by_image],
        scores[by_image],
        class_ids[by_image],
    )
    bounds = np.searchsorted(image_idx, np.arange(batch + 1))
    result = []
    for i in range(batch):
        lo = bounds[i]
        hi = min(bounds[i + 1], lo + post.max_detections)
        result.append(
            Detections(
                np.ascontiguousarray(boxes[lo:hi], np.float32),
                np.ascontiguousarray(scores[lo:hi], np.float32),
                np.ascontiguousarray(class_ids[lo:hi], np.int64),
            )
        )
    return result


def _candidates(scores: F32, threshold: float) -> tuple[I64, I64, I64]:
    """(image, cell, class) of every score above ``threshold`` in a (batch, cells, classes)
    array; a flat search is several times faster than a 3-D ``np.nonzero``."""
    _, cells, classes = scores.shape
    flat = np.flatnonzero(scores > threshold)
    image, rest = np.divmod(flat, cells * classes)
    cell, cls = np.divmod(rest, classes)
    return image.astype(np.int64), cell.astype(np.int64), cls.astype(np.int64)


def _output(outputs: Mapping[str, F32], name: str) -> F32:
    try:
        return outputs[name]
    except KeyError:
        raise InferenceError(
            f"the model has no output {name!r} (it has {sorted(outputs)}); fix the output "
            "names in the decoder section of the model declaration"
        ) from None


class NanoDetGFLDecoder:
    """NanoDet head: per stride, sigmoid class scores and GFL distance distributions."""

    def __init__(self, config: NanoDetGFLDecoderConfig, spec: InputSpec, post: Postprocess):
        self._config = config
        self._post = post
        self._spec = spec
        self._bins = np.arange(config.reg_max + 1, dtype=np.float32)
        self._points: list[F32] = []
        for level in config.levels:
            cols = math.ceil(spec.width / level.stride)
            rows = math.ceil(spec.height / level.stride)
            ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float32)
            pts = np.stack([xs.ravel(), ys.ravel()], axis=1)  # row-major cells
            self._points.append(((pts + config.cell_offset) * level.stride).astype(np.float32))

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(
            name for lv in self._config.levels for name in (lv.scores_output, lv.boxes_output)
        )

    def decode(
        self, outputs: Mapping[str, F32], frame_sizes: NDArray[np.integer] | None = None
    ) -> list[Detections]:
        cfg = self._config
        bins = cfg.reg_max + 1
        parts: list[tuple[I64, F32, F32, I64]] = []
        batch = -1
        for level, points in zip(cfg.levels, self._points, strict=True):
            cls_scores = _output(outputs, level.scores_output)
            dist = _output(outputs, level.boxes_output)
            batch = cls_scores.shape[0]
            expected = (batch, points.shape[0], cfg.num_classes)
            if cls_scores.shape != expected or dist.shape != (batch, points.shape[0], 4 * bins):
                raise InferenceError(
                    f"stride {level.stride}: outputs have shapes {cls_scores.shape} and "
                    f"{dist.shape}, expected {expected} and "
                    f"{(batch, points.shape[0], 4 * bins)}; check the input size, strides, "
                    "reg_max and num_classes of the model declaration"
                )
            img, cell, cls = _candidates(cls_scores, self._post.score_threshold)
            if img.shape[0] == 0:
                continue
            logits = dist[img, cell].reshape(-1, 4, bins)
            logits = logits - logits.max(axis=2, keepdims=True)
            prob = np.exp(logits)
            distances = (prob @ self._bins) / prob.sum(axis=2) * np.float32(level.stride)
            pts = points[cell]
            boxes = np.concatenate([pts - distances[:, :2], pts + distances[:, 2:]], axis=1)
            parts.append(
                (
                    img.astype(np.int64),
                    boxes.astype(np.float32),
                    cls_scores[img, cell, cls],
                    cls.astype(np.int64),
                )
            )
        if batch < 0:
            raise InferenceError("the NanoDet decoder has no levels configured")
        if not parts:
            return [Detections.empty() for _ in range(batch)]
        image_idx = np.concatenate([p[0] for p in parts])
        boxes = np.concatenate([p[1] for p in parts])
        scores = np.concatenate([p[2] for p in parts]).astype(np.float32, copy=False)
        class_ids = np.concatenate([p[3] for p in parts])
        return _finish(
            batch=batch,
            image_idx=image_idx,
            boxes=boxes,
            scores=scores,
            class_ids=class_ids,
            num_classes=cfg.num_classes,
            spec=self._spec,
            frame_sizes=frame_sizes,
            post=self._post,
        )


class YoloDecoder:
    """YOLOv5/v8-style output: rows of cx, cy, w, h, [objectness,] class scores in input pixels."""

    def __init__(self, config: YoloDecoderConfig, spec: InputSpec, post: Postprocess):
        self._config = config
        self._post = post
        self._spec = spec

    @property
    def output_names(self) -> tuple[str, ...]:
        return (self._config.output,)

    def decode(
        self, outputs: Mapping[str, F32], frame_sizes: NDArray[np.integer] | None = None
    ) -> list[Detections]:
        cfg = self._config
        raw = _output(outputs, cfg.output)
        rows = raw.transpose(0, 2, 1) if cfg.channels_first else raw
        first_class = 5 if cfg.objectness else 4
        width = first_class + cfg.num_classes
        if rows.ndim != 3 or rows.shape[2] != width:
            raise InferenceError(
                f"output {cfg.output!r} has shape {raw.shape}; with objectness="
                f"{cfg.objectness}, channels_first={cfg.channels_first} and num_classes="
                f"{cfg.num_classes} each box needs {width} values"
            )
        batch = rows.shape[0]
        scores = rows[:, :, first_class:]
        if cfg.apply_sigmoid:
            scores = (1.0 / (1.0 + np.exp(-scores))).astype(np.float32)
        if cfg.objectness:
            obj = rows[:, :, 4:5]
            if cfg.apply_sigmoid:
                obj = (1.0 / (1.0 + np.exp(-obj))).astype(np.float32)
            scores = scores * obj
        img, cell, cls = _candidates(scores, self._post.score_threshold)
        if img.shape[0] == 0:
            return [Detections.empty() for _ in range(batch)]
        cxcywh = rows[img, cell, :4].astype(np.float32)
        half = cxcywh[:, 2:] / 2
        boxes = np.concatenate([cxcywh[:, :2] - half, cxcywh[:, :2] + half], axis=1)
        return _finish(
            batch=batch,
            image_idx=img.astype(np.int64),
            boxes=boxes,
            scores=scores[img, cell, cls].astype(np.float32),
            class_ids=cls.astype(np.int64),
            num_classes=cfg.num_classes,
            spec=self._spec,
            frame_sizes=frame_sizes,
            post=self._post,
        )


def make_decoder(config: ModelConfig) -> Decoder:
    """The decoder the model declaration asks for."""
    post = Postprocess.from_config(config)
    if isinstance(config.decoder, NanoDetGFLDecoderConfig):
        return NanoDetGFLDecoder(config.decoder, config.input, post)
    return YoloDecoder(config.decoder, config.input, post)
