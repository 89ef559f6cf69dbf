"""Loading a detector model into onnxruntime sessions and running batches through it.

:func:`get_model` loads each declared model once per process (keyed by file, hash and
declaration) and hands out the shared :class:`DetectorModel`.  A model owns a small pool of
sessions (its *layout*): :meth:`DetectorModel.infer` takes a free session, runs the batch and
gives it back, so several worker threads may call it at once; onnxruntime releases the GIL while
it runs.  With ``layout = "auto"`` the candidates from :func:`candidate_layouts` are timed on a
sample batch at load and the fastest is kept.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from edge_runtime.camera.boxes import Decoder, Detections, make_decoder
from edge_runtime.camera.errors import InferenceError, ModelChecksumError, ModelLoadError
from edge_runtime.camera.model_config import ModelConfig, SessionLayout

__all__ = [
    "AutotuneResult",
    "DetectorModel",
    "LayoutTiming",
    "autotune",
    "candidate_layouts",
    "clear_model_cache",
    "file_sha256",
    "get_model",
]

log = logging.getLogger(__name__)

F32 = NDArray[np.float32]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_verified(config: ModelConfig, path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(
            path,
            f"cannot read the file ({exc.strerror}); check the path of model "
            f"{config.name!r} (relative paths are resolved against the configuration's folder)",
        ) from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != config.sha256:
        raise ModelChecksumError(path, config.sha256, actual)
    return data


def _session_options(config: ModelConfig, threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = config.session.inter_op_threads
    opts.log_severity_level = 3  # errors only; shape hints of exported graphs are noisy
    spin = "1" if config.session.allow_spinning else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return opts


def _build_sessions(
    config: ModelConfig, path: Path, data: bytes, layout: SessionLayout
) -> list[ort.InferenceSession]:
    sessions = []
    for _ in range(layout.sessions):
        try:
            sessions.append(
                ort.InferenceSession(
                    data,
                    _session_options(config, layout.intra_op_threads),
                    providers=["CPUExecutionProvider"],
                )
            )
        except Exception as exc:  # onnxruntime raises its own untyped exception classes
            raise ModelLoadError(path, f"onnxruntime cannot load it: {exc}") from exc
    return sessions


def _check_interface(
    config: ModelConfig, path: Path, session: ort.InferenceSession, decoder: Decoder
) -> None:
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    spec = config.input
    if spec.name not in inputs:
        raise ModelLoadError(
            path, f"no input named {spec.name!r} (inputs: {sorted(inputs)}); fix input.name"
        )
    shape = inputs[spec.name]
    if len(shape) != 4 or list(shape[1:]) != [3, spec.height, spec.width]:
        raise ModelLoadError(
            path,
            f"input {spec.name!r} has shape {shape}, the declaration says "
            f"[batch, 3, {spec.height}, {spec.width}]; fix input.width/height",
        )
    missing = [name for name in decoder.output_names if name not in outputs]
    if missing:
        raise ModelLoadError(
            path,
            f"outputs {missing} named by the decoder do not exist (outputs: "
            f"{sorted(outputs)}); fix the decoder section",
        )
    if isinstance(shape[0], int) and shape[0] == 1 and config.session.max_batch > 1:
        raise ModelLoadError(
            path,
            "the batch dimension is fixed to 1; set session.max_batch = 1 or use a file "
            "with a symbolic batch dimension (see models/nanodet-m-coco/make_dynbatch.py)",
        )


@dataclass(frozen=True, slots=True)
class LayoutTiming:
    """Throughput one layout reached during :func:`autotune`."""

    layout: SessionLayout
    images_per_s: float


@dataclass(frozen=True, slots=True)
class AutotuneResult:
    best: SessionLayout
    timings: tuple[LayoutTiming, ...]


def candidate_layouts(cpus: int | None = None) -> list[SessionLayout]:
    """Layouts worth timing on ``cpus`` cores: one wide session, a few narrow ones."""
    n = max(1, cpus if cpus is not None else (os.cpu_count() or 1))
    shapes = {(1, n), (n, 1)}
    if n >= 4:
        shapes.add((2, n // 2))
    if n >= 8:
        shapes.add((n // 4, 4))
    return [SessionLayout(sessions=s, intra_op_threads=t) for s, t in sorted(shapes)]


def _throughput(
    sessions: Sequence[ort.InferenceSession], input_name: str, sample: F32, seconds: float
) -> float:
    counts = [0] * len(sessions)
    sessions[0].run(None, {input_name: sample})  # warm-up (allocations, kernel selection)
    deadline = time.perf_counter() + seconds

    def work(index: int) -> None:
        while time.perf_counter() < deadline:
            sessions[index].run(None, {input_name: sample})
            counts[index] += sample.shape[0]

    start = time.perf_counter()
    threads = [
        threading.Thread(target=work, args=(i,), name=f"autotune-{i}") for i in range(len(sessions))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def autotune(
    config: ModelConfig,
    base_dir: Path,
    sample: F32,
    candidates: Sequence[SessionLayout] | None = None,
) -> AutotuneResult:
    """Time each candidate layout on ``sample`` (a preprocessed (n, 3, H, W) batch, ideally
    real frames) for ``session.autotune_seconds`` and return the fastest."""
    path = config.resolved_path(base_dir)
    data = _read_verified(config, path)
    batch = np.ascontiguousarray(sample[: config.session.max_batch], np.float32)
    timings = []
    for layout in candidates or candidate_layouts():
        sessions = _build_sessions(config, path, data, layout)
        rate = _throughput(sessions, config.input.name, batch, config.session.autotune_seconds)
        log.info(
            "model %s autotune: %s -> %.1f images/s (batch %d)",
            config.name,
            layout.describe(),
            rate,
            batch.shape[0],
        )
        timings.append(LayoutTiming(layout, rate))
        del sessions
    best = max(timings, key=lambda t: t.images_per_s)
    return AutotuneResult(best.layout, tuple(timings))


def _synthetic_sample(config: ModelConfig) -> F32:
    """A deterministic smooth stand-in frame batch, used when autotune has no real frames."""
    spec = config.input
    rng = np.random.default_rng(0)
    coarse = rng.normal(size=(config.session.max_batch, 3, 13, 13)).astype(np.float32)
    reps = (1, 1, -(-spec.height // 13), -(-spec.width // 13))
    return np.ascontiguousarray(np.tile(coarse, reps)[:, :, : spec.height, : spec.width])


class DetectorModel:
    """A loaded detector: a pool of onnxruntime sessions plus the output decoder.

    Build it with :meth:`load` (or the shared :func:`get_model`).  :meth:`infer` may be called
    from several threads at once; each call holds one session of the pool while it runs.
    """

    def __init__(
        self,
        config: ModelConfig,
        path: Path,
        sessions: list[ort.InferenceSession],
        layout: SessionLayout,
        decoder: Decoder,
    ):
        self.config = config
        self.path = path
        self.layout = layout
        self.decoder = decoder
        self._pool: queue.SimpleQueue[ort.InferenceSession] = queue.SimpleQueue()
        for session in sessions:
            self._pool.put(session)
        self._output_names = list(decoder.output_names)

    @classmethod
    def load(cls, config: ModelConfig, base_dir: Path, sample: F32 | None = None) -> DetectorModel:
        """Verify the file's sha256 and build the sessions; ``sample`` feeds autotuning."""
        path = config.resolved_path(base_dir)
        started = time.perf_counter()
        data = _read_verified(config, path)
        layout = config.session.layout
        if layout == "auto":
            probe = sample if sample is not None else _synthetic_sample(config)
            layout = autotune(config, base_dir, probe).best
        decoder = make_decoder(config)
        sessions = _build_sessions(config, path, data, layout)
        _check_interface(config, path, sessions[0], decoder)
        log.info(
            "loaded model %s from %s (%s) in %.0f ms",
            config.name,
            path,
            layout.describe(),
            (time.perf_counter() - started) * 1000,
        )
        return cls(config, path, sessions, layout, decoder)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def concurrency(self) -> int:
        """How many :meth:`infer` calls can run in parallel (the number of sessions)."""
        return self.layout.sessions

    @property
    def max_batch(self) -> int:
        return self.config.session.max_batch

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    @contextmanager
    def _session(self) -> Iterator[ort.InferenceSession]:
        session = self._pool.get()
        try:
            yield session
        finally:
            self._pool.put(session)

    def run_raw(self, batch: F32) -> dict[str, F32]:
        """Run one chunk of at most ``max_batch`` frames; the decoder's outputs by name."""
        if batch.ndim != 4 or batch.dtype != np.float32:
            raise InferenceError(
                f"expected a float32 (n, 3, H, W) batch, got {batch.dtype} {batch.shape}"
            )
        if batch.shape[0] > self.max_batch:
            raise InferenceError(
                f"batch of {batch.shape[0]} frames exceeds max_batch = {self.max_batch}"
            )
        feed: dict[str, Any] = {self.config.input.name: np.ascontiguousarray(batch)}
        with self._session() as session:
            values = session.run(self._output_names, feed)
        return dict(zip(self._output_names, values, strict=True))

    def infer(self, batch: F32, frame_sizes: NDArray[np.integer] | None = None) -> list[Detections]:
        """Detections for each frame of ``batch``; boxes in frame pixels when ``frame_sizes``
        ((n, 2) width, height, as the batch was filled) is given, else in model input pixels
        (letterbox bands included).  The placement of each frame in the input (letterbox or
        stretch) is derived from its size and ``config.input``."""
        if batch.shape[0] == 0:
            return []
        sizes = None if frame_sizes is None else np.asarray(frame_sizes).reshape(-1, 2)
        if sizes is not None and sizes.shape[0] != batch.shape[0]:
            raise InferenceError(
                f"{batch.shape[0]} frames but {sizes.shape[0]} frame sizes were given"
            )
        result: list[Detections] = []
        for lo in range(0, batch.shape[0], self.max_batch):
            hi = lo + self.max_batch
            outputs = self.run_raw(batch[lo:hi])
            result.extend(self.decoder.decode(outputs, None if sizes is None else sizes[lo:hi]))
        return result


_cache: dict[tuple[str, str, str], DetectorModel] = {}
_cache_lock = threading.Lock()


def get_model(config: ModelConfig, base_dir: Path, sample: F32 | None = None) -> DetectorModel:
    """The shared :class:`DetectorModel` for this declaration, loading it on first use."""
    path = config.resolved_path(base_dir).resolve()
    key = (str(path), config.sha256, config.model_dump_json())
    with _cache_lock:
        model = _cache.get(key)
        if model is None:
            model = DetectorModel.load(config, base_dir, sample)
            _cache[key] = model
        return model


def clear_model_cache() -> None:
    """Forget all shared models (their sessions are released once no one holds them)."""
    with _cache_lock:
        _cache.clear()
