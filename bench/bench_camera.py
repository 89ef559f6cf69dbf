"""Issue 4 benchmark: batched camera analytics against baselines measured in this run.

    python bench/bench_camera.py [--quick] [--save-int8]

(a) the ideal-pipeline limit: the CPU cost per frame of each necessary stage alone (JPEG decode,
    resize + normalise, inference at its cheapest session layout, box decoding) and the frames/s
    the machine's cores could reach if those stages overlapped perfectly (cores / total cost);
(b) a naive per-frame loop (decode, infer, decode boxes, one frame at a time, default
    onnxruntime session options): the code a user writes first;
(c) the runtime end to end: a publisher process sends JPEG frames of the real clip over MQTT
    (msgpack {"ts", "jpeg"}) to a mosquitto started here, each camera at 10 fps offered (paced,
    not as fast as possible), 4 and 8 cameras; the site runs the camera pipeline and sends
    summaries to a second mosquitto. Measured: frames inferred per second in steady state,
    frames skipped (latest frame wins), p50/p99 frame-to-result latency, CPU, and the
    bandwidth reduction (frame bytes in / summary bytes out);
(d) int8: onnxruntime static quantisation calibrated on real frames; its speed against fp32 and
    its agreement with the fp32 detections.

The machine is shared: the load average is printed with each section; figures from one run are
comparable with each other, not with another run's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import gc
import os
import pickle
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import cv2
import numpy as np
import onnxruntime as ort
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._camera_load import start_camera_publisher
from bench._results import Results
from edge_runtime.broker import MosquittoProcess
from edge_runtime.camera import (
    DetectorModel,
    FrameBatch,
    FrameLimits,
    InputSpec,
    ModelConfig,
    Normaliser,
    SessionConfig,
    SessionLayout,
    box_iou,
    decode_jpeg,
    file_sha256,
    make_decoder,
)
from edge_runtime.config import parse_config
from edge_runtime.runtime import SiteRuntime
from edge_runtime_pipelines.camera import CameraPipeline

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "bench/data/vtest.avi"
FP32 = ROOT / "models/nanodet-m-coco/nanodet_m_coco_fp32_dynbatch.onnx"
INT8_NAME = "nanodet_m_coco_int8_qop.onnx"
JPEG_QUALITY = 85
CORES = len(os.sched_getaffinity(0))
LAYOUTS = [(1, 1), (1, CORES), (CORES, 1)] if CORES > 1 else [(1, 1)]


def load_avg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def section(title: str) -> None:
    print(f"\n== {title}  [{load_avg()}, {CORES} cores]", flush=True)


def read_frames() -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(CLIP))
    frames: list[np.ndarray] = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def read_clip() -> tuple[list[np.ndarray], list[bytes]]:
    frames = read_frames()
    jpegs = [
        cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()
        for f in frames
    ]
    return frames, jpegs


def model_config(
    path: Path, layout: tuple[int, int], max_batch: int = 4, resize: str = "letterbox"
) -> ModelConfig:
    return ModelConfig(
        name=path.stem,
        path=path,
        sha256=file_sha256(path),
        input=InputSpec(resize=resize),
        session=SessionConfig(
            layout=SessionLayout(sessions=layout[0], intra_op_threads=layout[1]),
            max_batch=max_batch,
        ),
    )


def cpu_per_item(fn: Any, items: list[Any], min_s: float) -> tuple[float, float]:
    """(CPU ms per item, wall ms per item) of ``fn`` over ``items``, repeated for ``min_s``."""
    n = 0
    c0, t0 = time.process_time(), time.perf_counter()
    while True:
        for item in items:
            fn(item)
        n += len(items)
        if time.perf_counter() - t0 >= min_s:
            break
    return (time.process_time() - c0) / n * 1000, (time.perf_counter() - t0) / n * 1000


def tensor_of(frames: list[np.ndarray], model: DetectorModel) -> np.ndarray:
    batch = FrameBatch(len(frames), model.config.input)
    for f in frames:
        batch.add_image(f)
    return batch.tensor.copy()


@dataclass
class InferTiming:
    layout: tuple[int, int]
    batch: int
    images_per_s: float
    cpu_ms: float


def infer_timing(
    path: Path, layout: tuple[int, int], batch: np.ndarray, secs: float
) -> InferTiming:
    """Images/s and CPU per image with one caller per session (as the runtime runs them)."""
    model = DetectorModel.load(model_config(path, layout, max(4, batch.shape[0])), ROOT)
    model.run_raw(batch)
    counts = [0] * model.concurrency
    deadline = time.perf_counter() + secs

    def work(i: int) -> None:
        while time.perf_counter() < deadline:
            model.run_raw(batch)
            counts[i] += batch.shape[0]

    c0, t0 = time.process_time(), time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(model.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, used = time.perf_counter() - t0, time.process_time() - c0
    n = sum(counts)
    return InferTiming(layout, batch.shape[0], n / wall, used / n * 1000)


# -- (a) ideal pipeline -------------------------------------------------------------------------


def ideal_pipeline(frames: list[np.ndarray], jpegs: list[bytes], secs: float) -> dict[str, Any]:
    section("(a) ideal pipeline: CPU cost per frame of each necessary stage, alone")
    sample_j = jpegs[::10][:40]
    limits = FrameLimits()
    decode_cpu, _ = cpu_per_item(lambda j: decode_jpeg(j, limits), sample_j, secs)
    spec = model_config(FP32, (1, 1)).input
    slot = np.empty((3, spec.height, spec.width), np.float32)
    sample_f = frames[::10][:40]
    wide_f = [np.ascontiguousarray(f[72:504]) for f in sample_f]  # 16:9 bands, 768x432
    # letterbox (the default) against stretch, interleaved; best of 2 each (the machine is shared)
    resize_ms: dict[tuple[str, str], float] = {}
    for _ in range(2):
        for shape, sample in (("4:3", sample_f), ("16:9", wide_f)):
            for mode in ("stretch", "letterbox"):
                normalise = Normaliser(InputSpec(resize=mode))
                cpu, _ = cpu_per_item(functools.partial(normalise, out=slot), sample, secs / 4)
                key = (shape, mode)
                resize_ms[key] = min(resize_ms.get(key, cpu), cpu)
    resize_cpu = resize_ms[("4:3", "letterbox")]
    probe = DetectorModel.load(model_config(FP32, (1, 1)), ROOT)
    batch4 = tensor_of(frames[0:400:100], probe)
    timings = []
    for layout in LAYOUTS:
        for b in (1, 4):
            timings.append(infer_timing(FP32, layout, batch4[:b], secs))
    outputs = probe.run_raw(batch4)
    sizes = np.tile(np.array([[frames[0].shape[1], frames[0].shape[0]]]), (4, 1))
    decoder = make_decoder(probe.config)
    box_cpu, box_wall = cpu_per_item(lambda _: decoder.decode(outputs, sizes), [0] * 20, secs / 2)
    box_cpu, box_wall = box_cpu / 4, box_wall / 4
    cheapest = min(timings, key=lambda t: t.cpu_ms)
    fastest = max(timings, key=lambda t: t.images_per_s)
    total = decode_cpu + resize_cpu + cheapest.cpu_ms + box_cpu
    ideal_fps = CORES * 1000 / total
    print(f"  JPEG decode 768x576 q{JPEG_QUALITY}     {decode_cpu:6.2f} ms CPU/frame")
    print(f"  resize + normalise 416x416    {resize_cpu:6.2f} ms CPU/frame (letterbox)")
    for shape, size in (("4:3", "768x576"), ("16:9", "768x432")):
        lb, st = resize_ms[(shape, "letterbox")], resize_ms[(shape, "stretch")]
        print(
            f"    {shape} {size}: letterbox {lb:5.2f} ms, stretch {st:5.2f} ms CPU/frame "
            f"= {lb / st:.2f}x"
        )
    print("  inference (fp32), per layout and batch:")
    for t in timings:
        mark = " <- cheapest" if t is cheapest else (" <- fastest" if t is fastest else "")
        print(
            f"    {t.layout[0]} session(s) x {t.layout[1]} thread(s), batch {t.batch}: "
            f"{t.images_per_s:5.1f} images/s, {t.cpu_ms:6.2f} ms CPU/image{mark}"
        )
    print(f"  box decoding + NMS (batch 4)  {box_cpu:6.2f} ms CPU/frame")
    print(f"  total                         {total:6.2f} ms CPU/frame")
    print(f"  ideal limit (a) = {CORES} cores / total = {ideal_fps:.1f} frames/s")
    return {
        "fps": ideal_fps,
        "cheapest": cheapest,
        "decode_cpu": decode_cpu,
        "resize_cpu": resize_cpu,
        "box_cpu": box_cpu,
        "total_ms": total,
    }


# -- (b) naive loop -----------------------------------------------------------------------------


def naive_loop(jpegs: list[bytes], n: int) -> float:
    section("(b) naive per-frame loop: decode, infer, decode boxes; default session options")
    session = ort.InferenceSession(str(FP32), providers=["CPUExecutionProvider"])
    config = model_config(FP32, (1, 1), resize="stretch")  # the plain resize below
    decoder = make_decoder(config)
    names = list(decoder.output_names)
    mean = np.array(config.input.mean, np.float32)
    std = np.array(config.input.std, np.float32)
    persons = 0
    picked = jpegs[:n]
    session.run(names, {"input_1:0": np.zeros((1, 3, 416, 416), np.float32)})
    c0, t0 = time.process_time(), time.perf_counter()
    for jpeg in picked:
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        resized = cv2.resize(image, (416, 416)).astype(np.float32)
        x = ((resized - mean) / std).transpose(2, 0, 1)[None]
        out = dict(zip(names, session.run(names, {"input_1:0": x}), strict=True))
        (dets,) = decoder.decode(out, np.array([[image.shape[1], image.shape[0]]]))
        persons += int((dets.class_ids == 0).sum())
    wall, used = time.perf_counter() - t0, time.process_time() - c0
    fps = len(picked) / wall
    print(
        f"  {len(picked)} frames: {fps:.1f} frames/s, {used / len(picked) * 1000:.1f} ms "
        f"CPU/frame, {persons / len(picked):.2f} persons/frame"
    )
    return fps


# -- (c) runtime end to end ---------------------------------------------------------------------

SITE = """
site_id = "bench-cams"
data_dir = "{data}"
[site_broker]
port = {site_port}
[uplink.broker]
port = {core_port}
[uplink]
topic = "edge/bench-cams/summaries"
encoding = "msgpack"
[ingest]
qos = 0
queue_size = 256
overflow = "drop_oldest"
max_payload_bytes = 1048576
batch_wait_ms = 2
[ops]
http_enabled = false
log_format = "text"
log_level = "WARNING"
tick_interval_s = 1.0
[[pipelines]]
type = "camera"
name = "cams"
window_s = {window_s}
decode_threads = 2
[pipelines.model]
name = "{model_name}"
path = "{model_path}"
sha256 = "{sha}"
session = {{ layout = {{ sessions = {sessions}, intra_op_threads = {threads} }}, max_batch = 4 }}
[pipelines.batch]
max_batch = {max_batch}
max_wait_ms = 25
prefetch = {prefetch}
"""

CAMERA = """
[[pipelines.cameras]]
id = "c{i}"
topic = "bench/cams/c{i}/jpeg"
zones = [{{ name = "lawn", coords = "normalized", polygon = [[0, 0.4], [1, 0.4], [1, 1], [0, 1]] }}]
lines = [{{ name = "mid", coords = "normalized", start = [0.5, 0], end = [0.5, 1] }}]
"""


@dataclass
class EndToEnd:
    cameras: int
    offered_fps: float
    inferred_fps: float
    skipped_share: float
    p50_ms: float
    p99_ms: float
    cpu_cores: float
    frame_bytes: int
    summary_bytes: int
    summaries: int
    mean_batch: float
    max_batch: int
    load: str
    rss_start_mb: float
    rss_peak_mb: float
    ingest_dropped: int
    other_cores: float  # publisher process + both mosquittos, during the measurement
    workers_busy: float  # share of the time the inference workers spent inside inference
    machine_idle: float  # machine-wide idle + iowait, in cores, during the measurement
    machine_steal: float  # machine-wide steal (hypervisor), in cores

    @property
    def foreign_cores(self) -> float:
        """CPU used on this machine by processes that are not part of this benchmark."""
        busy = CORES - self.machine_idle - self.machine_steal
        return max(0.0, busy - self.cpu_cores - self.other_cores)

    @property
    def fps_whole_machine(self) -> float:
        """Frames/s at the measured CPU per frame had the runtime had every core to itself."""
        return self.inferred_fps * CORES / self.cpu_cores if self.cpu_cores else 0.0


async def end_to_end(
    frames_file: Path,
    cameras: int,
    *,
    model_path: Path,
    layout: tuple[int, int],
    warmup: float,
    measure: float,
    window_s: float,
    max_batch: int = 4,
    prefetch: int = 1,
) -> EndToEnd:
    fps = 10.0
    with (
        MosquittoProcess() as site_broker,
        MosquittoProcess() as core_broker,
        tempfile.TemporaryDirectory() as data,
    ):
        text = SITE.format(
            data=data,
            site_port=site_broker.port,
            core_port=core_broker.port,
            window_s=window_s,
            model_name=model_path.stem.replace("_", "-")[:60],
            model_path=model_path,
            sha=file_sha256(model_path),
            sessions=layout[0],
            threads=layout[1],
            max_batch=max_batch,
            prefetch=prefetch,
        ) + "".join(CAMERA.format(i=i) for i in range(cameras))
        loaded = parse_config(text, source="<bench>")
        summary_bytes = 0
        summary_msgs = 0
        ready = asyncio.Event()

        async def collect() -> None:
            nonlocal summary_bytes, summary_msgs
            async with aiomqtt.Client("127.0.0.1", core_broker.port) as client:
                await client.subscribe("edge/#", qos=1)
                ready.set()
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    summary_bytes += len(message.payload)
                    summary_msgs += 1

        collector = asyncio.create_task(collect(), name="bench-collector")
        await ready.wait()
        proc, go, result = start_camera_publisher(
            site_broker.port, frames_file, cameras=cameras, fps=fps, duration=warmup + measure
        )
        runtime = SiteRuntime(loaded)
        site = asyncio.create_task(runtime.run(), name="bench-site")
        await runtime.wait_started()
        pipeline = runtime.slots[0].pipeline
        assert isinstance(pipeline, CameraPipeline)
        while pipeline.engine is None:
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)  # publisher connected
        rss_start = rss_mb()
        rss_peak = rss_start

        async def watch_rss() -> None:
            nonlocal rss_peak
            while True:
                rss_peak = max(rss_peak, rss_mb())
                await asyncio.sleep(0.25)

        watcher = asyncio.create_task(watch_rss(), name="bench-rss")
        go.set()
        await asyncio.sleep(warmup)
        stats = pipeline.stats
        n0, s0, in0, b0 = (
            stats.frames_inferred,
            stats.frames_skipped,
            stats.frames_in,
            stats.batches,
        )
        busy0 = stats.infer_busy_s
        stats.latency.clear()
        others = [p.pid for p in (site_broker.proc, core_broker.proc) if p is not None]
        others.append(proc.pid or 0)
        o0 = sum(proc_cpu_s(pid) for pid in others)
        m0 = cpu_times()
        c0, t0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(measure)
        elapsed = time.perf_counter() - t0
        used = time.process_time() - c0
        other = sum(proc_cpu_s(pid) for pid in others) - o0
        m1 = cpu_times()
        tick = os.sysconf("SC_CLK_TCK")
        idle = (m1[3] + m1[4] - m0[3] - m0[4]) / tick / elapsed
        steal = (m1[7] - m0[7]) / tick / elapsed
        inferred = stats.frames_inferred - n0
        arrived = stats.frames_in - in0
        skipped = stats.frames_skipped - s0
        batches = stats.batches - b0
        busy = (stats.infer_busy_s - busy0) / (elapsed * pipeline.engine.workers)
        p50, p99 = stats.latency.percentiles(50, 99)
        sent, sent_bytes, _ = await asyncio.to_thread(result.get, True, 60)
        watcher.cancel()
        await asyncio.to_thread(proc.join, 30)
        runtime.stop()
        await site
        await asyncio.sleep(1.0)  # last summaries reach the collector
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        del sent
    return EndToEnd(
        cameras=cameras,
        offered_fps=arrived / elapsed,
        inferred_fps=inferred / elapsed,
        skipped_share=skipped / max(arrived, 1),
        p50_ms=p50 * 1000,
        p99_ms=p99 * 1000,
        cpu_cores=used / elapsed,
        frame_bytes=sent_bytes,
        summary_bytes=summary_bytes,
        summaries=summary_msgs,
        mean_batch=inferred / max(batches, 1),
        max_batch=max_batch,
        load=load_avg(),
        rss_start_mb=rss_start,
        rss_peak_mb=rss_peak,
        ingest_dropped=sum(runtime.stats.ingest_dropped.values()),
        other_cores=other / elapsed,
        workers_busy=busy,
        machine_idle=idle,
        machine_steal=steal,
    )


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_times() -> list[int]:
    """Machine-wide jiffies: user, nice, system, idle, iowait, irq, softirq, steal."""
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def release_freed_memory() -> None:
    """Hand memory freed by the bench's own frame lists back to the OS before a runtime's RSS is
    read: once glibc has seen large frees it keeps later ones on its heap, which would count."""
    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(libc).malloc_trim(0)


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def print_e2e(row: EndToEnd, ideal: dict[str, Any], naive: float, label: str) -> None:
    ratio = row.frame_bytes / max(row.summary_bytes, 1)
    cpu_ms = row.cpu_cores / max(row.inferred_fps, 1e-9) * 1000
    print(
        f"  {label}: {row.cameras} cameras x 10 fps offered ({row.offered_fps:.1f} frames/s "
        f"arrived): {row.inferred_fps:.1f} frames/s inferred, mean batch {row.mean_batch:.2f}, "
        f"{row.skipped_share:.0%} skipped (latest frame wins), {row.ingest_dropped} dropped "
        "by the ingest queue"
    )
    print(
        f"      latency frame->result p50 {row.p50_ms:.0f} ms, p99 {row.p99_ms:.0f} ms; "
        f"RSS {row.rss_start_mb:.0f} MB at start, peak {row.rss_peak_mb:.0f} MB; {row.load}"
    )
    print(
        f"      CPU: runtime {row.cpu_cores:.2f} cores = {cpu_ms:.1f} ms per inferred frame "
        f"(ideal stages {ideal['total_ms']:.1f} ms: {ideal['total_ms'] / cpu_ms:.0%} "
        f"efficient); publisher + brokers {row.other_cores:.2f} cores; other tenants "
        f"{row.foreign_cores:.2f} cores; machine idle {row.machine_idle:.2f}, steal "
        f"{row.machine_steal:.2f} cores; inference workers busy {row.workers_busy:.0%} of "
        "the time"
    )
    print(
        f"      c/a = {row.inferred_fps / ideal['fps']:.2f}, c/b = "
        f"{row.inferred_fps / naive:.2f}; "
        f"bandwidth: {row.frame_bytes / 1e6:.1f} MB of frames in, {row.summary_bytes} B of "
        f"summaries out ({row.summaries} messages) = {ratio:,.0f}x reduction"
    )


# -- (d) int8 -----------------------------------------------------------------------------------


def quantise(frames: list[np.ndarray], out: Path, calib_idx: list[int]) -> Path:
    import onnx  # noqa: PLC0415
    from onnxruntime.quantization import (  # noqa: PLC0415
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415

    probe = DetectorModel.load(model_config(FP32, (1, 1)), ROOT)
    name = probe.config.input.name
    samples = [tensor_of([frames[i]], probe) for i in calib_idx]

    class Frames(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._it = iter(samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {name: x}

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(FP32), str(pre), skip_symbolic_shape=True)
        graph = onnx.load(str(pre)).graph
        split_inputs = {i for node in graph.node if node.op_type == "Split" for i in node.input}
        # the last conv of each head feeds the class/box split: kept in fp32 (scores are
        # compared with a threshold; int8 there cost recall in a trial)
        heads = [n.name for n in graph.node if n.op_type == "Conv" and n.output[0] in split_inputs]
        np_err = np.seterr(divide="ignore", invalid="ignore")  # constant tensors: zero range
        try:
            quantize_static(
                str(pre),
                str(out),
                Frames(),
                quant_format=QuantFormat.QOperator,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=heads,
            )
        finally:
            np.seterr(**np_err)
    return out


def agreement(
    ref: DetectorModel, other: DetectorModel, frames: list[np.ndarray]
) -> tuple[float, float, float, float]:
    """(recall, precision, fp32 persons/frame, int8 persons/frame): an int8 detection matches
    an fp32 one of the same class at IoU >= 0.5 (greedy, best fp32 score first)."""
    matched = n_ref = n_other = 0
    persons_ref: list[int] = []
    persons_other: list[int] = []
    for start in range(0, len(frames), 4):
        chunk = frames[start : start + 4]
        x = tensor_of(chunk, ref)
        sizes = np.array([[f.shape[1], f.shape[0]] for f in chunk])
        for a, b in zip(ref.infer(x, sizes), other.infer(x, sizes), strict=True):
            n_ref += len(a)
            n_other += len(b)
            persons_ref.append(int((a.class_ids == 0).sum()))
            persons_other.append(int((b.class_ids == 0).sum()))
            if not len(a) or not len(b):
                continue
            iou = box_iou(a.boxes, b.boxes)
            iou[a.class_ids[:, None] != b.class_ids[None, :]] = 0.0
            free = np.ones(len(b), bool)
            for i in np.argsort(-a.scores):
                cand = np.where(free, iou[i], -1.0)
                j = int(np.argmax(cand))
                if cand[j] >= 0.5:
                    free[j] = False
                    matched += 1
    return (
        matched / max(n_ref, 1),
        matched / max(n_other, 1),
        float(np.mean(persons_ref)),
        float(np.mean(persons_other)),
    )


def int8_section(frames: list[np.ndarray], secs: float, save: bool) -> Path | None:
    section("(d) int8: onnxruntime static quantisation calibrated on real frames")
    calib_idx = list(range(0, len(frames), 25))  # 32 frames spread over the clip
    eval_idx = [i for i in range(7, len(frames), 8) if i not in set(calib_idx)]
    target_dir = ROOT / "models/nanodet-m-coco" if save else Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    path = quantise(frames, target_dir / INT8_NAME, calib_idx)
    print(
        f"  QOperator, per-channel int8 weights, uint8 activations, head convs kept fp32; "
        f"calibrated on {len(calib_idx)} frames in {time.perf_counter() - t0:.1f} s"
    )
    print(f"  {path} ({path.stat().st_size:,} bytes, sha256 {file_sha256(path)})")
    probe = DetectorModel.load(model_config(FP32, (1, 1)), ROOT)
    batch = tensor_of(frames[0:400:100], probe)
    rows: dict[str, list[InferTiming]] = {"fp32": [], "int8": []}
    for _ in range(2):  # interleaved, the machine is shared
        for label, p in (("fp32", FP32), ("int8", path)):
            for layout in LAYOUTS:
                rows[label].append(infer_timing(p, layout, batch[:1], secs / 2))
    best: dict[str, InferTiming] = {}
    for label, timings in rows.items():
        for layout in LAYOUTS:
            mine = [t for t in timings if t.layout == layout]
            rate = max(t.images_per_s for t in mine)
            cpu = min(t.cpu_ms for t in mine)
            print(
                f"    {label} {layout[0]} x {layout[1]} thread(s), batch 1: {rate:5.1f} "
                f"images/s, {cpu:6.2f} ms CPU/image (best of 2)"
            )
        best[label] = max(timings, key=lambda t: t.images_per_s)
    speedup = best["int8"].images_per_s / best["fp32"].images_per_s
    cpu_ratio = min(t.cpu_ms for t in rows["fp32"]) / min(t.cpu_ms for t in rows["int8"])
    ref = DetectorModel.load(model_config(FP32, (1, CORES)), ROOT)
    other = DetectorModel.load(model_config(path, (1, CORES)), ROOT)
    recall, precision, p_ref, p_int8 = agreement(ref, other, [frames[i] for i in eval_idx])
    print(
        f"  int8 vs fp32: {speedup:.2f}x images/s (best layouts), {cpu_ratio:.2f}x less CPU "
        f"per image"
    )
    print(
        f"  agreement on {len(eval_idx)} held-out frames (same thresholds, IoU >= 0.5, same "
        f"class): recall {recall:.3f}, precision {precision:.3f}; persons/frame fp32 "
        f"{p_ref:.2f}, int8 {p_int8:.2f}"
    )
    faster = speedup > 1.1
    print(
        "  -> int8 is measurably faster: offered as "
        f"{'models/nanodet-m-coco/' if save else 'a temp file (use --save-int8 to keep it) '}"
        f"{INT8_NAME}"
        if faster
        else "  -> int8 is not measurably faster here; fp32 stays the default"
    )
    return path if faster else None


# -- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timings")
    parser.add_argument(
        "--save-int8", action="store_true", help="write the int8 model to models/nanodet-m-coco/"
    )
    parser.add_argument(
        "--cameras",
        help="camera counts of (c), each with max_batch 2, comma-separated "
        "(default 1,2,4,8 and 8 with max_batch 4; --quick: 2,4,8)",
    )
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 section (d)")
    parser.add_argument("--json", type=Path, help="also write the figures here (for bench/run)")
    args = parser.parse_args()
    results = Results("bench_camera", quick=args.quick)
    if args.cameras:
        sweep = [(int(c), 2) for c in args.cameras.split(",")]
    else:
        sweep = [(2, 2), (4, 2), (8, 2)] if args.quick else [(1, 2), (2, 2), (4, 2), (8, 2), (8, 4)]
    secs = 1.0 if args.quick else 2.0
    warmup, measure = (3.0, 8.0) if args.quick else (5.0, 20.0)
    started = time.perf_counter()
    print(f"bench_camera: {load_avg()}; onnxruntime {ort.__version__}, OpenCV {cv2.__version__}")
    cv2.setNumThreads(1)  # as the camera pipeline does (opencv_threads = 1)
    frames, jpegs = read_clip()
    print(
        f"clip {CLIP.name}: {len(frames)} frames {frames[0].shape[1]}x{frames[0].shape[0]}, "
        f"JPEG q{JPEG_QUALITY} mean {statistics.mean(map(len, jpegs)) / 1000:.1f} KB"
    )
    with results.phase("ab"):
        a = ideal_pipeline(frames, jpegs, secs)
        b = naive_loop(jpegs, 60 if args.quick else 150)
    del frames  # ~1 GB of decoded frames: keep them out of the runtime's RSS figures
    release_freed_memory()
    with tempfile.TemporaryDirectory() as tmp:
        frames_file = Path(tmp) / "jpegs.pkl"
        frames_file.write_bytes(pickle.dumps(jpegs))
        # One inference worker runs per session, so with CORES sessions of one thread each every
        # inference call is single-threaded (no intra-op hand-offs, which cost 10-20 % CPU in
        # (a)) and the decode threads fill the gaps; batches of 2 keep 4 frames in inference.
        layout = (CORES, 1)
        section(
            f"(c) runtime end to end, JPEG over MQTT -> summaries (fp32, {layout[0]} sessions x "
            f"{layout[1]} thread, prefetch 1, window_s 10, {measure:.0f} s measured after "
            f"{warmup:.0f} s warm-up)"
        )
        rows = []
        machines = []
        for cameras, max_batch in sweep:
            with results.phase(f"c{cameras}b{max_batch}"):
                row = uvloop.run(
                    end_to_end(
                        frames_file,
                        cameras,
                        model_path=FP32,
                        layout=layout,
                        warmup=warmup,
                        measure=measure,
                        window_s=10.0,
                        max_batch=max_batch,
                    )
                )
            machines.append(results.machines[f"c{cameras}b{max_batch}"])
            rows.append(row)
            print_e2e(row, a, b, f"c, max_batch {max_batch}")
        int8 = None if args.no_int8 else int8_section(read_frames(), secs, args.save_int8)
        if int8 is not None and not args.quick:
            release_freed_memory()  # the int8 section decoded the clip again
            section("(c') runtime end to end with the int8 model, 8 cameras")
            row = uvloop.run(
                end_to_end(
                    frames_file,
                    8,
                    model_path=int8,
                    layout=(1, 1) if CORES == 1 else (CORES, 1),
                    warmup=warmup,
                    measure=measure,
                    window_s=10.0,
                    max_batch=2,
                )
            )
            print_e2e(row, a, b, "c', max_batch 2")
    section("summary")
    print(f"  (a) ideal limit        {a['fps']:6.1f} frames/s")
    print(f"  (b) naive loop         {b:6.1f} frames/s")
    for row in rows:
        verdict = "meets" if row.inferred_fps >= 0.85 * a["fps"] else "misses"
        cpu_ms = row.cpu_cores / max(row.inferred_fps, 1e-9) * 1000
        print(
            f"  (c) {row.cameras} cameras, batch {row.max_batch} {row.inferred_fps:6.1f} frames/s: "
            f"c/a {row.inferred_fps / a['fps']:.2f} ({verdict} 0.85), c/b "
            f"{row.inferred_fps / b:.2f}, p50/p99 {row.p50_ms:.0f}/{row.p99_ms:.0f} ms, "
            f"bandwidth {row.frame_bytes / max(row.summary_bytes, 1):,.0f}x; CPU/frame "
            f"{cpu_ms:.1f} ms vs ideal {a['total_ms']:.1f} ms; runtime {row.cpu_cores:.2f} + "
            f"load generator/brokers {row.other_cores:.2f} + other tenants "
            f"{row.foreign_cores:.2f} cores; with the machine to itself "
            f"{row.fps_whole_machine:.1f} frames/s = {row.fps_whole_machine / a['fps']:.2f} a"
        )
    print(f"  total bench time {time.perf_counter() - started:.0f} s; {load_avg()}")
    results.figure(
        "ab",
        "(b) naive per-frame loop (frames/s)",
        b,
        "frames/s",
        baseline=("(a) ideal limit", a["fps"]),
    )
    for row, (_, max_batch) in zip(rows, sweep, strict=True):
        results.figure(
            f"c{row.cameras}b{max_batch}",
            f"(c) {row.cameras} camera{'s' if row.cameras > 1 else ''} x 10 fps offered, "
            f"batch {max_batch} (frames/s)",
            row.inferred_fps,
            "frames/s",
            baseline=("(a) ideal limit", a["fps"]),
            note=f"CPU {row.cpu_cores / max(row.inferred_fps, 1e-9) * 1000:.1f} ms/frame, "
            f"p99 {row.p99_ms:.0f} ms",
        )
    results.data = {
        "ideal_fps": a["fps"],
        "ideal_ms_per_frame": a["total_ms"],
        "naive_fps": b,
        "cores": CORES,
        "end_to_end": [
            {
                "cameras": row.cameras,
                "max_batch": max_batch,
                "offered_fps": row.offered_fps,
                "inferred_fps": row.inferred_fps,
                "p50_ms": row.p50_ms,
                "p99_ms": row.p99_ms,
                "cpu_cores": row.cpu_cores,
                "rss_peak_mb": row.rss_peak_mb,
                "fps_whole_machine": row.fps_whole_machine,
                "machine": m.to_dict(),
            }
            for row, (_, max_batch), m in zip(rows, sweep, machines, strict=True)
        ],
    }
    results.write(args.json)


if __name__ == "__main__":
    main()
