"""A small IoU multi-object tracker, one instance per camera.

Each frame, the boxes of live tracks (moved on by their smoothed velocity) are matched to the
new detections greedily by descending intersection-over-union (the IoU matrix is computed at
once with numpy; only same-class pairs at or above ``iou_threshold`` are candidates).
Unmatched detections start tentative tracks; a track is *confirmed* once it has been matched
``min_hits`` times and is dropped after ``max_age`` frames without a match.  Only confirmed
tracks that were matched in the current frame are reported, so a one-frame false positive never
gets an id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from edge_runtime.camera.boxes import Detections, box_iou

__all__ = ["IoUTracker", "TrackerConfig", "Tracks"]

F32 = NDArray[np.float32]
I64 = NDArray[np.int64]


class TrackerConfig(BaseModel):
    """Settings of the per-camera IoU tracker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    iou_threshold: float = Field(
        default=0.3, gt=0, le=1, description="Least IoU between a track and a detection to match."
    )
    max_age: int = Field(
        default=10, ge=0, description="Frames a track survives without a matching detection."
    )
    min_hits: int = Field(
        default=3, ge=1, description="Matches needed before a track is confirmed and reported."
    )
    match_class: bool = Field(
        default=True, description="Match only detections of the track's own class."
    )
    predict_motion: bool = Field(
        default=True,
        description="Shift each track's box by its smoothed per-frame motion before matching "
        "(helps with fast objects and objects passing each other at low frame rates).",
    )


@dataclass(frozen=True, slots=True)
class Tracks:
    """Confirmed tracks seen in the current frame: ids (n,), boxes (n, 4) xyxy, class ids,
    scores, and ``new`` marking tracks confirmed in this very frame."""

    ids: I64
    boxes: F32
    class_ids: I64
    scores: F32
    new: NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @classmethod
    def empty(cls) -> Tracks:
        return cls(
            ids=np.zeros(0, np.int64),
            boxes=np.zeros((0, 4), np.float32),
            class_ids=np.zeros(0, np.int64),
            scores=np.zeros(0, np.float32),
            new=np.zeros(0, np.bool_),
        )


class IoUTracker:
    """Greedy IoU tracker; feed it one frame's :class:`Detections` at a time, in order."""

    def __init__(self, config: TrackerConfig | None = None):
        self.config = config or TrackerConfig()
        self._next_id = 1
        self._ids = np.zeros(0, np.int64)
        self._boxes = np.zeros((0, 4), np.float32)
        self._velocity = np.zeros((0, 4), np.float32)
        self._classes = np.zeros(0, np.int64)
        self._hits = np.zeros(0, np.int64)
        self._missed = np.zeros(0, np.int64)
        self.confirmed_total = 0

    def __len__(self) -> int:
        """Live tracks, tentative ones included."""
        return int(self._ids.shape[0])

    @property
    def live_ids(self) -> I64:
        """Ids of all live tracks (tentative, confirmed or currently unmatched)."""
        return self._ids.copy()

    def _predicted(self) -> F32:
        """Track boxes moved forward by their velocity to the current frame."""
        if not self.config.predict_motion:
            return self._boxes
        steps = (self._missed + 1).astype(np.float32)[:, None]
        return (self._boxes + self._velocity * steps).astype(np.float32)

    def _match(self, dets: Detections) -> tuple[I64, I64]:
        """Greedy assignment by descending IoU: (track rows, detection rows)."""
        if len(self) == 0 or len(dets) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        iou = box_iou(self._predicted(), dets.boxes)
        if self.config.match_class:
            iou[self._classes[:, None] != dets.class_ids[None, :]] = 0.0
        rows, cols = np.nonzero(iou >= self.config.iou_threshold)
        order = np.argsort(-iou[rows, cols], kind="stable")
        track_used = np.zeros(len(self), np.bool_)
        det_used = np.zeros(len(dets), np.bool_)
        pairs_t: list[int] = []
        pairs_d: list[int] = []
        for t, d in zip(rows[order].tolist(), cols[order].tolist(), strict=True):
            if track_used[t] or det_used[d]:
                continue
            track_used[t] = det_used[d] = True
            pairs_t.append(t)
            pairs_d.append(d)
        return np.asarray(pairs_t, np.int64), np.asarray(pairs_d, np.int64)

    def update(self, dets: Detections) -> Tracks:
        """Advance by one frame and return the confirmed tracks matched in it."""
        cfg = self.config
        t_rows, d_rows = self._match(dets)
        was_confirmed = self._hits >= cfg.min_hits

        matched = np.zeros(len(self), np.bool_)
        matched[t_rows] = True
        new_boxes = dets.boxes[d_rows]
        step = (new_boxes - self._boxes[t_rows]) / (self._missed[t_rows] + 1)[:, None]
        # the first match gives a velocity; later ones are smoothed half and half
        first = (self._hits[t_rows] == 1)[:, None]
        self._velocity[t_rows] = np.where(first, step, 0.5 * (step + self._velocity[t_rows]))
        self._boxes[t_rows] = new_boxes
        self._hits[t_rows] += 1
        self._missed[t_rows] = 0
        self._missed[~matched] += 1

        fresh = np.ones(len(dets), np.bool_)
        fresh[d_rows] = False
        n_new = int(fresh.sum())
        new_ids = np.arange(self._next_id, self._next_id + n_new, dtype=np.int64)
        self._next_id += n_new

        keep = self._missed <= cfg.max_age
        self._ids = np.concatenate([self._ids[keep], new_ids])
        self._boxes = np.concatenate([self._boxes[keep], dets.boxes[fresh]])
        self._velocity = np.concatenate([self._velocity[keep], np.zeros((n_new, 4), np.float32)])
        self._classes = np.concatenate([self._classes[keep], dets.class_ids[fresh]])
        self._hits = np.concatenate([self._hits[keep], np.ones(n_new, np.int64)])
        self._missed = np.concatenate([self._missed[keep], np.zeros(n_new, np.int64)])
        became = np.concatenate([(~was_confirmed)[keep], np.ones(n_new, np.bool_)])

        # rows of the current frame: matched old tracks, then the new ones
        det_of_row = np.full(len(self), -1, np.int64)
        kept_index = np.cumsum(keep) - 1
        det_of_row[kept_index[t_rows]] = d_rows
        det_of_row[len(self) - n_new :] = np.flatnonzero(fresh)

        confirmed = self._hits >= cfg.min_hits
        self.confirmed_total += int((confirmed & became).sum())
        report = confirmed & (det_of_row >= 0)
        rows = np.flatnonzero(report)
        det_rows = det_of_row[rows]
        return Tracks(
            ids=self._ids[rows].copy(),
            boxes=self._boxes[rows].copy(),
            class_ids=self._classes[rows].copy(),
            scores=dets.scores[det_rows].astype(np.float32),
            new=became[rows] & confirmed[rows],
        )
