"""The batched inference hot loop: slots → batch former → decode threads → inference workers.

Stages overlap so both cores stay busy::

    former:   take batch k+1 from the slots, decode it into a free buffer (decode threads)
    worker i: run batch k through onnxruntime (inference threads), free its buffer
    complete: hand finished batches to the caller strictly in batch order

There are ``workers + prefetch`` buffers: while every worker infers one batch, the former
prepares up to ``prefetch`` more; when all buffers are busy the former waits, and frames keep
waiting in their latest-frame-wins slots (where newer frames replace them), which is the
overload policy.  One worker runs per session of the model's layout (``model.concurrency``), so
a ``2 x 1 thread`` layout gets two batches in flight and a ``1 x 2 threads`` layout one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from edge_runtime.camera.batching import BatchBuffer, FrameResult, PreparedBatch, prepare_batch
from edge_runtime.camera.boxes import Detections
from edge_runtime.camera.metrics import VideoStats
from edge_runtime.camera.model import DetectorModel
from edge_runtime.camera.model_config import FrameLimits
from edge_runtime.camera.slots import FrameSlots

__all__ = ["BatchEngine", "ResultsFn"]

log = logging.getLogger(__name__)

ResultsFn = Callable[[Sequence[FrameResult]], Awaitable[None]]


class BatchEngine:
    """Runs frames from ``slots`` through ``model`` until the slots are closed and drained."""

    def __init__(
        self,
        model: DetectorModel,
        slots: FrameSlots,
        *,
        max_batch: int,
        max_wait_s: float,
        decode_threads: int,
        limits: FrameLimits,
        prefetch: int = 1,
        stats: VideoStats | None = None,
    ) -> None:
        if max_batch < 1 or decode_threads < 1 or prefetch < 0:
            raise ValueError("max_batch and decode_threads must be >= 1, prefetch >= 0")
        self.model = model
        self.slots = slots
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.decode_threads = decode_threads
        self.limits = limits
        self.workers = model.concurrency
        self.stats = stats or VideoStats()
        self.in_flight: Counter[str] = Counter()  # frames per camera taken but not completed
        self._buffers = [
            BatchBuffer(max_batch, model.config.input) for _ in range(self.workers + prefetch)
        ]
        self._free: asyncio.Queue[BatchBuffer] = asyncio.Queue()
        self._ready: asyncio.Queue[PreparedBatch | None] = asyncio.Queue(len(self._buffers))
        self._done: dict[int, list[FrameResult]] = {}
        self._next = 0
        self._complete_lock = asyncio.Lock()

    @property
    def buffers(self) -> int:
        return len(self._buffers)

    @property
    def queued_batches(self) -> int:
        """Prepared batches waiting for an inference worker."""
        return self._ready.qsize()

    async def run(self, on_results: ResultsFn) -> None:
        """Process batches until the slots are closed and empty; ``on_results`` gets each
        batch's per-frame results in batch order (so per-camera frames stay in order)."""
        for buffer in self._buffers:
            self._free.put_nowait(buffer)
        decode_pool = ThreadPoolExecutor(self.decode_threads, thread_name_prefix="camera-decode")
        infer_pool = ThreadPoolExecutor(self.workers, thread_name_prefix="camera-infer")
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._form(decode_pool), name="camera-batch-former")
                for i in range(self.workers):
                    tg.create_task(self._infer(infer_pool, on_results), name=f"camera-infer-{i}")
        finally:
            decode_pool.shutdown(wait=False, cancel_futures=True)
            infer_pool.shutdown(wait=False, cancel_futures=True)

    async def _form(self, pool: ThreadPoolExecutor) -> None:
        seq = 0
        try:
            while True:
                buffer = await self._free.get()
                frames = await self.slots.take(self.max_batch, self.max_wait_s)
                if not frames:
                    self._free.put_nowait(buffer)
                    break
                for frame in frames:
                    self.in_flight[frame.camera] += 1
                prepared = await prepare_batch(seq, frames, buffer, pool, self.limits)
                await self._ready.put(prepared)
                seq += 1
        finally:
            for _ in range(self.workers):
                await self._ready.put(None)

    async def _infer(self, pool: ThreadPoolExecutor, on_results: ResultsFn) -> None:
        loop = asyncio.get_running_loop()
        while (batch := await self._ready.get()) is not None:
            detections: list[Detections] | None = []
            started = time.perf_counter()
            try:
                if batch.good:
                    detections = await loop.run_in_executor(
                        pool, self.model.infer, batch.tensor, batch.sizes
                    )
            except Exception:  # onnxruntime raises untyped errors; same policy as the runtime
                # for batch plugins: the batch is counted as failed, with its traceback logged
                log.exception("inference failed on a batch of %d frames", len(batch.good))
                detections = None
            finally:
                self.stats.infer_busy_s += time.perf_counter() - started
                sizes = [(int(w), int(h)) for w, h in batch.sizes.tolist()]
                self._free.put_nowait(batch.buffer)
            if detections is None:
                self.stats.frames_failed += len(batch.good)
                results = [FrameResult(f, error="inference_failed") for f in batch.good]
            else:
                results = [
                    FrameResult(frame, dets, size)
                    for frame, dets, size in zip(batch.good, detections, sizes, strict=True)
                ]
                self.stats.frames_inferred += len(results)
            if batch.good:
                self.stats.batches += 1
            await self._complete(batch.seq, [*results, *batch.rejected], on_results)

    async def _complete(self, seq: int, results: list[FrameResult], on_results: ResultsFn) -> None:
        self._done[seq] = results
        async with self._complete_lock:
            while self._next in self._done:
                ready = self._done.pop(self._next)
                self._next += 1
                for result in ready:
                    self.in_flight[result.frame.camera] -= 1
                await on_results(ready)
