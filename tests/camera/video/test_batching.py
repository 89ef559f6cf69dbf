"""Batch buffers filled in decode threads, and the engine driving the real model (no broker)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from edge_runtime.camera import (
    BatchBuffer,
    BatchEngine,
    DetectorModel,
    Frame,
    FrameLimits,
    FrameResult,
    FrameSlots,
    Normaliser,
    decode_jpeg,
    prepare_batch,
)
from tests.camera.video._helpers import assert_same, direct_detections


def _jpeg_frame(camera: str, ts: float, jpeg: bytes) -> Frame:
    return Frame(camera, ts, ts, jpeg=jpeg)


def _normalised(model: DetectorModel, jpeg: bytes) -> np.ndarray:
    spec = model.config.input
    out = np.empty((3, spec.height, spec.width), np.float32)
    Normaliser(spec)(decode_jpeg(jpeg, FrameLimits()), out)
    return out


async def test_bad_frame_never_leaves_old_pixels_in_the_batch(
    model: DetectorModel, clip_jpegs: list[bytes]
) -> None:
    buffer = BatchBuffer(4, model.config.input)
    frames_1 = [_jpeg_frame(c, 0.0, clip_jpegs[i]) for c, i in (("a", 0), ("b", 1), ("c", 2))]
    truncated = clip_jpegs[10][:3000]
    frames_2 = [
        _jpeg_frame("a", 1.0, truncated),  # slot 0 still holds frame 0 of camera a
        _jpeg_frame("b", 1.0, clip_jpegs[11]),
        _jpeg_frame("c", 1.0, b"\x00not an image"),
        _jpeg_frame("d", 1.0, clip_jpegs[13]),
    ]
    with ThreadPoolExecutor(2) as pool:
        first = await prepare_batch(0, frames_1, buffer, pool, FrameLimits())
        assert len(first.good) == 3
        second = await prepare_batch(1, frames_2, buffer, pool, FrameLimits())
    assert [f.camera for f in second.good] == ["b", "d"]
    assert [(r.frame.camera, r.error) for r in second.rejected] == [
        ("a", "truncated"),
        ("c", "not_jpeg"),
    ]
    assert second.tensor.shape[0] == 2
    np.testing.assert_array_equal(second.tensor[0], _normalised(model, clip_jpegs[11]))
    np.testing.assert_array_equal(second.tensor[1], _normalised(model, clip_jpegs[13]))
    assert second.sizes.tolist() == [[768, 576], [768, 576]]


async def test_engine_hands_back_every_frame_in_order_with_direct_detections(
    model: DetectorModel, clip_jpegs: list[bytes]
) -> None:
    cameras = ["a", "b", "c"]
    slots = FrameSlots(cameras)
    engine = BatchEngine(
        model, slots, max_batch=4, max_wait_s=0.005, decode_threads=2, limits=FrameLimits()
    )
    got: list[FrameResult] = []

    async def collect(results: Sequence[FrameResult]) -> None:
        got.extend(results)

    runner = asyncio.create_task(engine.run(collect))
    picks = [20, 40, 60, 80]
    for step, index in enumerate(picks):
        for camera in cameras:
            slots.put(_jpeg_frame(camera, float(step), clip_jpegs[index]))
        await asyncio.sleep(0)
    slots.put(_jpeg_frame("a", 99.0, b"garbage"))
    slots.close()
    await asyncio.wait_for(runner, 60)

    want = dict(zip(picks, direct_detections(model, [clip_jpegs[i] for i in picks]), strict=True))
    analysed = [r for r in got if r.detections is not None]
    for camera in cameras:
        mine = [r for r in analysed if r.frame.camera == camera]
        ts = [r.frame.ts for r in mine]
        assert ts == sorted(ts)  # per-camera order survives batching
        for result in mine:
            assert result.detections is not None
            assert_same(result.detections, want[picks[int(result.frame.ts)]])
    bad = [r for r in got if r.error is not None]
    assert [(r.frame.camera, r.error) for r in bad] == [("a", "not_jpeg")]
    assert len(got) + slots.skipped == len(picks) * len(cameras) + 1
    assert engine.stats.frames_inferred == len(analysed)
    assert sum(engine.in_flight.values()) == 0
