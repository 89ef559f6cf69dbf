"""Constants shared by the inference configs: class names and the NanoDet-m defaults."""

from __future__ import annotations

__all__ = [
    "COCO_CLASSES",
    "NANODET_MEAN_BGR",
    "NANODET_STD_BGR",
]

#: The 80 COCO 2017 detection classes in the usual contiguous order (index = class id).
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

#: Per-channel mean and standard deviation (B, G, R order) NanoDet-m was trained with.
NANODET_MEAN_BGR: tuple[float, float, float] = (103.53, 116.28, 123.675)
NANODET_STD_BGR: tuple[float, float, float] = (57.375, 57.12, 58.395)
