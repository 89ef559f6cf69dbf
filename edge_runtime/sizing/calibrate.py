"""``edge-runtime size --calibrate``: per-unit costs from short stress tests on this machine.

Each test runs a small profile through :func:`~edge_runtime.sizing.stress.run_stress` (the
real runtime, broker, model and video) and one figure is derived from it, after subtracting
what the earlier tests already explain:

1. idle: one sensor at 0.2 msg/s -> ``idle_cores``, ``base_rss_mb``;
2. messages: one-reading JSON messages, windows of an hour (no summaries during the test)
   -> ``cpu_s_per_msg``, ``broker_cpu_s_per_msg``;
3. summaries: many keys with 1-s windows -> ``cpu_s_per_summary`` (what is left after idle and
   messages, per summary);
4. SenML packs of 20 readings -> ``cpu_s_per_extra_reading``;
5. the messages of (2) through two pipelines -> ``cpu_s_per_extra_pipeline_msg``;
6. many keys at a low rate -> ``rss_mb_per_key``;
7. cameras, per model variant and resolution: two cameras (and four, at the first resolution,
   to split the pipeline's fixed memory from the per-camera share) -> ``cpu_s_per_frame``,
   ``rss_mb_per_camera``, ``camera_fixed_rss_mb``, ``broker_cpu_s_per_frame``. The fixed
   share is that of a pipeline inferring batches of two frames (two cameras or more): for a
   single camera the answer is on the safe side by the second frame's model buffers.

Spool and uplink bytes per summary are measured in this process on the real spool (SQLite)
and envelope codec. ``bytes_per_buffered_reading`` is the window store's layout (an int32 key
and a float64 value per reading, twice while a closing window's arrays are joined), not
measured.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_runtime import __version__
from edge_runtime.clock import ManualClock
from edge_runtime.sizing.calibration import Calibration, CameraCost
from edge_runtime.sizing.profile import CameraGroup, SensorGroup, SiteProfile
from edge_runtime.sizing.stress import Assets, StressResult, run_stress
from edge_runtime.types import Summary
from edge_runtime.uplink.envelope import Envelope, encode_envelopes
from edge_runtime.uplink.spool import CompactionConfig, SiteWrap, SpoolConfig, SyncSpool

__all__ = ["CalibrationPlan", "calibrate"]

BYTES_PER_BUFFERED_READING = 24.0
_STATS = {
    "count": 60.0,
    "missing": 0.0,
    "sum": 1234.5,
    "min": 1.25,
    "max": 40.5,
    "mean": 20.575,
    "stddev": 4.87,
    "p50": 20.5,
    "p95": 29.75,
    "p99": 33.5,
}


@dataclass(frozen=True)
class CalibrationPlan:
    """How long and how hard each stress test runs."""

    warmup: float
    measure: float
    msg_sensors: int  # test 2: sensors at 25 msg/s (80: 2,000 msg/s)
    summary_keys: int  # test 3: keys at 1 msg/s, 1-s windows
    senml_sensors: int  # test 4: sensors at 10 packs/s of 20 readings
    memory_keys: int  # test 6: keys at 0.1 msg/s
    resolutions: tuple[tuple[int, int], ...]
    camera_models: tuple[str, ...]
    camera_fps: float

    @classmethod
    def for_mode(cls, *, quick: bool, camera_models: Sequence[str] = ("fp32",)) -> CalibrationPlan:
        models = tuple(camera_models)
        if quick:
            return cls(
                warmup=1.5,
                measure=3.0,
                msg_sensors=80,
                summary_keys=400,
                senml_sensors=40,
                memory_keys=3000,
                resolutions=((640, 480),),
                camera_models=models,
                camera_fps=2.0,
            )
        return cls(
            warmup=5.0,
            measure=12.0,
            msg_sensors=80,
            summary_keys=2000,
            senml_sensors=100,
            memory_keys=20000,
            resolutions=((640, 480), (768, 576), (1280, 720)),
            camera_models=models,
            camera_fps=3.0,
        )


def _sensors(name: str, **kw: float | int | str) -> SiteProfile:
    return SiteProfile(name=name, sensors=[SensorGroup.model_validate({"name": name, **kw})])


def spool_bytes() -> tuple[float, float]:
    """(bytes per pending summary, bytes per summary after compaction) on the real spool."""
    with tempfile.TemporaryDirectory(prefix="edge-size-spool-") as tmp:
        keys, hours, window = 20, 10, 60.0
        now = 1.7e9
        summaries = [
            Summary("cal", f"sensor-{k:04d}/pm25", t, t + window, _STATS)
            for t in (now - hours * 3600 + i * window for i in range(int(hours * 3600 / window)))
            for k in range(keys)
        ]
        wrap = SiteWrap(site="cal", created_at=now - 7200, version=__version__, config_hash="x")

        def fill(config: SpoolConfig, sub: str) -> tuple[int, int, int]:
            with SyncSpool(config, data_dir=Path(tmp) / sub, clock=ManualClock(now)) as spool:
                empty = spool.stats().disk_bytes
                for i in range(0, len(summaries), 500):
                    spool.append_summaries(summaries[i : i + 500], wrap)
                spool.maintain()
                stats = spool.stats()
                return empty, stats.disk_bytes, stats.depth

        empty, full, depth = fill(SpoolConfig(), "full")
        per = (full - empty) / depth
        cap = max(64 * 1024, int((full - empty) * 0.2 + empty))
        compacting = SpoolConfig(max_bytes=cap, compaction=CompactionConfig(min_age_s=0))
        empty_c, used_c, depth_c = fill(compacting, "compacted")
        per_compacted = (used_c - empty_c) / max(depth_c, 1)
    return per, per_compacted


def uplink_bytes(batch: int = 100, topic: str = "edge/site-0001/summaries") -> float:
    """Bytes on the wire per summary: msgpack envelopes in messages of ``batch``, plus the MQTT
    PUBLISH header (fixed header, topic, packet id)."""
    envelopes = [
        Envelope.wrap(
            Summary("cal", f"sensor-{k:04d}/pm25", 1.7e9, 1.7e9 + 60, _STATS),
            site="site-0001",
            seq=k,
            created_at=1.7e9,
            version=__version__,
            config_hash="0" * 16,
        )
        for k in range(batch)
    ]
    payload = encode_envelopes(envelopes, "msgpack")
    return (len(payload) + 2 + len(topic) + 2 + 4) / batch


def calibrate(
    plan: CalibrationPlan,
    assets: Assets | None,
    *,
    progress: Callable[[str], None] = print,
) -> Calibration:
    def run(label: str, profile: SiteProfile) -> StressResult:
        t = time.monotonic()
        r = run_stress(profile, warmup=plan.warmup, measure=plan.measure, assets=assets)
        progress(
            f"  {label:<34} {r.runtime_cores:5.2f} cores, RSS {r.rss_mb:6.1f} MiB, "
            f"{r.msgs_per_s:8,.0f} msg/s, {r.summaries_per_s:7,.0f} summaries/s, "
            f"{r.frames_per_s:5.1f} frames/s ({time.monotonic() - t:.0f} s)"
        )
        return r

    idle = run("idle", _sensors("idle", count=1, msg_per_s=0.2))
    msgs = run(
        "JSON messages, 1-h windows",
        _sensors("msgs", count=plan.msg_sensors, msg_per_s=25, window_s=3600),
    )
    per_msg = max(msgs.runtime_cores - idle.runtime_cores, 0.0) / msgs.msgs_per_s
    broker_per_msg = msgs.broker_cores / msgs.msgs_per_s
    summ = run(
        "1-s windows (summaries)",
        _sensors("summaries", count=plan.summary_keys, msg_per_s=1, window_s=1),
    )
    left = summ.runtime_cores - idle.runtime_cores - summ.msgs_per_s * per_msg
    per_summary = max(left, 0.0) / max(summ.summaries_per_s, 1e-9)
    senml = run(
        "SenML packs of 20 readings",
        _sensors(
            "senml",
            count=plan.senml_sensors,
            msg_per_s=10,
            format="senml",
            readings_per_msg=20,
            keys_per_sensor=20,
            window_s=3600,
        ),
    )
    left = senml.runtime_cores - idle.runtime_cores - senml.msgs_per_s * per_msg
    per_reading = max(left, 0.0) / max(senml.readings_per_s - senml.msgs_per_s, 1e-9)
    two = run(
        "JSON messages, two pipelines",
        _sensors("two", count=plan.msg_sensors, msg_per_s=25, window_s=3600, pipelines=2),
    )
    left = two.runtime_cores - idle.runtime_cores - two.msgs_per_s * per_msg
    per_pipeline = max(left, 0.0) / max(two.msgs_per_s, 1e-9)
    many = run(
        f"{plan.memory_keys:,} keys, memory",
        _sensors("keys", count=plan.memory_keys, msg_per_s=0.1, window_s=3600),
    )
    held = many.messages_total * BYTES_PER_BUFFERED_READING / 2**20
    per_key = max(many.rss_mb - idle.rss_mb - held, 0.0) / plan.memory_keys
    cameras: list[CameraCost] = []
    fixed: dict[str, float] = {}
    broker_per_frame = 0.0
    if assets is not None:
        for variant in plan.camera_models:
            for i, (w, h) in enumerate(plan.resolutions):

                def cams(n: int, w: int = w, h: int = h, variant: str = variant) -> SiteProfile:
                    group = CameraGroup(
                        name="cams",
                        count=n,
                        width=w,
                        height=h,
                        fps=plan.camera_fps,
                        model=variant,
                    )
                    return SiteProfile(name="cams", cameras=[group])

                two_cams = run(f"2 cameras {w}x{h} {variant}", cams(2))
                frames = max(two_cams.frames_per_s, 1e-9)
                cpu = max(two_cams.runtime_cores - idle.runtime_cores, 0.0) / frames
                broker_per_frame = max(broker_per_frame, two_cams.broker_cores / frames)
                if i == 0:
                    # from two cameras on, batches of two frames are inferred: the model's
                    # buffers for them are part of the fixed share, not of each camera
                    four = run(f"4 cameras {w}x{h} {variant}", cams(4))
                    per_cam = max(four.rss_mb - two_cams.rss_mb, 0.0) / 2
                    fixed[variant] = max(two_cams.rss_mb - idle.rss_mb - 2 * per_cam, 0.0)
                else:
                    per_cam = max(two_cams.rss_mb - idle.rss_mb - fixed[variant], 0.0) / 2
                cameras.append(
                    CameraCost(
                        width=w,
                        height=h,
                        model=variant,
                        cpu_s_per_frame=cpu,
                        rss_mb_per_camera=per_cam,
                        fps_measured=two_cams.frames_per_s,
                    )
                )
    per_summary_bytes, per_compacted_bytes = spool_bytes()
    return Calibration(
        created_at=time.time(),
        host=socket.gethostname(),
        cpus=os.cpu_count() or 1,
        quick=plan.warmup < 5,
        idle_cores=idle.runtime_cores,
        base_rss_mb=idle.rss_mb,
        cpu_s_per_msg=per_msg,
        cpu_s_per_extra_reading=per_reading,
        cpu_s_per_extra_pipeline_msg=per_pipeline,
        cpu_s_per_summary=per_summary,
        broker_cpu_s_per_msg=broker_per_msg,
        broker_cpu_s_per_frame=broker_per_frame,
        rss_mb_per_key=per_key,
        bytes_per_buffered_reading=BYTES_PER_BUFFERED_READING,
        camera_fixed_rss_mb=fixed,
        cameras=cameras,
        spool_bytes_per_summary=per_summary_bytes,
        spool_bytes_per_compacted_summary=per_compacted_bytes,
        uplink_bytes_per_summary=uplink_bytes(),
    )
