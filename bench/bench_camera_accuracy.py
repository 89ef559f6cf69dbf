"""Camera accuracy without labels: do detections survive cropping a frame to a wider aspect?

    python bench/bench_camera_accuracy.py [--clip PATH] [--step N] [--models fp32,int8]

Street cameras are mostly 16:9 or wider, the committed footage is 4:3.  Each frame of the clip
is also cut to centred 16:9 and 21:9 bands (768x432 and 768x329 of a 768x576 frame); the
detector runs on the full frames and on the bands, once with stretched input
(``InputSpec.resize = "stretch"``) and once letterboxed.  A band's detections, shifted back into
full-frame pixels, should be the full frame's detections inside the band: same class, IoU >= 0.5
(full-frame boxes at least --min-inside inside the band are the reference, clipped to it; boxes
only partly inside are ignored, see ``edge_runtime.camera.evaluation``).  Printed per model,
band and preprocessing: recall (share of the full frame's boxes the band reproduces) and
precision (share of the band's boxes the full frame confirms), per class and overall.

The full frame is each mode's own reference, so this measures whether detections depend on the
frame's aspect ratio, not whether they are right; it needs no labels.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_runtime.camera import (
    Agreement,
    Detections,
    DetectorModel,
    FrameBatch,
    InputSpec,
    ModelConfig,
    SessionConfig,
    SessionLayout,
    centre_crop,
    crop_agreement,
    file_sha256,
)

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "bench/data/vtest.avi"
MODELS = {
    "fp32": ROOT / "models/nanodet-m-coco/nanodet_m_coco_fp32_dynbatch.onnx",
    "int8": ROOT / "models/nanodet-m-coco/nanodet_m_coco_int8_qop.onnx",
}
CROPS = {"16:9": 16 / 9, "21:9": 21 / 9}
MODES = ("stretch", "letterbox")


def read_frames(clip: Path, step: int, limit: int | None) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(clip))
    frames: list[np.ndarray] = []
    index = 0
    while limit is None or len(frames) < limit:
        ok, frame = capture.read()
        if not ok:
            break
        if index % step == 0:
            frames.append(frame)
        index += 1
    capture.release()
    if not frames:
        raise SystemExit(f"no frames could be read from {clip}")
    return frames


def load_model(path: Path, resize: str, threads: int) -> DetectorModel:
    config = ModelConfig(
        name=path.stem[:64],
        path=path,
        sha256=file_sha256(path),
        input=InputSpec(resize=resize),
        session=SessionConfig(layout=SessionLayout(sessions=1, intra_op_threads=threads)),
    )
    return DetectorModel.load(config, ROOT)


def detect(model: DetectorModel, images: list[np.ndarray]) -> list[Detections]:
    """Detections in each image's own pixels, through the normal FrameBatch path."""
    batch = FrameBatch(model.max_batch, model.config.input)
    result: list[Detections] = []
    for start in range(0, len(images), model.max_batch):
        batch.clear()
        for image in images[start : start + model.max_batch]:
            batch.add_image(image)
        result.extend(model.infer(batch.tensor, batch.frame_sizes))
    return result


@dataclass(frozen=True)
class Run:
    """One model and preprocessing over the clip: agreement per crop, boxes per full frame."""

    agreement: dict[str, Agreement]
    full_per_frame: float
    seconds: float


def run(
    model: DetectorModel,
    frames: list[np.ndarray],
    regions: dict[str, tuple[int, int, int, int]],
    min_inside: float,
) -> Run:
    started = time.perf_counter()
    classes = len(model.class_names)
    full = detect(model, frames)
    agreement: dict[str, Agreement] = {}
    for name, (x1, y1, x2, y2) in regions.items():
        crops = detect(model, [np.ascontiguousarray(f[y1:y2, x1:x2]) for f in frames])
        total = Agreement.zeros(classes)
        for f, c in zip(full, crops, strict=True):
            total += crop_agreement(f, c, (x1, y1, x2, y2), classes, min_inside=min_inside)
        agreement[name] = total
    per_frame = sum(len(d) for d in full) / len(frames)
    return Run(agreement, per_frame, time.perf_counter() - started)


