"""The camera stage: frames from MQTT and OpenCV reader threads through the shared detector
model into per-camera analytics, window summaries and alerts.

:class:`CameraRunner` owns the worker-thread machinery of a camera pipeline: one OpenCV reader
thread per ``url`` camera, the :class:`~edge_runtime.camera.engine.BatchEngine` with its decode
threads and inference workers, and the per-camera state (:class:`CameraState`) the event loop
keeps between frames.  It takes its settings
(:class:`~edge_runtime.camera.config.CameraSettings`) and its clock and event counter from the
caller, so it runs without the pipeline plugin API (the camera pipeline plugin,
``edge_runtime_pipelines.camera``, is a thin layer over it).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from edge_runtime.camera.batching import FrameResult
from edge_runtime.camera.capture import OpenCVSource
from edge_runtime.camera.config import CameraSettings
from edge_runtime.camera.engine import BatchEngine
from edge_runtime.camera.frames import FpsSampler, Frame, PayloadError, parse_payload
from edge_runtime.camera.metrics import VideoStats
from edge_runtime.camera.model import get_model
from edge_runtime.camera.slots import FrameSlots
from edge_runtime.camera.zones import AlertResult, CameraAnalytics, CameraWindowResult
from edge_runtime.clock import Clock
from edge_runtime.types import RawMessage, Summary

__all__ = ["CameraRunner", "CameraState", "CountFn", "SubmitFn"]

CountFn = Callable[[str, int], None]
"""Counts ``n`` occurrences of an event (a pipeline context's ``count``)."""
SubmitFn = Callable[[Sequence[Summary]], Awaitable[None]]
"""Hands summaries on (a pipeline's submit function)."""


@dataclass(slots=True)
class CameraState:
    """One camera's analytics and bookkeeping, owned by the event loop."""

    analytics: CameraAnalytics
    sampler: FpsSampler
    latencies: list[float] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)  # since the last window closed
    open_until: float | None = None  # end of the window the last analysed frame fell in
    closed_until: float = -math.inf  # frames before this belong to windows already sent
    offset: float = 0.0  # wall clock minus capture time of the last analysed frame
    source: OpenCVSource | None = None
    source_sampled_out: int = 0  # source counter already accounted


