"""Frame payloads, the per-camera rate cap and the latest-frame-wins slots / batch former."""

from __future__ import annotations

import asyncio
import time

import msgpack
import numpy as np
import pytest

from edge_runtime.camera import FpsSampler, Frame, FrameSlots, LatencyTracker, parse_payload
from edge_runtime.camera.frames import PayloadError

JPEG_START = b"\xff\xd8\xff\xe0" + b"\x00" * 16


def _frame(camera: str, ts: float = 0.0) -> Frame:
    return Frame(camera, ts, ts, jpeg=JPEG_START)


# -- payloads ----------------------------------------------------------------------------------


def test_raw_jpeg_passes_through_untouched() -> None:
    assert parse_payload(JPEG_START) == (None, JPEG_START)


def test_msgpack_envelope_gives_capture_time_and_jpeg() -> None:
    payload = msgpack.packb({"ts": 1_700_000_000.25, "jpeg": JPEG_START})
    assert parse_payload(payload) == (1_700_000_000.25, JPEG_START)
    assert parse_payload(msgpack.packb({"jpeg": JPEG_START})) == (None, JPEG_START)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (msgpack.packb({"ts": 1.0}), "no_jpeg"),
        (msgpack.packb({"ts": 1.0, "jpeg": "not bytes"}), "no_jpeg"),
        (msgpack.packb({"ts": "noon", "jpeg": JPEG_START}), "bad_ts"),
        (msgpack.packb({"ts": float("nan"), "jpeg": JPEG_START}), "bad_ts"),
        (msgpack.packb({"ts": True, "jpeg": JPEG_START}), "bad_ts"),
        (b"\x82\xa2ts", "bad_msgpack"),
        (msgpack.packb({"ts": 1.0, "jpeg": JPEG_START}) + b"\x00", "bad_msgpack"),
    ],
)
def test_broken_envelopes_name_their_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        parse_payload(payload)
    assert info.value.reason == reason


def test_png_and_random_bytes_are_left_to_the_jpeg_check() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 30
    assert parse_payload(png) == (None, png)
    assert parse_payload(b"hello") == (None, b"hello")


# -- rate cap ----------------------------------------------------------------------------------


def test_fps_cap_keeps_every_third_frame_of_a_30fps_stream() -> None:
    sampler = FpsSampler(10)
    kept = [i for i in range(300) if sampler.accept(100.0 + i / 30)]
    assert kept == list(range(0, 300, 3))


def test_fps_cap_at_the_stream_rate_keeps_jittery_frames() -> None:
    rng = np.random.default_rng(1)
    times = 100.0 + np.arange(200) * 0.1 + rng.uniform(-0.008, 0.008, 200)
    sampler = FpsSampler(10)
    assert sum(sampler.accept(float(t)) for t in times) == 200


def test_fps_cap_bounds_the_rate_over_any_stretch() -> None:
    rng = np.random.default_rng(2)
    times = np.sort(rng.uniform(0, 60, 3000))
    sampler = FpsSampler(5)
    kept = np.array([t for t in times if sampler.accept(float(t))])
    for start in np.arange(0, 55, 0.7):
        assert ((kept >= start) & (kept < start + 5)).sum() <= 5 * 5 + 1
    assert len(kept) >= 0.95 * 60 * 5


def test_no_cap_keeps_everything() -> None:
    sampler = FpsSampler(None)
    assert all(sampler.accept(1.0) for _ in range(10))


# -- slots and the batch former -------------------------------------------------------------


async def test_newer_frame_replaces_the_pending_one_and_keeps_its_place() -> None:
    slots = FrameSlots(["a", "b", "c"])
    assert not slots.put(_frame("b", 1.0))
    assert not slots.put(_frame("a", 1.0))
    assert slots.put(_frame("b", 2.0))
    assert slots.skipped == 1
    assert len(slots) == 2
    frames = await slots.take(4, 0.0)
    assert [(f.camera, f.ts) for f in frames] == [("b", 2.0), ("a", 1.0)]


async def test_batch_waits_for_more_cameras_until_the_deadline() -> None:
    slots = FrameSlots(["a", "b", "c"])
    loop = asyncio.get_running_loop()
    slots.put(_frame("a"))
    loop.call_later(0.02, slots.put, _frame("b"))
    started = time.monotonic()
    frames = await slots.take(4, 0.15)
    waited = time.monotonic() - started
    assert [f.camera for f in frames] == ["a", "b"]
    assert waited >= 0.1  # c never came: the deadline (not an earlier wake-up) ended the wait


async def test_batch_goes_as_soon_as_every_camera_or_max_batch_is_in() -> None:
    slots = FrameSlots(["a", "b", "c"])
    for camera in "abc":
        slots.put(_frame(camera))
    started = time.monotonic()
    assert [f.camera for f in await slots.take(2, 120.0)] == ["a", "b"]
    assert [f.camera for f in await slots.take(2, 0.01)] == ["c"]
    assert time.monotonic() - started < 60  # max_batch was in: the 120 s deadline never ran


async def test_first_frame_is_awaited_and_close_drains_then_ends() -> None:
    slots = FrameSlots(["a"])
    waiter = asyncio.create_task(slots.take(4, 0.0))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    slots.put(_frame("a", 5.0))
    assert [f.ts for f in await waiter] == [5.0]
    slots.put(_frame("a", 6.0))
    slots.close()
    assert not slots.put(_frame("a", 7.0))  # refused after close
    assert [f.ts for f in await slots.take(4, 1.0)] == [6.0]
    assert await slots.take(4, 1.0) == []


async def test_unknown_camera_is_refused() -> None:
    with pytest.raises(KeyError):
        FrameSlots(["a"]).put(_frame("zz"))


def test_latency_percentiles_over_the_ring() -> None:
    tracker = LatencyTracker(capacity=100)
    assert all(np.isnan(v) for v in tracker.percentiles(50, 99))
    for i in range(1000):
        tracker.add(i / 1000)
    p50, p99 = tracker.percentiles(50, 99)
    assert len(tracker) == 100
    assert tracker.total == 1000
    assert p50 == pytest.approx(0.9495, abs=1e-3)
    assert p99 == pytest.approx(0.999, abs=1e-3)
