"""OpenCV sources: the committed cut as a camera through a real site, and reconnecting."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from edge_runtime.broker import MosquittoProcess
from edge_runtime.camera import Frame, OpenCVSource, is_live_url
from edge_runtime_pipelines.camera import CameraPipeline
from tests.camera.video._helpers import VIDEO, camera_pipeline, wait_until
from tests.support import Collector, load, running_site, site_toml

FILE_CAMERA = f"""
[[pipelines.cameras]]
id = "lawn"
url = "{VIDEO}"
max_fps = 2
realtime = false
"""


async def test_video_file_with_fps_cap_produces_summaries(
    site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    # 120 frames at 10 fps = 12 s of media time; capped at 2 fps: 24 frames are analysed
    pipeline_toml = camera_pipeline(FILE_CAMERA, extra='topics = ["cams/control"]\nwindow_s = 4')
    loaded = load(site_toml(site_broker, core_broker, tmp_path, pipeline_toml))
    async with Collector(core_broker) as collector, running_site(loaded) as site:
        pipeline = site.runtime.slots[0].pipeline
        assert isinstance(pipeline, CameraPipeline)
        source = pipeline.sources["lawn"]
        await wait_until(lambda: source.state == "ended", timeout=30)
        await wait_until(lambda: pipeline.stats.frames_inferred == source.frames_read)
        await site.stop()
        await collector.wait_for(
            lambda envs: sum(e.stats["frames"] for e in envs if e.kind == "summary") >= 24
        )
    assert source.frames_read == 24
    assert source.frames_sampled_out == 96
    assert pipeline.stats.frames_skipped == 0  # realtime = false: the reader waits, never skips
    summaries = [e for e in collector.envelopes if e.kind == "summary"]
    assert {e.key for e in summaries} == {"lawn"}
    assert 3 <= len(summaries) <= 4  # 12 s of media time in 4 s windows (unaligned start)
    assert sum(e.stats["frames"] for e in summaries) == 24
    assert sum(e.stats["frames.sampled_out"] for e in summaries) == 96
    frames = sum(e.stats["frames"] for e in summaries)
    persons = sum(e.stats["frames"] * e.stats["count.person.mean"] for e in summaries)
    assert 4.0 <= persons / frames <= 7.0


def test_missing_source_is_retried_with_backoff_until_stopped(tmp_path: Path) -> None:
    got: list[Frame] = []
    source = OpenCVSource(
        "gone",
        str(tmp_path / "not-there.avi"),
        deliver=got.append,
        reconnect_min_s=0.01,
        reconnect_max_s=0.04,
    )
    loop = asyncio.new_event_loop()
    try:
        source.start(loop)
        deadline = time.monotonic() + 5
        while source.open_failures < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert source.open_failures >= 3
        assert source.state in {"reconnecting", "connecting"}
        source.stop()
        assert source.join(2.0)
        assert source.state == "stopped"
        assert got == []
    finally:
        loop.close()


def test_live_urls_are_told_from_files() -> None:
    assert is_live_url("rtsp://10.0.0.2/stream1")
    assert is_live_url("http://cam.local/mjpeg")
    assert is_live_url("0")
    assert not is_live_url("clips/lawn.avi")
    assert not is_live_url(str(VIDEO))
