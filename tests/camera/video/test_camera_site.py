"""The camera pipeline in a real site: JPEG frames over a real mosquitto, summaries on the core.

The clip test publishes the 120 frames of the committed cut for two cameras and checks that the
detections computed inside the runtime equal the model run directly on the same JPEG bytes, and
that the person count the summaries report is what the footage shows.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import msgpack
import numpy as np
import pytest

from edge_runtime.broker import MosquittoProcess
from edge_runtime.camera import Detections, DetectorModel, FrameResult
from edge_runtime.uplink import Envelope
from edge_runtime_pipelines.camera import CameraPipeline
from tests.camera.video._helpers import (
    T0,
    assert_same,
    camera_pipeline,
    direct_detections,
    wait_until,
)
from tests.support import Collector, load, running_site, site_toml

PERSON = 0
WINDOW = 4.0

TWO_CAMERAS = """
[[pipelines.cameras]]
id = "a"
topic = "cams/a/jpeg"

[[pipelines.cameras]]
id = "b"
topic = "cams/b/jpeg"
"""


def _frame(ts: float, jpeg: bytes) -> bytes:
    return msgpack.packb({"ts": ts, "jpeg": jpeg})


def _pipeline(site: object) -> CameraPipeline:
    pipeline = site.runtime.slots[0].pipeline  # type: ignore[attr-defined]
    assert isinstance(pipeline, CameraPipeline)
    return pipeline


# -- 1 and 2: the whole cut through the runtime ----------------------------------------------


class ClipRun:
    def __init__(self) -> None:
        self.results: list[FrameResult] = []
        self.envelopes: list[Envelope] = []
        self.gauges: dict[str, float] = {}
        self.skipped = -1


async def _run_clip(jpegs: list[bytes], tmp: Path) -> ClipRun:
    """Camera a gets the cut in order, camera b in reverse; one pair of frames is published
    as soon as the previous pair has been taken for inference, so none is skipped."""
    run = ClipRun()
    with MosquittoProcess() as site_broker, MosquittoProcess() as core_broker:
        pipeline_toml = camera_pipeline(TWO_CAMERAS, extra=f"window_s = {WINDOW}")
        loaded = load(site_toml(site_broker, core_broker, tmp, pipeline_toml))
        async with Collector(core_broker) as collector, running_site(loaded) as site:
            pipeline = _pipeline(site)
            pipeline.detections_sink = run.results.append
            n = len(jpegs)
            async with aiomqtt.Client("127.0.0.1", site_broker.port) as client:
                for i in range(n):
                    ts = T0 + i * 0.1
                    await client.publish("cams/a/jpeg", _frame(ts, jpegs[i]), qos=1)
                    await client.publish("cams/b/jpeg", _frame(ts, jpegs[n - 1 - i]), qos=1)
                    await wait_until(lambda i=i: pipeline.slots.taken >= 2 * (i + 1))
            await wait_until(lambda: len(run.results) == 2 * n, timeout=60)
            run.gauges = pipeline.gauges()
            run.skipped = pipeline.stats.frames_skipped
            await site.stop()
            expected = 2 * int(np.ceil(n * 0.1 / WINDOW))
            await collector.wait_for(lambda envs: len(envs) >= expected)
            run.envelopes = list(collector.envelopes)
    return run


@pytest.fixture(scope="module")
def clip_run(clip_jpegs: list[bytes], tmp_path_factory: pytest.TempPathFactory) -> ClipRun:
    return asyncio.run(_run_clip(clip_jpegs, tmp_path_factory.mktemp("clip")))


@pytest.fixture(scope="module")
def reference(model: DetectorModel, clip_jpegs: list[bytes]) -> list[Detections]:
    return direct_detections(model, clip_jpegs)


def test_runtime_detections_equal_direct_model_output(
    clip_run: ClipRun, reference: list[Detections]
) -> None:
    n = len(reference)
    assert clip_run.skipped == 0
    by_camera: dict[str, dict[int, FrameResult]] = {"a": {}, "b": {}}
    for result in clip_run.results:
        index = round((result.frame.ts - T0) / 0.1)
        by_camera[result.frame.camera][index] = result
    assert sorted(by_camera["a"]) == list(range(n))
    assert sorted(by_camera["b"]) == list(range(n))
    for i in range(n):
        a = by_camera["a"][i]
        b = by_camera["b"][i]
        assert a.frame_size == b.frame_size == (768, 576)
        assert a.detections is not None and b.detections is not None
        assert_same(a.detections, reference[i])
        assert_same(b.detections, reference[n - 1 - i])


def test_person_count_over_the_clip_is_what_the_footage_shows(
    clip_run: ClipRun, reference: list[Detections]
) -> None:
    direct_mean = float(np.mean([int((d.class_ids == PERSON).sum()) for d in reference]))
    assert 4.5 <= direct_mean <= 6.5  # the cut shows 5-6 people walking on average
    windows = [e for e in clip_run.envelopes if e.kind == "summary"]
    for camera in ("a", "b"):
        mine = sorted((e for e in windows if e.key == camera), key=lambda e: e.window_start)
        assert [e.window_start for e in mine] == [T0, T0 + WINDOW, T0 + 2 * WINDOW]
        frames = np.array([e.stats["frames"] for e in mine], float)
        means = np.array([e.stats["count.person.mean"] for e in mine], float)
        assert frames.sum() == len(reference)
        summary_mean = float((frames * means).sum() / frames.sum())
        assert summary_mean == pytest.approx(direct_mean, abs=1e-3)
        assert all(e.stats["count.person.max"] <= 12 for e in mine)
        assert all(3 <= e.stats["tracks.person.unique"] <= 30 for e in mine)
        assert all(e.stats["frames.skipped"] == 0 for e in mine)
        assert all(e.stats["latency.p99_ms"] is not None for e in mine)
        assert mine[0].pipeline == "cams"
    assert clip_run.gauges["latency_p50_ms"] > 0
    assert clip_run.gauges["latency_p99_ms"] >= clip_run.gauges["latency_p50_ms"]
    assert clip_run.gauges["mean_batch_size"] >= 1.0


# -- 3: bad frames -----------------------------------------------------------------------------


def _bad_payloads(good: bytes) -> list[tuple[str, bytes]]:
    import cv2

    tiny = cv2.imencode(".jpg", np.full((1, 1, 3), 200, np.uint8))[1].tobytes()
    huge = cv2.imencode(".jpg", np.zeros((2400, 4000, 3), np.uint8))[1].tobytes()
    png = cv2.imencode(".png", np.full((32, 32, 3), 90, np.uint8))[1].tobytes()
    sos = good.index(b"\xff\xda")
    corrupt = bytearray(good)
    corrupt[sos + 4 : sos + 12] = b"\xee" * 8
    noise = np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8)
    noise[0] = 0x42  # random bytes starting with 80-8F/DE/DF would be taken for msgpack
    return [
        ("truncated", good[: len(good) // 2]),
        ("corrupt", bytes(corrupt)),
        ("not_jpeg", noise.tobytes()),
        ("not_jpeg", png),
        ("bad_size", tiny),
        ("too_large", huge),
        ("no_jpeg", msgpack.packb({"ts": 1.0, "image": b"\xff\xd8"})),
        ("bad_msgpack", b"\x85\xa2ts"),
        ("empty", b""),
    ]


async def test_bad_frames_are_counted_and_skipped_and_never_reuse_pixels(
    site_broker: MosquittoProcess,
    core_broker: MosquittoProcess,
    tmp_path: Path,
    clip_jpegs: list[bytes],
    model: DetectorModel,
) -> None:
    first, after = clip_jpegs[0], clip_jpegs[60]
    want_first, want_after = direct_detections(model, [first, after])
    assert len(want_first) > 0
    bad = _bad_payloads(after)
    results: list[FrameResult] = []
    loaded = load(site_toml(site_broker, core_broker, tmp_path, camera_pipeline(TWO_CAMERAS)))
    async with running_site(loaded) as site:
        pipeline = _pipeline(site)
        pipeline.detections_sink = results.append

        def accounted() -> int:
            return pipeline.stats.frames_inferred + sum(pipeline.stats.frames_bad.values())

        async with aiomqtt.Client("127.0.0.1", site_broker.port) as client:
            await client.publish("cams/a/jpeg", first, qos=1)
            await wait_until(lambda: accounted() == 1)
            for i, (_, payload) in enumerate(bad):
                # each bad frame follows a good one of camera a, so stale pixels would show
                await client.publish("cams/a/jpeg", payload, qos=1)
                await wait_until(lambda i=i: accounted() == 2 + i)
            await client.publish("cams/a/jpeg", after, qos=1)
            await wait_until(lambda: accounted() == 2 + len(bad))
        counted = dict(pipeline.stats.frames_bad)
        events = dict(pipeline.context.counters)
    expected: dict[str, int] = {}
    for reason, _ in bad:
        expected[reason] = expected.get(reason, 0) + 1
    assert counted == expected
    assert events["frames_bad_truncated"] == 1
    assert events["frames_in"] == len(bad) + 2
    # only the two good frames produced detections, each its own
    assert len(results) == 2
    assert results[0].detections is not None and results[1].detections is not None
    assert_same(results[0].detections, want_first)
    assert_same(results[1].detections, want_after)
    assert site.task.done() and site.task.exception() is None


# -- 4: latest frame wins ----------------------------------------------------------------------


async def test_flooded_camera_keeps_only_its_latest_frame(
    site_broker: MosquittoProcess,
    core_broker: MosquittoProcess,
    tmp_path: Path,
    clip_jpegs: list[bytes],
) -> None:
    n = 150
    loaded = load(
        site_toml(
            site_broker, core_broker, tmp_path, camera_pipeline(TWO_CAMERAS), ingest="qos = 0"
        )
    )
    async with running_site(loaded) as site:
        pipeline = _pipeline(site)
        engine_ready = asyncio.Event()
        peak = {"pending": 0.0, "in_flight": 0.0}

        async def watch() -> None:
            while True:
                gauges = pipeline.gauges()
                peak["pending"] = max(peak["pending"], gauges["pending_frames"])
                peak["in_flight"] = max(peak["in_flight"], gauges["in_flight_frames"])
                if pipeline.engine is not None:
                    engine_ready.set()
                await asyncio.sleep(0.002)

        watcher = asyncio.create_task(watch())
        await asyncio.wait_for(engine_ready.wait(), 10)
        async with aiomqtt.Client("127.0.0.1", site_broker.port) as client:
            for i in range(n):
                await client.publish("cams/a/jpeg", _frame(T0 + i * 0.01, clip_jpegs[i % 120]))
        stats = pipeline.stats
        await wait_until(lambda: stats.frames_in == n)
        await wait_until(lambda: stats.frames_inferred + stats.frames_skipped == n)
        watcher.cancel()
        assert pipeline.engine is not None
        capacity = pipeline.engine.buffers * pipeline.engine.max_batch
    assert stats.frames_skipped > 0
    assert stats.frames_inferred < n / 2  # the flood went far faster than inference
    assert peak["pending"] <= 1  # one camera: at most one frame waiting
    assert peak["in_flight"] <= capacity
    assert pipeline.context.counters["frames_skipped"] == stats.frames_skipped