class CameraRunner:
    """The camera stage of a pipeline: frames in, batched inference, per-camera analytics,
    window summaries and alerts out.

    Frames arrive through :meth:`offer` (MQTT messages, on the event loop) and from the
    OpenCV reader threads (handed to the loop by each :class:`OpenCVSource`); each camera keeps
    its latest frame in :attr:`slots`.  :meth:`run` loads the model and drives the
    :class:`BatchEngine` (decode threads, inference workers) until :meth:`close`; the
    summaries of windows that close, and alerts, go to ``submit``.  Events are counted through
    ``count(event, n)``; ``clock`` stamps frames that carry no capture time and measures the
    latency from receipt to analytics done.
    """

    def __init__(
        self,
        settings: CameraSettings,
        *,
        name: str,
        model_path: Path,
        clock: Clock,
        count: CountFn,
    ) -> None:
        self.settings = settings
        self.name = name
        self.model_path = model_path
        self.clock = clock
        self._count = count
        self.stats = VideoStats()
        self.slots = FrameSlots(c.id for c in settings.cameras)
        self.engine: BatchEngine | None = None
        #: Called with every analysed frame's result (tests, debugging, recording).
        self.detections_sink: Callable[[FrameResult], None] | None = None
        self._closed = False
        self._by_topic = {c.topic: c.id for c in settings.cameras if c.topic is not None}
        self._cameras: dict[str, CameraState] = {}
        for cam in settings.cameras:
            state = CameraState(
                analytics=CameraAnalytics(
                    cam.id, settings.analytics_for(cam), settings.model.class_names
                ),
                sampler=FpsSampler(cam.max_fps),
            )
            if cam.url is not None:
                state.source = OpenCVSource(
                    cam.id,
                    cam.url,
                    deliver=self._deliver,
                    max_fps=cam.max_fps,
                    realtime=cam.realtime,
                    repeat=cam.repeat,
                    reconnect_min_s=cam.reconnect_min_s,
                    reconnect_max_s=cam.reconnect_max_s,
                )
            self._cameras[cam.id] = state

    @property
    def sources(self) -> dict[str, OpenCVSource]:
        """The OpenCV reader of each camera that has a ``url``, by camera id."""
        return {c: s.source for c, s in self._cameras.items() if s.source is not None}

    # -- frames in (event loop) --------------------------------------------------------------

    def offer(self, message: RawMessage) -> None:
        """A frame from MQTT: parsed, rate-capped and put in its camera's slot."""
        camera = self._by_topic.get(message.topic)
        if camera is None:
            self._count("frames_unknown_topic", 1)
            return
        if self._closed:
            return
        self._arrived()
        try:
            ts, jpeg = parse_payload(message.payload)
        except PayloadError as exc:
            self._bad(camera, exc.reason)
            return
        received = message.received_at or self.clock.time()
        capture_ts = received if ts is None else ts
        if not self._cameras[camera].sampler.accept(capture_ts):
            self._drop(camera, "sampled_out")
            return
        self._store(Frame(camera, capture_ts, received, jpeg=jpeg))

    def _deliver(self, frame: Frame) -> None:
        """A frame from an OpenCV source thread, already sampled (runs on the loop)."""
        if self._closed:
            return
        self._arrived()
        self._store(frame)

    def _arrived(self) -> None:
        self.stats.frames_in += 1
        self._count("frames_in", 1)

    def _store(self, frame: Frame) -> None:
        if self.slots.put(frame):
            self._drop(frame.camera, "skipped")

    def _drop(self, camera: str, what: Literal["skipped", "sampled_out", "late"]) -> None:
        if what == "skipped":
            self.stats.frames_skipped += 1
        elif what == "sampled_out":
            self.stats.frames_sampled_out += 1
        self._cameras[camera].dropped[what] += 1
        self._count(f"frames_{what}", 1)

    def _bad(self, camera: str, reason: str) -> None:
        self.stats.frames_bad[reason] += 1
        self._cameras[camera].dropped["bad"] += 1
        self._count(f"frames_bad_{reason}", 1)

    # -- the stage ----------------------------------------------------------------------------

    async def run(self, submit: SubmitFn) -> None:
        """Load the model and run frames through it until :meth:`close`; start and stop the
        OpenCV reader threads."""
        cfg = self.settings
        if cfg.opencv_threads:
            cv2.setNumThreads(cfg.opencv_threads)
        model_config = cfg.model.model_copy(update={"path": self.model_path})
        model = await asyncio.to_thread(get_model, model_config, self.model_path.parent)
        self.engine = BatchEngine(
            model,
            self.slots,
            max_batch=cfg.batch.max_batch,
            max_wait_s=cfg.batch.max_wait_ms / 1000.0,
            decode_threads=cfg.decode_threads,
            limits=cfg.limits,
            prefetch=cfg.batch.prefetch,
            stats=self.stats,
        )
        loop = asyncio.get_running_loop()
        sources = [s.source for s in self._cameras.values() if s.source is not None]
        for source in sources:
            self.slots.on_taken(source.camera, source.frame_taken)
            source.start(loop)

        async def on_results(results: Sequence[FrameResult]) -> None:
            summaries = self._analyse(results)
            if summaries:
                await submit(summaries)

        try:
            await self.engine.run(on_results)
        finally:
            for source in sources:
                source.stop()
            if sources:
                await asyncio.to_thread(_join_all, sources, 5.0)

    async def settle(self) -> None:
        """Wait until no frame is pending or in flight (replays: nothing is skipped)."""
        # the engine has no "idle" event: look every 2 ms
        while self._busy():  # noqa: ASYNC110
            await asyncio.sleep(0.002)

    def _busy(self) -> bool:
        in_flight = sum(self.engine.in_flight.values()) if self.engine is not None else 0
        return bool(len(self.slots) or in_flight)

    def close(self) -> None:
        """Stop taking frames: the engine drains what is pending and :meth:`run` returns."""
        self._closed = True
        self.slots.close()
        for state in self._cameras.values():
            if state.source is not None:
                state.source.stop()

    def _analyse(self, results: Sequence[FrameResult]) -> list[Summary]:
        """Per-camera analytics of one batch, in frame order; summaries of closed windows."""
        out: list[Summary] = []
        inferred = 0
        for result in results:
            frame = result.frame
            state = self._cameras[frame.camera]
            if result.detections is None or result.frame_size is None:
                if result.error == "inference_failed":
                    state.dropped["failed"] += 1
                    self._count("frames_failed", 1)
                else:
                    self._bad(frame.camera, result.error or "unknown")
                continue
            inferred += 1
            if self.detections_sink is not None:
                self.detections_sink(result)
            if frame.ts < state.closed_until:
                self._drop(frame.camera, "late")
                continue
            analysed = state.analytics.process(frame.ts, result.detections, result.frame_size)
            out.extend(self._window_summary(state, w) for w in analysed.windows)
            out.extend(self._alert(a) for a in analysed.alerts)
            window_s = self.settings.window_s
            if state.open_until is None or frame.ts >= state.open_until:
                state.open_until = (frame.ts // window_s) * window_s + window_s
            now = self.clock.time()
            state.offset = now - frame.ts
            latency = max(0.0, now - frame.received_at)
            state.latencies.append(latency)
            self.stats.latency.add(latency)
        self._count("batches", 1)
        self._count("frames_inferred", inferred)
        return out

    def _window_summary(self, state: CameraState, window: CameraWindowResult) -> Summary:
        self._collect_source_counts(state)
        stats: dict[str, float | int | None] = dict(window.stats)
        if state.latencies:
            p50, p99 = np.percentile(np.asarray(state.latencies), [50, 99]).tolist()
            stats["latency.p50_ms"] = round(p50 * 1000, 2)
            stats["latency.p99_ms"] = round(p99 * 1000, 2)
        else:
            stats["latency.p50_ms"] = stats["latency.p99_ms"] = None
        for what in ("skipped", "sampled_out", "bad", "late", "failed"):
            stats[f"frames.{what}"] = state.dropped[what]
        state.latencies.clear()
        state.dropped.clear()
        state.closed_until = max(state.closed_until, window.window_end)
        return Summary(
            pipeline=self.name,
            key=window.camera,
            window_start=window.window_start,
            window_end=window.window_end,
            stats=stats,
            attrs={"model": self.settings.model.name},
        )

    def _alert(self, alert: AlertResult) -> Summary:
        self._count("alerts", 1)
        return Summary(
            pipeline=self.name,
            key=f"{alert.camera}/{alert.rule}",
            window_start=alert.ts,
            window_end=alert.ts,
            stats={"value": alert.value, "threshold": alert.threshold},
            kind="alert",
            attrs={
                "camera": alert.camera,
                "rule": alert.rule,
                "metric": alert.metric,
                "class": alert.class_name,
                "zone": alert.zone,
                "op": alert.op,
                "message": alert.message,
            },
        )

    def _collect_source_counts(self, state: CameraState) -> None:
        """Fold an OpenCV source thread's sampling counter into the loop-side counters."""
        if state.source is None:
            return
        delta = state.source.frames_sampled_out - state.source_sampled_out
        if delta:
            state.source_sampled_out += delta
            self.stats.frames_in += delta
            self.stats.frames_sampled_out += delta
            state.dropped["sampled_out"] += delta
            self._count("frames_in", delta)
            self._count("frames_sampled_out", delta)

    # -- timer, shutdown, gauges --------------------------------------------------------------

    def on_tick(self, now: float) -> list[Summary]:
        """Close the windows of cameras that went quiet (no frame waiting or in flight)."""
        out: list[Summary] = []
        in_flight = self.engine.in_flight if self.engine is not None else Counter[str]()
        for camera, state in self._cameras.items():
            self._collect_source_counts(state)
            if state.open_until is None or camera in self.slots or in_flight[camera] > 0:
                continue
            if now - state.offset < state.open_until + self.settings.idle_close_s:
                continue
            out.extend(self._close_window(state))
        return out

    def flush(self) -> list[Summary]:
        """Close every camera's open window (shutdown)."""
        out: list[Summary] = []
        for state in self._cameras.values():
            out.extend(self._close_window(state))
        return out

    def _close_window(self, state: CameraState) -> list[Summary]:
        summaries = [self._window_summary(state, w) for w in state.analytics.flush()]
        if state.open_until is not None:
            state.closed_until = max(state.closed_until, state.open_until)
        state.open_until = None
        return summaries

    def gauges(self) -> dict[str, float]:
        """The pipeline's gauges: queue depths, latency percentiles, frame counters."""
        stats = self.stats
        p50, p99 = stats.latency.percentiles(50, 99)
        engine = self.engine
        return {
            "pending_frames": float(len(self.slots)),
            "in_flight_frames": float(sum(engine.in_flight.values())) if engine else 0.0,
            "queued_batches": float(engine.queued_batches) if engine else 0.0,
            "latency_p50_ms": p50 * 1000,
            "latency_p99_ms": p99 * 1000,
            "frames_skipped": float(stats.frames_skipped),
            "frames_sampled_out": float(stats.frames_sampled_out),
            "frames_bad": float(sum(stats.frames_bad.values())),
            "frames_inferred": float(stats.frames_inferred),
            "batches": float(stats.batches),
            "mean_batch_size": stats.mean_batch,
            "inference_busy_seconds": stats.infer_busy_s,
        }


def _join_all(sources: Sequence[OpenCVSource], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for source in sources:
        source.join(max(0.0, deadline - time.monotonic()))
