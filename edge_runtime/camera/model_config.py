"""Pydantic models that declare a detector model and how frames are checked.

A declaration names an ONNX file, pins its sha256, says how frames are turned into the input
tensor (:class:`InputSpec`), how the outputs are decoded (a discriminated union on ``type``:
:class:`NanoDetGFLDecoderConfig` or :class:`YoloDecoderConfig`) and how onnxruntime sessions are
laid out on the CPU (:class:`SessionConfig`).  Example (TOML)::

    [[models]]
    name = "nanodet-m-coco"
    path = "models/nanodet-m-coco/nanodet_m_coco_fp32_dynbatch.onnx"
    sha256 = "930839a9..."
    decoder = { type = "nanodet_gfl" }
    session = { layout = { sessions = 1, intra_op_threads = 2 }, max_batch = 4 }
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge_runtime.camera.classes import COCO_CLASSES, NANODET_MEAN_BGR, NANODET_STD_BGR

__all__ = [
    "DecoderConfig",
    "FrameLimits",
    "InputSpec",
    "ModelConfig",
    "NanoDetGFLDecoderConfig",
    "NanoDetLevel",
    "SessionConfig",
    "SessionLayout",
    "YoloDecoderConfig",
]

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class InputSpec(BaseModel):
    """How a decoded frame becomes one slot of the NCHW float32 input tensor.

    The frame is resized (``resize``: letterbox or stretch) to ``width`` x ``height``, its
    channels put in ``channel_order`` and normalised per channel as ``(x - mean) / std``.
    """

    model_config = _FROZEN

    name: str = Field(default="input_1:0", description="Name of the model's image input.")
    width: int = Field(default=416, ge=16, le=4096, description="Input width in pixels.")
    height: int = Field(default=416, ge=16, le=4096, description="Input height in pixels.")
    channel_order: Literal["BGR", "RGB"] = Field(
        default="BGR", description="Channel order the model expects (frames decode as BGR)."
    )
    mean: tuple[float, float, float] = Field(
        default=NANODET_MEAN_BGR,
        description="Per-channel mean subtracted from 0-255 pixel values, in channel_order.",
    )
    std: tuple[float, float, float] = Field(
        default=NANODET_STD_BGR,
        description="Per-channel divisor applied after the mean, in channel_order.",
    )
    layout: Literal["NCHW"] = Field(default="NCHW", description="Tensor layout of the input.")
    resize: Literal["letterbox", "stretch"] = Field(
        default="letterbox",
        description='How a frame is fitted to width x height. "letterbox" scales it keeping '
        "its aspect ratio, centres it and fills the bands left over with pad_value, so a 16:9 "
        'or wider street camera is not squashed; "stretch" resizes it to width x height, '
        "distorting every frame whose aspect ratio differs from the input's. Use stretch only "
        "for a model trained on stretched frames. Boxes are mapped back to frame pixels either "
        "way.",
    )
    pad_value: float = Field(
        default=114.0,
        ge=0,
        le=255,
        description="Pixel value (0-255, every channel, before mean and std are applied) of "
        "the letterbox padding; 114 is the mid gray YOLO-family models are trained with. "
        'Unused with resize = "stretch".',
    )

    @model_validator(mode="after")
    def _check_std(self) -> InputSpec:
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive per channel, got {self.std}")
        return self


class NanoDetLevel(BaseModel):
    """One feature level (stride) of a NanoDet GFL head and the outputs that carry it."""

    model_config = _FROZEN

    stride: int = Field(ge=1, description="Downsampling factor of this level, in input pixels.")
    scores_output: str = Field(
        description="Output with the class scores (sigmoid applied) [batch, cells, classes]."
    )
    boxes_output: str = Field(
        description="Output with the box distributions [batch, cells, 4 * (reg_max + 1)]."
    )


_NANODET_LEVELS = (
    NanoDetLevel(stride=8, scores_output="Identity:0", boxes_output="Identity_3:0"),
    NanoDetLevel(stride=16, scores_output="Identity_1:0", boxes_output="Identity_4:0"),
    NanoDetLevel(stride=32, scores_output="Identity_2:0", boxes_output="Identity_5:0"),
)


class NanoDetGFLDecoderConfig(BaseModel):
    """NanoDet head with generalised-focal-loss box distributions, one output pair per stride."""

    model_config = _FROZEN

    type: Literal["nanodet_gfl"] = Field(
        default="nanodet_gfl", description="Selects the NanoDet GFL decoder."
    )
    levels: tuple[NanoDetLevel, ...] = Field(
        default=_NANODET_LEVELS,
        min_length=1,
        description="Feature levels, each with its stride and output names.",
    )
    reg_max: int = Field(
        default=10,
        ge=1,
        description="Largest distance bin; each box side is a distribution over reg_max + 1 bins.",
    )
    num_classes: int = Field(default=80, ge=1, description="Number of class score channels.")
    cell_offset: float = Field(
        default=0.5,
        ge=0.0,
        lt=1.0,
        description="Position of a cell's anchor point inside the cell, in cells: 0.5 (NanoDet) "
        "puts it at the cell centre ((col + 0.5) * stride, (row + 0.5) * stride), 0 at the "
        "cell's top-left corner.",
    )


class YoloDecoderConfig(BaseModel):
    """A YOLOv5/v8-style single output holding cx, cy, w, h, [objectness,] class scores."""

    model_config = _FROZEN

    type: Literal["yolo"] = Field(default="yolo", description="Selects the YOLO decoder.")
    output: str = Field(description="Name of the single detection output.")
    num_classes: int = Field(default=80, ge=1, description="Number of class score channels.")
    objectness: bool = Field(
        description="True for YOLOv5-style rows (4 box + 1 objectness + classes), false for "
        "YOLOv8-style rows (4 box + classes)."
    )
    channels_first: bool = Field(
        default=False,
        description="True when the output is [batch, 4+(1)+classes, boxes] (YOLOv8 export) "
        "instead of [batch, boxes, 4+(1)+classes].",
    )
    apply_sigmoid: bool = Field(
        default=False,
        description="Apply a sigmoid to objectness and class values (for exports emitting logits).",
    )


DecoderConfig = Annotated[NanoDetGFLDecoderConfig | YoloDecoderConfig, Field(discriminator="type")]


class SessionLayout(BaseModel):
    """How many onnxruntime sessions run side by side, and how many threads each uses."""

    model_config = _FROZEN

    sessions: int = Field(
        default=1, ge=1, le=32, description="Independent sessions; one inference each at a time."
    )
    intra_op_threads: int = Field(
        default=2, ge=1, le=256, description="Threads each session uses inside one operator."
    )

    def describe(self) -> str:
        return f"sessions={self.sessions}, intra_op_threads={self.intra_op_threads}"


class SessionConfig(BaseModel):
    """onnxruntime session settings."""

    model_config = _FROZEN

    layout: SessionLayout | Literal["auto"] = Field(
        default_factory=SessionLayout,
        description='Sessions and threads, or "auto" to time a few candidate layouts at load '
        "and keep the fastest.",
    )
    inter_op_threads: int = Field(
        default=1, ge=1, le=64, description="Threads running independent graph branches."
    )
    max_batch: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Most frames in one inference call; larger batches are split.",
    )
    allow_spinning: bool = Field(
        default=False,
        description="Let idle onnxruntime threads busy-wait for work. Slightly lower latency, "
        "but burns CPU that JPEG decoding on the same cores needs.",
    )
    autotune_seconds: float = Field(
        default=1.5, gt=0, le=30, description='Time spent per candidate when layout is "auto".'
    )


class ModelConfig(BaseModel):
    """Declaration of one detector model."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Name the model is referred to by."
    )
    path: Path = Field(
        description="ONNX file; a relative path is resolved against the directory of the "
        "configuration that declares it."
    )
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="Lower-case hex sha256 of the file, checked on every load.",
    )
    input: InputSpec = Field(default_factory=InputSpec, description="Input tensor layout.")
    decoder: DecoderConfig = Field(
        default_factory=NanoDetGFLDecoderConfig, description="How the outputs become boxes."
    )
    score_threshold: float = Field(
        default=0.4, gt=0, lt=1, description="Detections scoring below this are dropped."
    )
    iou_threshold: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Non-maximum suppression drops a box overlapping a better one of the same "
        "class by more than this intersection-over-union.",
    )
    max_detections: int = Field(
        default=100, ge=1, le=10_000, description="Most detections kept per image."
    )
    class_names: tuple[str, ...] = Field(
        default=COCO_CLASSES, description="Class name per class id (COCO-80 by default)."
    )
    session: SessionConfig = Field(
        default_factory=SessionConfig, description="onnxruntime session settings."
    )

    @model_validator(mode="after")
    def _check_classes(self) -> ModelConfig:
        if len(self.class_names) != self.decoder.num_classes:
            raise ValueError(
                f"class_names lists {len(self.class_names)} names but the decoder has "
                f"num_classes = {self.decoder.num_classes}; make them agree"
            )
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError("class_names contains duplicates")
        return self

    def resolved_path(self, base_dir: Path) -> Path:
        """The model file, with a relative ``path`` taken relative to ``base_dir``."""
        return self.path if self.path.is_absolute() else base_dir / self.path


class FrameLimits(BaseModel):
    """Bounds a JPEG frame must respect before it is decoded."""

    model_config = _FROZEN

    max_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="Largest accepted payload, in bytes."
    )
    max_width: int = Field(default=3840, ge=16, description="Widest accepted frame, in pixels.")
    max_height: int = Field(default=2160, ge=16, description="Tallest accepted frame, in pixels.")
    min_width: int = Field(default=16, ge=1, description="Narrowest accepted frame, in pixels.")
    min_height: int = Field(default=16, ge=1, description="Lowest accepted frame, in pixels.")

    @model_validator(mode="after")
    def _check_order(self) -> FrameLimits:
        if self.min_width > self.max_width or self.min_height > self.max_height:
            raise ValueError("min_width/min_height must not exceed max_width/max_height")
        return self
