"""``edge-runtime demo``: a site with sensor and camera pipelines, fed real data, through an
uplink outage, with a live dashboard and a closing report.

What runs, all on this machine: a site broker and a core broker (mosquitto, the core one with
persistence so it keeps what it acknowledged across its own restart), the site runtime with a
``windows`` pipeline over the Auckland pedestrian counts and a ``camera`` pipeline over
vtest.avi, and the core receiver. Both feeds are recordings made by the importers and replayed
through the site broker, like any recording. Mid-run the core broker is stopped for a while and
started again; the report checks that every summary the site accepted reached the core.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from edge_runtime.broker.embedded import MosquittoProcess
from edge_runtime.config.loader import parse_config
from edge_runtime.core import CoreConfig, CoreReceiver
from edge_runtime.datasets.akl import ATTRIBUTION as AKL_ATTRIBUTION
from edge_runtime.demo.dashboard import Dashboard
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.mqtt.config import BrokerConfig
from edge_runtime.replay.importers import import_akl
from edge_runtime.replay.player import replay_to_broker
from edge_runtime.runtime.site import SiteRuntime

__all__ = ["DemoOptions", "DemoReport", "run_demo"]

log = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parents[2]
VIDEO = _REPO / "bench" / "data" / "vtest.avi"
VIDEO_ATTRIBUTION = "Video: OpenCV sample data / PETS 2009 (vtest.avi)"
SITE_ID = "demo-site"


@dataclass(frozen=True)
class DemoOptions:
    short: bool = False
    dashboard: bool = True
    outage_s: float | None = None
    workdir: Path | None = None
    camera: bool = True


@dataclass
class DemoReport:
    readings: int = 0
    frames_offered: int = 0
    frames_inferred: int = 0
    frames_skipped: int = 0
    objects_per_class: dict[str, int] = field(default_factory=dict)
    messages_in: int = 0
    bytes_in: int = 0
    summaries_accepted: int = 0
    summaries_sent: int = 0
    uplink_bytes: int = 0
    core_received: int = 0
    core_duplicates: int = 0
    missing_seqs: list[tuple[int, int]] = field(default_factory=list)
    outage_s: float = 0.0
    backlog_sent: int = 0
    open_at_stop: int = 0
    """(key, window) pairs still open when the site stopped"""
    checkpointed: bool = True
    elapsed_s: float = 0.0

    @property
    def lost(self) -> int:
        return max(0, self.summaries_accepted - self.core_received)

    def _objects(self) -> str:
        ranked = sorted(self.objects_per_class.items(), key=lambda kv: (-kv[1], kv[0]))
        return ", ".join(f"{name} {n:,}" for name, n in ranked if n) or "none"

    def render(self) -> str:
        ratio = self.bytes_in / self.uplink_bytes if self.uplink_bytes else float("inf")
        lines = [
            "edge-runtime demo report",
            f"  readings processed          {self.readings:>12,}",
            f"  camera frames offered       {self.frames_offered:>12,}"
            f"   ({self.frames_inferred:,} analysed, {self.frames_skipped:,} skipped: the model "
            "takes the latest frame when it is busy)",
            f"  objects tracked per class   {self._objects()}",
            f"  summaries accepted (spool)  {self.summaries_accepted:>12,}",
            f"  summaries sent by the site  {self.summaries_sent:>12,}"
            f"   ({self.backlog_sent:,} as backlog after the outage)",
            f"  summaries stored at core    {self.core_received:>12,}"
            f"   ({self.core_duplicates:,} duplicates dropped)",
            f"  windows open at the stop    {self.open_at_stop:>12,}   "
            + (
                "(kept in the checkpoint for the next start: not summaries yet)"
                if self.checkpointed
                else "(flushed as partial summaries at the stop)"
            ),
            f"  lost across the {self.outage_s:.0f} s outage {self.lost:>8,}"
            f"   (sequence gaps at the core: {self.missing_seqs or 'none'})",
            f"  bytes in / bytes out        {self.bytes_in:>12,} / {self.uplink_bytes:,}"
            f"   = {ratio:,.0f}x less sent than received",
            f"  run time                    {self.elapsed_s:>11.1f}s",
            f"  data: {AKL_ATTRIBUTION}; {VIDEO_ATTRIBUTION}",
        ]
        return "\n".join(lines)


def _site_config(
    site_port: int, core_port: int, data: Path, camera: bool, video_frames: int
) -> str:
    text = f"""
