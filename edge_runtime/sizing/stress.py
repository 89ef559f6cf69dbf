"""Run a site profile for real and measure it: a mosquitto, the load generators, and the site
runtime (``edge-runtime run`` in its own process, spool on, uplink to the broker) with one
``windows`` pipeline per sensor group and pipeline, and one ``camera`` pipeline per camera
group (the real NanoDet-m model, frames of a real video).

CPU is read from /proc (user + system time of the runtime process and its children, and of the
broker) over a measurement window that starts after a warm-up; memory is the runtime's
resident set (VmRSS), sampled every half second in that window. Rates (messages, readings,
summaries, frames analysed) come from the runtime's own ``/status``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from edge_runtime.broker import MosquittoProcess, free_port
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.sizing.load import (
    CameraLoad,
    SensorLoad,
    camera_topic,
    sensor_filter,
    start_load,
)
from edge_runtime.sizing.profile import CameraGroup, SiteProfile

__all__ = ["Assets", "StressResult", "run_stress", "site_config"]

_TICK = os.sysconf("SC_CLK_TCK")
MODEL_FILES = {
    "fp32": "nanodet_m_coco_fp32_dynbatch.onnx",
    "int8": "nanodet_m_coco_int8_qop.onnx",
}


@dataclass(frozen=True)
class Assets:
    """Where the camera stress tests find the model files and the video."""

    model_dir: Path
    video: Path

    @classmethod
    def find(cls, model_dir: Path | None = None, video: Path | None = None) -> Assets:
        roots = [Path.cwd(), Path(__file__).resolve().parents[2]]
        if model_dir is None:
            model_dir = next(
                (
                    r / "models/nanodet-m-coco"
                    for r in roots
                    if (r / "models/nanodet-m-coco").is_dir()
                ),
                roots[0] / "models/nanodet-m-coco",
            )
        if video is None:
            video = next(
                (
                    r / "bench/data/vtest.avi"
                    for r in roots
                    if (r / "bench/data/vtest.avi").exists()
                ),
                roots[0] / "bench/data/vtest.avi",
            )
        return cls(model_dir, video)

    def model(self, variant: str) -> Path:
        path = self.model_dir / MODEL_FILES[variant]
        if not path.exists():
            raise EdgeRuntimeError(
                f"the {variant} model is not at {path}; pass --model-dir (the folder with "
                f"{MODEL_FILES[variant]})"
            )
        return path


@dataclass(frozen=True)
class StressResult:
    seconds: float
    runtime_cores: float
    broker_cores: float
    rss_mb: float  # mean over the window
    rss_peak_mb: float
    msgs_per_s: float
    readings_per_s: float
    summaries_per_s: float
    frames_per_s: float  # analysed (inferred)
    frames_in_per_s: float  # arrived at the camera pipelines
    messages_total: int  # received since the start, at the end of the window
    ingest_dropped: int

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def site_config(
    profile: SiteProfile, *, port: int, data_dir: Path, http_port: int, assets: Assets | None
) -> str:
    """The site TOML the stress test runs: the runtime's defaults wherever the profile does
    not say otherwise."""
    cams = bool(profile.cameras)
    lines = [
        'site_id = "size-stress"',
        f'data_dir = "{data_dir}"',
        "[site_broker]",
        f"port = {port}",
        'client_id = "size-stress-ingest"',
        "clean_start = true",
        "[uplink.broker]",
        f"port = {port}",
        "[uplink]",
        'topic = "edge/size-stress/summaries"',
        "[ingest]",
        # frames of a camera are replaceable and large: a short queue when cameras are present
        f"queue_size = {4096 if cams else 100_000}",
        f"max_payload_bytes = {4 * 1024 * 1024 if cams else 256 * 1024}",
        "[ops]",
        f"http_port = {http_port}",
        'log_format = "text"',
        'log_level = "WARNING"',
    ]
    for gi, g in enumerate(profile.sensors):
        decode = (
            '{ format = "senml", key = "senml" }'
            if g.format == "senml"
            else '{ format = "json", key = "topic:2", value = "field:value", time = "field:ts" }'
        )
        for p in range(g.pipelines):
            lines += [
                "[[pipelines]]",
                'type = "windows"',
                f'name = "g{gi}-p{p}"',
                f'topics = ["{sensor_filter(gi)}"]',
                f"decode = {decode}",
                f'window = {{ kind = "tumbling", size_s = {g.window_s}, allowed_lateness_s = 1 }}',
            ]
    for gi, c in enumerate(profile.cameras):
        if assets is None:
            raise EdgeRuntimeError("camera groups need the model and video (Assets)")
        model = assets.model(c.model)
        sessions = min(2, os.cpu_count() or 1)
        lines += [
            "[[pipelines]]",
            'type = "camera"',
            f'name = "cam-g{gi}"',
            f"window_s = {c.window_s}",
            "decode_threads = 2",
            "[pipelines.model]",
            'name = "nanodet-m-coco"',
            f'path = "{model}"',
            f'sha256 = "{_sha256(model)}"',
            f"session = {{ layout = {{ sessions = {sessions}, intra_op_threads = 1 }}, "
            "max_batch = 4 }",
            "[pipelines.batch]",
            "max_batch = 2",
            "max_wait_ms = 25",
        ]
        for i in range(c.count):
            lines += [
                "[[pipelines.cameras]]",
                f'id = "g{gi}c{i}"',
                f'topic = "{camera_topic(gi, i)}"',
            ]
    return "\n".join(lines) + "\n"


def camera_frames(video: Path, group: CameraGroup, out: Path, n: int = 60) -> Path:
    """JPEG frames of ``video`` resized to the group's size, for the load process (msgpack)."""
    try:
        import cv2  # noqa: PLC0415 (the video extra)
    except ImportError as exc:
        raise EdgeRuntimeError(
            "camera stress tests need OpenCV: pip install 'edge-runtime[video]'"
        ) from exc
    cap = cv2.VideoCapture(str(video))
    jpegs: list[bytes] = []
    try:
        while len(jpegs) < n:
            ok, frame = cap.read()
            if not ok:
                break
            frame = cv2.resize(frame, (group.width, group.height), interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
            if ok:
                jpegs.append(buf.tobytes())
    finally:
        cap.release()
    if not jpegs:
        raise EdgeRuntimeError(f"no frames could be read from {video}")
    out.write_bytes(msgpack.packb(jpegs, use_bin_type=True))
    return out


def _cpu(pid: int) -> float:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    return sum(int(f) for f in fields[11:15]) / _TICK


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _status(http_port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{http_port}/status"
    with urllib.request.urlopen(url, timeout=5) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
    return doc


def _wait_ready(proc: subprocess.Popen[bytes], http_port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EdgeRuntimeError(
                f"the runtime under test exited (code {proc.returncode}): "
                + log.read_text(errors="replace")[-2000:]
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise EdgeRuntimeError("the runtime under test did not get ready within 60 s")


def _counts(status: dict[str, Any]) -> tuple[int, int, int, int, int]:
    pipelines = status.get("pipelines", {})
    frames = sum(int(p.get("frames_inferred", 0)) for p in pipelines.values())
    frames_in = sum(int(p.get("frames_in", 0)) for p in pipelines.values())
    return (
        int(status.get("messages_in", 0)),
        sum(int(v) for v in status.get("readings_in", {}).values()),
        sum(int(v) for v in status.get("summaries_out", {}).values()),
        frames,
        frames_in,
    )


def run_stress(
    profile: SiteProfile,
    *,
    warmup: float,
    measure: float,
    assets: Assets | None = None,
    keep: Path | None = None,
) -> StressResult:
    """Run ``profile`` for ``warmup + measure`` seconds and measure the last ``measure``."""
    work = Path(tempfile.mkdtemp(prefix="edge-size-", dir=keep))
    try:
        with MosquittoProcess(workdir=work / "broker") as broker:
            assert broker.proc is not None
            http_port = free_port()
            cfg = work / "site.toml"
            cfg.write_text(
                site_config(
                    profile,
                    port=broker.port,
                    data_dir=work / "data",
                    http_port=http_port,
                    assets=assets,
                )
            )
            cameras = []
            for gi, c in enumerate(profile.cameras):
                assert assets is not None
                frames = camera_frames(assets.video, c, work / f"frames-{gi}.msgpack")
                cameras.append(CameraLoad(gi, c.count, c.fps, str(frames)))
            sensors = [
                SensorLoad(
                    gi,
                    g.count,
                    g.msg_per_s,
                    g.format == "senml",
                    g.readings_per_msg,
                    g.keys_per_sensor,
                )
                for gi, g in enumerate(profile.sensors)
            ]
            log = work / "runtime.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "edge_runtime", "run", "-c", str(cfg), "--quiet"],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            try:
                _wait_ready(proc, http_port, log)
                loader, go = start_load(broker.port, sensors, cameras, warmup + measure + 5)
                go.set()
                time.sleep(warmup)
                s0, t0 = _status(http_port), time.monotonic()
                c0, b0 = _cpu(proc.pid), _cpu(broker.proc.pid)
                rss: list[float] = []
                while time.monotonic() - t0 < measure:
                    time.sleep(0.5)
                    rss.append(_rss_mb(proc.pid))
                s1, t1 = _status(http_port), time.monotonic()
                c1, b1 = _cpu(proc.pid), _cpu(broker.proc.pid)
                loader.terminate()
                loader.join(10)
            finally:
                proc.terminate()
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    span = t1 - t0
    n0, n1 = _counts(s0), _counts(s1)
    rate = [(b - a) / span for a, b in zip(n0, n1, strict=True)]
    dropped = sum(int(v) for v in s1.get("ingest_dropped", {}).values())
    return StressResult(
        seconds=span,
        runtime_cores=(c1 - c0) / span,
        broker_cores=(b1 - b0) / span,
        rss_mb=statistics.fmean(rss) if rss else 0.0,
        rss_peak_mb=max(rss, default=0.0),
        msgs_per_s=rate[0],
        readings_per_s=rate[1],
        summaries_per_s=rate[2],
        frames_per_s=rate[3],
        frames_in_per_s=rate[4],
        messages_total=n1[0],
        ingest_dropped=dropped,
    )