def _fmt(value: float) -> str:
    return "   -" if np.isnan(value) else f"{value:.2f}"


def print_table(label: str, runs: dict[str, Run], names: tuple[str, ...], crop: str) -> None:
    """One crop: rows per class (reference count, then recall/precision/F1 per mode)."""
    agreements = [runs[mode].agreement[crop] for mode in MODES]
    # classes that occur in any mode's reference or band, most frequent first
    seen = sum((a.reference + a.candidate for a in agreements), np.zeros(len(names), np.int64))
    order = [int(c) for c in np.argsort(-seen, kind="stable") if seen[c] > 0]
    head = "".join(f" | {mode:^28}" for mode in MODES)
    sub = "".join(" |  ref  band recall prec.   F1" for _ in MODES)
    print(f"  {label}, band {crop}\n  {'class':<14}{head}\n  {'':<14}{sub}")
    rows = [(names[c], [(a, c) for a in agreements]) for c in order]
    totals = [a.total() for a in agreements]
    rows.append(("all", [(t, 0) for t in totals]))
    for name, cells in rows:
        line = f"  {name:<14}"
        for a, c in cells:
            line += (
                f" | {a.reference[c]:4d} {a.candidate[c]:5d}  {_fmt(a.recall[c])}   "
                f"{_fmt(a.precision[c])} {_fmt(a.f1[c])}"
            )
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=CLIP, help="video file (default vtest.avi)")
    parser.add_argument("--step", type=int, default=2, help="use every Nth frame (default 2)")
    parser.add_argument("--frames", type=int, default=None, help="use at most this many frames")
    parser.add_argument(
        "--models", default="fp32,int8", help="comma-separated, of: " + ", ".join(MODELS)
    )
    parser.add_argument(
        "--min-inside",
        type=float,
        default=0.75,
        help="share of a full-frame box inside the band for it to be a reference (0.75)",
    )
    args = parser.parse_args()
    cv2.setNumThreads(1)
    threads = len(os.sched_getaffinity(0))
    frames = read_frames(args.clip, max(1, args.step), args.frames)
    height, width = frames[0].shape[:2]
    regions = {name: centre_crop(width, height, aspect) for name, aspect in CROPS.items()}
    print(
        f"bench_camera_accuracy: {args.clip.name}, {len(frames)} frames {width}x{height} "
        f"(every {args.step}), onnxruntime {ort.__version__}, OpenCV {cv2.__version__}"
    )
    for name, (x1, y1, x2, y2) in regions.items():
        print(f"  band {name}: {x2 - x1}x{y2 - y1} at x={x1}, y={y1}")
    print(
        "  ref: full-frame boxes >= "
        f"{args.min_inside:.0%} inside the band; band: the band's boxes not ignored; "
        "match = same class, IoU >= 0.5"
    )
    for label in args.models.split(","):
        path = MODELS[label.strip()]
        models = {mode: load_model(path, mode, threads) for mode in MODES}
        runs = {
            mode: run(model, frames, regions, args.min_inside) for mode, model in models.items()
        }
        names = models["letterbox"].class_names
        print(f"\n== {label} ({path.name})")
        for mode in MODES:
            r = runs[mode]
            print(
                f"  {mode}: {r.full_per_frame:.2f} boxes per full frame; "
                f"{r.seconds:.0f} s for {len(frames) * (1 + len(regions))} images"
            )
        for crop in regions:
            print_table(label, runs, names, crop)
        summary = ", ".join(
            f"{crop} F1 stretch {runs['stretch'].agreement[crop].total().f1[0]:.3f} -> "
            f"letterbox {runs['letterbox'].agreement[crop].total().f1[0]:.3f}"
            for crop in regions
        )
        print(f"  {label} summary: {summary}")


if __name__ == "__main__":
    main()