site_id = "{SITE_ID}"
data_dir = "{data}"
[site_broker]
port = {site_port}
client_id = "demo-site-ingest"
reconnect_max_s = 1.0
[uplink]
encoding = "msgpack"
live_window_s = 5
drain_timeout_s = 30
[uplink.broker]
port = {core_port}
reconnect_min_s = 0.1
reconnect_max_s = 1.0
[ingest]
max_payload_bytes = 2097152
batch_wait_ms = 5
[ops]
http_port = 0
log_format = "text"
log_level = "WARNING"
tick_interval_s = 0.5
shutdown_timeout_s = 60

[[pipelines]]
type = "windows"
name = "akl-pedestrians"
topics = ["akl/ped/+/count"]
decode = {{ format = "json", key = "topic:2" }}
[pipelines.window]
kind = "tumbling"
size_s = 86400
offset_s = 39600
allowed_lateness_s = 7200
late_policy = "correct"
idle_timeout_s = 3
"""
    if camera:
        text += f"""
[[pipelines]]
type = "camera"
name = "street-cam"
window_s = {max(5, video_frames // 40)}
classes = ["person", "car", "truck"]
[pipelines.model]
name = "nanodet-m-coco"
path = "{_REPO / "models/nanodet-m-coco/nanodet_m_coco_fp32_dynbatch.onnx"}"
sha256 = "930839a9a21d5026e3f25a7484400a85f9d890fef0a88649d5459c08ba409e73"
session = {{ layout = {{ sessions = 2, intra_op_threads = 1 }}, max_batch = 4 }}
[pipelines.batch]
max_batch = 2
max_wait_ms = 25
[[pipelines.cameras]]
id = "campus-road"
topic = "cameras/campus-road/frames"
[[pipelines.cameras.zones]]
name = "road"
coords = "normalized"
polygon = [[0.0, 0.45], [1.0, 0.45], [1.0, 1.0], [0.0, 1.0]]
classes = ["person"]
[[pipelines.cameras.lines]]
name = "midline"
coords = "normalized"
start = [0.5, 0.0]
end = [0.5, 1.0]
classes = ["person"]
"""
    return text


def _camera_available() -> bool:
    try:
        import cv2  # noqa: F401, PLC0415
        import onnxruntime  # noqa: F401, PLC0415
    except ImportError:
        return False
    return VIDEO.is_file()


async def run_demo(options: DemoOptions) -> DemoReport:
    if not MosquittoProcess.available():
        raise EdgeRuntimeError("the demo needs the mosquitto binary (apt-get install mosquitto)")
    camera = options.camera and _camera_available()
    outage = options.outage_s if options.outage_s is not None else (4.0 if options.short else 10.0)
    with contextlib.ExitStack() as stack:
        work = options.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        for old in ("site", "core", "site-broker", "core-broker"):  # every demo starts afresh
            shutil.rmtree(work / old, ignore_errors=True)
        days = 10 if options.short else 60
        akl = await asyncio.to_thread(
            import_akl,
            work / "akl.edgerec",
            date(2019, 3, 1),
            date.fromordinal(date(2019, 3, 1).toordinal() + days - 1),
            overwrite=True,
        )
        video = None
        frames = 150 if options.short else 795
        if camera:
            from edge_runtime.replay.importers import import_video  # noqa: PLC0415

            video = await asyncio.to_thread(
                import_video,
                VIDEO,
                work / "video.edgerec",
                "campus-road",
                max_frames=frames,
                overwrite=True,
            )
        site_broker = stack.enter_context(MosquittoProcess(workdir=work / "site-broker"))
        core_broker = MosquittoProcess(persistence=True, workdir=work / "core-broker")
        core_broker.start()
        stack.callback(core_broker.close)
        loaded = parse_config(
            _site_config(site_broker.port, core_broker.port, work / "site", camera, frames),
            source="<demo site>",
        )
        core = CoreReceiver(
            CoreConfig(
                broker=BrokerConfig(
                    port=core_broker.port, reconnect_min_s=0.1, reconnect_max_s=1.0
                ),
                database=work / "core" / "summaries.db",
                http_port=0,
            )
        )
        return await _run(
            options=options,
            loaded=loaded,
            core=core,
            core_broker=core_broker,
            site_broker=site_broker,
            akl_path=akl.path,
            video_path=video.path if video else None,
            outage=outage,
        )
    raise AssertionError("unreachable")  # pragma: no cover


async def _run(
    *,
    options: DemoOptions,
    loaded: Any,
    core: CoreReceiver,
    core_broker: MosquittoProcess,
    site_broker: MosquittoProcess,
    akl_path: Path,
    video_path: Path | None,
    outage: float,
) -> DemoReport:
    started = time.monotonic()
    site = SiteRuntime(loaded)
    report = DemoReport(outage_s=outage)
    dashboard = Dashboard(site, core, live=options.dashboard)
    broker = BrokerConfig(port=site_broker.port)
    async with asyncio.TaskGroup() as tg:
        core_task = tg.create_task(core.run(), name="core-receiver")
        site_task = tg.create_task(site.run(), name="site-runtime")
        await core.wait_started()
        await site.wait_started()
        assert site.site_link is not None
        await site.site_link.wait_connected()
        show = tg.create_task(dashboard.run(), name="dashboard")
        # an hour of counts every 40 ms (short: 25 ms): months of a city in a minute
        speed = 3600 / (0.025 if options.short else 0.04)
        feeds = [tg.create_task(replay_to_broker(akl_path, broker, speed=speed), name="akl-feed")]
        if video_path is not None:
            feeds.append(
                tg.create_task(replay_to_broker(video_path, broker, speed=1.0), name="video-feed")
            )
        await asyncio.sleep(3.0 if options.short else 8.0)
        dashboard.event(f"uplink cut: core broker stopped for {outage:.0f} s")
        core_broker.stop()
        await asyncio.sleep(outage)
        core_broker.start()
        dashboard.event("uplink restored: the spool drains its backlog")
        for feed in feeds:
            await feed
        await asyncio.sleep(4.0)  # idle windows close
        site.stop()
        await site_task
        uplink = site.stats.uplink() if site.stats.uplink else {}
        accepted = int(uplink.get("appended", 0))
        try:
            async with asyncio.timeout(30):
                # the core has no "caught up" event: look every 100 ms
                while _received(core) < accepted:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        except TimeoutError:
            dashboard.event("the core did not receive everything within 30 s (see the report)")
        dashboard.stop()
        await show
        report.objects_per_class = _objects_per_class(core)  # read before the store closes
        core.stop()
        await core_task
    _fill(report, site, core, uplink, started)
    print(report.render(), file=sys.stdout, flush=True)
    return report


def _fill(
    report: DemoReport,
    site: SiteRuntime,
    core: CoreReceiver,
    uplink: dict[str, Any],
    started: float,
) -> None:
    stats = site.stats
    progress = core.sites.get(SITE_ID)
    report.readings = sum(stats.readings_in.values())
    report.messages_in = stats.messages_in
    report.bytes_in = stats.bytes_in
    cam_events = stats.pipeline_events.get("street-cam")
    if cam_events:
        report.frames_offered = cam_events["frames_in"]
        report.frames_inferred = cam_events["frames_inferred"]
        report.frames_skipped = cam_events["frames_skipped"]
    report.summaries_accepted = int(uplink.get("appended", 0))
    report.summaries_sent = int(uplink.get("sent", 0))
    report.backlog_sent = int(uplink.get("backlog_sent", 0))
    report.uplink_bytes = int(uplink.get("bytes_sent", 0))
    report.core_received = progress.received if progress else 0
    report.core_duplicates = progress.duplicates if progress else 0
    report.missing_seqs = list(progress.gaps) if progress else []
    report.open_at_stop = int(
        sum(slot.pipeline.gauges().get("open_windows", 0.0) for slot in site.slots)
    )
    report.checkpointed = site.config.checkpoint.enabled
    report.elapsed_s = time.monotonic() - started


def _objects_per_class(core: CoreReceiver) -> dict[str, int]:
    """Distinct tracked objects per class, summed over the camera windows the core stored."""
    objects: Counter[str] = Counter()
    for env in core.store.envelopes(SITE_ID):
        if env.pipeline != "street-cam" or env.kind != "summary":
            continue
        for name, value in env.stats.items():
            if name.startswith("tracks.") and name.endswith(".unique") and value:
                objects[name[len("tracks.") : -len(".unique")]] += int(value)
    return dict(objects)


def _received(core: CoreReceiver) -> int:
    progress = core.sites.get(SITE_ID)
    return progress.received if progress else 0
