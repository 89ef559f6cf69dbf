"""The committed NanoDet-m model on the committed video cut."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.camera import (
    COCO_CLASSES,
    Detections,
    DetectorModel,
    FrameBatch,
    InputSpec,
    ModelChecksumError,
    ModelConfig,
    ModelLoadError,
    SessionConfig,
    SessionLayout,
    autotune,
    clear_model_cache,
    file_sha256,
    get_model,
)

PERSON, CAR, TRUCK = 0, 2, 7


def _batch(model: DetectorModel, frames: list[np.ndarray]) -> FrameBatch:
    batch = FrameBatch(len(frames), model.config.input)
    for frame in frames:
        batch.add_image(frame)
    return batch


def _assert_same(a: Detections, b: Detections) -> None:
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.class_ids, b.class_ids)
    np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-5)
    np.testing.assert_allclose(a.boxes, b.boxes, rtol=0, atol=1e-2)


def test_committed_file_matches_declared_hash(
    repo_root: Path, make_config: Callable[..., ModelConfig]
) -> None:
    config = make_config()
    assert file_sha256(config.resolved_path(repo_root)) == config.sha256


def test_batch_of_four_equals_four_single_runs(
    model: DetectorModel, frames: list[np.ndarray]
) -> None:
    picked = [frames[i] for i in (0, 30, 60, 90)]
    batch = _batch(model, picked)
    raw_batch = model.run_raw(batch.tensor)
    batched = model.infer(batch.tensor, batch.frame_sizes)
    assert len(batched) == 4
    for i in range(4):
        raw_one = model.run_raw(batch.tensor[i : i + 1])
        for name, value in raw_one.items():
            assert raw_batch[name].shape[0] == 4
            np.testing.assert_allclose(raw_batch[name][i : i + 1], value, rtol=0, atol=1e-5)
        single = model.infer(batch.tensor[i : i + 1], batch.frame_sizes[i : i + 1])
        _assert_same(batched[i], single[0])


def test_batches_above_max_batch_are_split(model: DetectorModel, frames: list[np.ndarray]) -> None:
    batch = _batch(model, frames[:6])
    assert model.max_batch < 6
    results = model.infer(batch.tensor, batch.frame_sizes)
    assert len(results) == 6
    _assert_same(results[5], model.infer(batch.tensor[5:6], batch.frame_sizes[5:6])[0])


@pytest.mark.parametrize(
    ("resize", "person_scores"),
    [("letterbox", [0.83, 0.79, 0.77]), ("stretch", [0.80, 0.76, 0.73])],
)
def test_frame_zero_finds_three_people_the_van_and_the_car(
    repo_root: Path,
    make_config: Callable[..., ModelConfig],
    frames: list[np.ndarray],
    resize: str,
    person_scores: list[float],
) -> None:
    model = get_model(make_config(input=InputSpec(resize=resize)), repo_root)
    dets = model.infer(*_as_args(_batch(model, frames[:1])))[0]
    people = dets.select(dets.class_ids == PERSON)
    assert len(people) == 3
    np.testing.assert_allclose(np.sort(people.scores)[::-1], person_scores, atol=0.02)
    assert TRUCK in dets.class_ids.tolist()  # the parked van
    assert CAR in dets.class_ids.tolist()
    # boxes are in frame pixels of the 768x576 frame and ordered best first
    assert np.all(dets.boxes[:, [0, 2]] <= 768)
    assert np.all(dets.boxes[:, [1, 3]] <= 576)
    assert np.all(dets.boxes[:, 2] > dets.boxes[:, 0])
    assert np.all(dets.boxes[:, 3] > dets.boxes[:, 1])
    assert np.all(np.diff(dets.scores) <= 0)
    assert np.all(dets.scores >= model.config.score_threshold)
    # the van sits in the top right corner of the frame
    van = dets.boxes[dets.class_ids == TRUCK][0]
    assert van[0] > 600
    assert van[3] < 120


def _as_args(batch: FrameBatch) -> tuple[np.ndarray, np.ndarray]:
    return batch.tensor, batch.frame_sizes


def test_people_per_frame_over_the_cut(cut_detections: list[Detections]) -> None:
    people = np.array([int((d.class_ids == PERSON).sum()) for d in cut_detections])
    assert len(people) == 120
    # the whole clip averages about 5.8 people per frame; the first 12 s show 3 to 9
    assert 3.5 <= people.mean() <= 8.0
    assert people.min() >= 2
    assert people.max() <= 10
    vehicles = np.array([int(np.isin(d.class_ids, [CAR, TRUCK]).sum()) for d in cut_detections])
    assert 1.0 <= vehicles.mean() <= 3.0
    seen = {COCO_CLASSES[c] for d in cut_detections for c in d.class_ids.tolist()}
    assert {"person", "car", "truck"} <= seen


def test_sha256_mismatch_names_file_and_both_hashes(
    tmp_path: Path, repo_root: Path, make_config: Callable[..., ModelConfig]
) -> None:
    good = make_config()
    copy = tmp_path / "model.onnx"
    shutil.copyfile(good.resolved_path(repo_root), copy)
    with copy.open("r+b") as fh:  # flip one byte near the end of the weights
        fh.seek(-100, 2)
        byte = fh.read(1)
        fh.seek(-100, 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    wrong = make_config(path=Path("model.onnx"))
    with pytest.raises(ModelChecksumError) as info:
        DetectorModel.load(wrong, tmp_path)
    message = str(info.value)
    actual = file_sha256(copy)
    assert str(copy) in message
    assert good.sha256 in message
    assert actual in message
    assert info.value.expected == good.sha256
    assert info.value.actual == actual
    assert "sha256" in message


def test_missing_file_is_a_clear_load_error(
    tmp_path: Path, make_config: Callable[..., ModelConfig]
) -> None:
    with pytest.raises(ModelLoadError, match="cannot read the file"):
        DetectorModel.load(make_config(path=Path("nope.onnx")), tmp_path)


def test_get_model_loads_once_and_shares(
    repo_root: Path, make_config: Callable[..., ModelConfig], model: DetectorModel
) -> None:
    assert get_model(make_config(), repo_root) is model
    other = make_config(score_threshold=0.5)
    try:
        assert get_model(other, repo_root) is not model
    finally:
        clear_model_cache()
    assert get_model(make_config(), repo_root) is not model  # a fresh load after clearing


def test_autotune_times_candidates_and_picks_the_fastest(
    repo_root: Path,
    make_config: Callable[..., ModelConfig],
    model: DetectorModel,
    frames: list[np.ndarray],
) -> None:
    config = make_config(session=SessionConfig(layout="auto", autotune_seconds=0.2, max_batch=2))
    sample = _batch(model, frames[:2]).tensor
    candidates = [
        SessionLayout(sessions=1, intra_op_threads=2),
        SessionLayout(sessions=2, intra_op_threads=1),
    ]
    result = autotune(config, repo_root, sample, candidates)
    assert [t.layout for t in result.timings] == candidates
    assert all(t.images_per_s > 0 for t in result.timings)
    assert result.best == max(result.timings, key=lambda t: t.images_per_s).layout


def test_auto_layout_is_resolved_at_load(
    repo_root: Path,
    make_config: Callable[..., ModelConfig],
    model: DetectorModel,
    frames: list[np.ndarray],
) -> None:
    config = make_config(session=SessionConfig(layout="auto", autotune_seconds=0.2, max_batch=2))
    loaded = DetectorModel.load(config, repo_root, _batch(model, frames[:2]).tensor)
    assert isinstance(loaded.layout, SessionLayout)
    assert loaded.concurrency == loaded.layout.sessions
    assert len(loaded.infer(_batch(model, frames[:1]).tensor)) == 1
