"""A camera read with OpenCV (video file, RTSP/HTTP URL) in its own thread, with reconnect.

The reader thread grabs frames, applies the camera's rate cap *before* the costly
``retrieve`` (a frame over the cap is never converted), and hands each kept frame to the event
loop with ``loop.call_soon_threadsafe``.  Live sources (any URL with a scheme, or a device
number) are timestamped with the wall clock and reconnected with exponential backoff, jitter
and a cap when they fail or end.  Files are timestamped by media time (open time + frame index
/ file fps) and either paced at their own frame rate (``realtime``, like a live camera; frames
the pipeline cannot keep up with are skipped in the latest-frame-wins slot) or read as fast as
the pipeline takes them (no frame skipped: the thread waits until its previous frame was taken,
for replays and tests).  At the end of a file the source stops, or starts over with ``repeat``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2

from edge_runtime.backoff import Backoff
from edge_runtime.camera.frames import FpsSampler, Frame

__all__ = ["OpenCVSource", "is_live_url"]

log = logging.getLogger(__name__)


def is_live_url(url: str) -> bool:
    """True for streams (``rtsp://``, ``http://`` ..., or a capture device number)."""
    return "://" in url or url.isdigit()


class OpenCVSource:
    """Reads one OpenCV source for ``camera`` until :meth:`stop`."""

    def __init__(
        self,
        camera: str,
        url: str,
        *,
        deliver: Callable[[Frame], None],
        max_fps: float | None = None,
        realtime: bool = True,
        repeat: bool = False,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.camera = camera
        self.url = url
        self.live = is_live_url(url)
        self.realtime = realtime or self.live
        self.repeat = repeat
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self._backoff = Backoff(reconnect_min_s, reconnect_max_s)
        self._deliver = deliver
        self._max_fps = max_fps
        self._time = wall_clock
        self._stop = threading.Event()
        self._taken = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # written by the reader thread only, read by the loop (plain ints: torn reads can't
        # happen in CPython)
        self.frames_read = 0
        self.frames_sampled_out = 0
        self.read_errors = 0
        self.connects = 0
        self.open_failures = 0
        self.state = "idle"

    # -- control (event loop side) ----------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run, name=f"camera-source-{self.camera}", daemon=True
        )
        self._thread.start()

    def frame_taken(self) -> None:
        """The pipeline took this camera's pending frame (lets a non-realtime reader go on)."""
        self._taken.set()

    def stop(self) -> None:
        self._stop.set()
        self._taken.set()

    def join(self, timeout: float) -> bool:
        """Wait for the thread (blocking: call through ``asyncio.to_thread``); True if ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- reader thread ----------------------------------------------------------------------

    def _run(self) -> None:
        backoff = self._backoff
        sampler = FpsSampler(self._max_fps)
        while not self._stop.is_set():
            capture = self._open()
            if capture is None:
                self.open_failures += 1
            else:
                self.connects += 1
                got_frames = self._read(capture, sampler)
                capture.release()
                if got_frames:
                    backoff.reset()
                if not self.live and not self._stop.is_set():
                    if not self.repeat:
                        self.state = "ended"
                        log.info("camera %s: end of %s", self.camera, self.url)
                        return
                    if got_frames:
                        sampler = FpsSampler(self._max_fps)  # media time starts over
                        continue
            if self._stop.is_set():
                break
            delay = backoff.next_delay()
            self.state = "reconnecting"
            log.warning(
                "camera %s: source %s unavailable, retrying in %.1fs", self.camera, self.url, delay
            )
            self._stop.wait(delay)
        self.state = "stopped"

    def _open(self) -> Any:
        self.state = "connecting"
        target: str | int = int(self.url) if self.url.isdigit() else self.url
        if not self.live and not Path(self.url).is_file():
            log.warning("camera %s: no such video file %s", self.camera, self.url)
            return None
        capture = cv2.VideoCapture(target)
        if not capture.isOpened():
            capture.release()
            return None
        return capture

    def _read(self, capture: Any, sampler: FpsSampler) -> bool:
        """Read until the source ends, fails or the source is stopped; True if any frame."""
        self.state = "running"
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        fps = fps if 0.0 < fps < 1000.0 else 25.0
        opened = self._time()
        index = -1
        got = False
        while not self._stop.is_set():
            if not capture.grab():
                break
            index += 1
            now = self._time()
            ts = now if self.live else opened + index / fps
            if not sampler.accept(ts):
                self.frames_sampled_out += 1
                continue
            ok, image = capture.retrieve()
            if not ok or image is None:
                self.read_errors += 1
                continue
            got = True
            if self.realtime and not self.live:
                wait = ts - self._time()
                if wait > 0 and self._stop.wait(wait):
                    break
            self.frames_read += 1
            frame = Frame(self.camera, ts, self._time(), image=image)
            self._taken.clear()
            if not self._hand_over(frame):
                break
            if not self.realtime:
                self._taken.wait()
        return got

    def _hand_over(self, frame: Frame) -> bool:
        loop = self._loop
        if loop is None:
            return False
        try:
            loop.call_soon_threadsafe(self._deliver, frame)
        except RuntimeError:  # the loop is closed: the runtime is gone
            self._stop.set()
            return False
        return True
