"""Box decoding and NMS on hand-built outputs with exactly known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edge_runtime.camera import (
    InferenceError,
    InputSpec,
    ModelConfig,
    NanoDetGFLDecoderConfig,
    NanoDetLevel,
    YoloDecoderConfig,
    batched_nms,
    box_iou,
    make_decoder,
)
from edge_runtime.camera.boxes import NanoDetGFLDecoder, Postprocess

SHA = "0" * 64


def test_box_iou_known_values() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0], [0.0, 0.0, 0.0]])


def test_nms_is_per_class_and_per_image() -> None:
    boxes = np.array(
        [[0, 0, 10, 10], [1, 0, 11, 10], [1, 0, 11, 10], [1, 0, 11, 10], [30, 30, 40, 40]],
        np.float32,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5], np.float32)
    # group = image * classes + class: 0 and 1 share a group, 2 is another class, 3 another image
    groups = np.array([0, 0, 1, 80, 0], np.int64)
    keep = batched_nms(boxes, scores, groups, iou_threshold=0.5)
    assert keep.tolist() == [0, 2, 3, 4]
    assert batched_nms(boxes[:0], scores[:0], groups[:0], 0.5).shape == (0,)


def _nanodet_outputs(batch: int, num_classes: int, bins: int) -> dict[str, np.ndarray]:
    cells = {8: 16, 16: 4}  # a 32x32 input: 4x4 cells at stride 8, 2x2 at stride 16
    out: dict[str, np.ndarray] = {}
    for stride, n in cells.items():
        out[f"s{stride}"] = np.zeros((batch, n, num_classes), np.float32)
        out[f"b{stride}"] = np.zeros((batch, n, 4 * bins), np.float32)
    return out


def test_nanodet_gfl_decoding_of_peaked_distributions() -> None:
    spec = InputSpec(width=32, height=32, resize="stretch")  # letterbox: test_letterbox.py
    cfg = NanoDetGFLDecoderConfig(
        levels=(
            NanoDetLevel(stride=8, scores_output="s8", boxes_output="b8"),
            NanoDetLevel(stride=16, scores_output="s16", boxes_output="b16"),
        ),
        reg_max=4,
        num_classes=3,
    )
    decoder = NanoDetGFLDecoder(cfg, spec, Postprocess(0.4, 0.5, 100))
    out = _nanodet_outputs(batch=2, num_classes=3, bins=5)
    # image 1, stride 8, cell row 1 col 2 -> centre (20, 12); distances l,t,r,b = 1,2,1,0 bins
    cell = 1 * 4 + 2
    out["s8"][1, cell, 2] = 0.9
    logits = np.full((4, 5), -50.0, np.float32)
    for side, k in enumerate((1, 2, 1, 0)):
        logits[side, k] = 50.0
    out["b8"][1, cell] = logits.ravel()
    # image 0, stride 16, cell row 0 col 1 -> centre (24, 8); uniform bins -> mean 2 bins = 32 px
    out["s16"][0, 1, 0] = 0.7
    out["s16"][0, 1, 1] = 0.3  # below the threshold
    dets = decoder.decode(out, frame_sizes=np.array([[64, 64], [32, 64]]))
    assert [len(d) for d in dets] == [1, 1]
    # image 0: box (24-32, 8-32, 24+32, 8+32) clipped to 32x32 input, then scaled x2, x2
    np.testing.assert_allclose(dets[0].boxes, [[0, 0, 64, 64]], atol=1e-4)
    assert dets[0].class_ids.tolist() == [0]
    np.testing.assert_allclose(dets[0].scores, [0.7])
    # image 1: (20-8, 12-16, 20+8, 12+0) -> clip y1 to 0 -> scale x1, y2
    np.testing.assert_allclose(dets[1].boxes, [[12, 0, 28, 24]], atol=1e-4)
    assert dets[1].class_ids.tolist() == [2]


def test_nanodet_shape_mismatch_explains_what_to_fix() -> None:
    spec = InputSpec(width=32, height=32)
    cfg = NanoDetGFLDecoderConfig(
        levels=(NanoDetLevel(stride=8, scores_output="s8", boxes_output="b8"),),
        reg_max=4,
        num_classes=3,
    )
    decoder = NanoDetGFLDecoder(cfg, spec, Postprocess(0.4, 0.5, 100))
    bad = {"s8": np.zeros((1, 15, 3), np.float32), "b8": np.zeros((1, 15, 20), np.float32)}
    with pytest.raises(InferenceError, match="input size, strides"):
        decoder.decode(bad)
    with pytest.raises(InferenceError, match="no output 's8'"):
        decoder.decode({})


def _yolo_config(objectness: bool, channels_first: bool) -> ModelConfig:
    return ModelConfig(
        name="yolo-test",
        path=Path("yolo.onnx"),
        sha256=SHA,
        input=InputSpec(
            width=640,
            height=640,
            channel_order="RGB",
            mean=(0, 0, 0),
            std=(255, 255, 255),
            resize="stretch",
        ),
        decoder=YoloDecoderConfig(
            output="output0", num_classes=3, objectness=objectness, channels_first=channels_first
        ),
        class_names=("person", "car", "truck"),
    )


@pytest.mark.parametrize("channels_first", [False, True])
def test_yolo_v8_style_output(channels_first: bool) -> None:
    rows = np.zeros((2, 6, 7), np.float32)  # 6 boxes of cx, cy, w, h + 3 classes
    rows[0, 0] = [100, 100, 40, 80, 0.9, 0.0, 0.1]
    rows[0, 1] = [102, 101, 40, 80, 0.8, 0.0, 0.0]  # same person, suppressed
    rows[0, 2] = [102, 101, 40, 80, 0.0, 0.6, 0.0]  # same place, another class: kept
    rows[1, 3] = [320, 320, 640, 640, 0.0, 0.0, 0.5]  # whole image
    rows[1, 4] = [10, 10, 4, 4, 0.39, 0.0, 0.0]  # under the threshold
    raw = rows.transpose(0, 2, 1).copy() if channels_first else rows
    decoder = make_decoder(_yolo_config(objectness=False, channels_first=channels_first))
    dets = decoder.decode({"output0": raw}, frame_sizes=np.array([[1280, 640], [320, 320]]))
    assert dets[0].class_ids.tolist() == [0, 1]
    np.testing.assert_allclose(dets[0].scores, [0.9, 0.6])
    np.testing.assert_allclose(dets[0].boxes[0], [160, 60, 240, 140])
    np.testing.assert_allclose(dets[1].boxes, [[0, 0, 320, 320]])
    assert dets[1].class_ids.tolist() == [2]


def test_yolo_v5_style_output_multiplies_objectness() -> None:
    rows = np.zeros((1, 2, 8), np.float32)
    rows[0, 0] = [50, 50, 20, 20, 0.5, 0.9, 0.0, 0.0]  # 0.45 -> kept
    rows[0, 1] = [150, 50, 20, 20, 0.5, 0.7, 0.0, 0.0]  # 0.35 -> dropped
    decoder = make_decoder(_yolo_config(objectness=True, channels_first=False))
    dets = decoder.decode({"output0": rows})
    np.testing.assert_allclose(dets[0].scores, [0.45])
    np.testing.assert_allclose(dets[0].boxes, [[40, 40, 60, 60]])
    with pytest.raises(InferenceError, match="needs 8 values"):
        decoder.decode({"output0": np.zeros((1, 2, 7), np.float32)})


def test_decoder_union_rejects_unknown_type_by_name() -> None:
    with pytest.raises(ValidationError, match="nanodet_gfl"):
        ModelConfig.model_validate(
            {"name": "m", "path": "m.onnx", "sha256": SHA, "decoder": {"type": "ssd"}}
        )


def test_class_names_must_match_num_classes() -> None:
    with pytest.raises(ValidationError, match="num_classes = 80"):
        ModelConfig.model_validate(
            {"name": "m", "path": "m.onnx", "sha256": SHA, "class_names": ["a", "b"]}
        )


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="score_treshold"):
        ModelConfig.model_validate(
            {"name": "m", "path": "m.onnx", "sha256": SHA, "score_treshold": 0.3}
        )
