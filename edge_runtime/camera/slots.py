"""Latest-frame-wins slots, one per camera, and the batch former that drains them.

Each camera has room for one pending frame.  A newer frame replaces a pending one (the old
one is counted as skipped), so a camera that sends faster than inference keeps only its
freshest frame waiting and memory stays bounded by the number of cameras.  :meth:`take`
forms a batch across cameras under a deadline: it waits for the first pending frame, then at
most ``max_wait`` seconds after that frame arrived for more cameras, up to ``max_n`` frames.

All methods run on the event loop; OpenCV reader threads hand frames over with
``loop.call_soon_threadsafe(slots.put, frame)``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from edge_runtime.camera.frames import Frame

__all__ = ["FrameSlots"]


class FrameSlots:
    """Pending frames keyed by camera, oldest-waiting camera first."""

    def __init__(
        self, cameras: Iterable[str], *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.cameras = tuple(cameras)
        self._known = frozenset(self.cameras)
        # camera -> (frame, monotonic arrival of the camera's oldest unserved frame);
        # dict order = order in which cameras started waiting
        self._pending: dict[str, tuple[Frame, float]] = {}
        self._ready = asyncio.Event()
        self._closed = False
        self._monotonic = monotonic
        self._on_taken: dict[str, Callable[[], None]] = {}
        self.skipped = 0
        self.taken = 0

    def __len__(self) -> int:
        """Cameras with a pending frame."""
        return len(self._pending)

    def __contains__(self, camera: str) -> bool:
        return camera in self._pending

    @property
    def closed(self) -> bool:
        return self._closed

    def on_taken(self, camera: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the loop) each time the camera's pending frame is taken."""
        self._on_taken[camera] = callback

    def put(self, frame: Frame) -> bool:
        """Store ``frame`` as its camera's pending frame; ``True`` if it replaced (skipped) one.

        Frames of unknown cameras raise ``KeyError``; after :meth:`close` frames are refused
        and ``False`` is returned without storing them.
        """
        if frame.camera not in self._known:
            raise KeyError(frame.camera)
        if self._closed:
            return False
        old = self._pending.get(frame.camera)
        if old is None:
            self._pending[frame.camera] = (frame, self._monotonic())
            self._ready.set()
            return False
        # keep the camera's place in line and its waiting time: it has waited since old arrived
        self._pending[frame.camera] = (frame, old[1])
        self.skipped += 1
        return True

    def close(self) -> None:
        """Refuse new frames; :meth:`take` still hands out what is pending, then ``[]``."""
        self._closed = True
        self._ready.set()

    async def take(self, max_n: int, max_wait: float) -> list[Frame]:
        """Up to ``max_n`` frames of different cameras; ``[]`` once closed and drained."""
        while not self._pending:
            if self._closed:
                return []
            self._ready.clear()
            await self._ready.wait()
        target = min(max_n, len(self.cameras))
        if len(self._pending) < target and not self._closed:
            oldest = next(iter(self._pending.values()))[1]
            deadline = oldest + max_wait
            while len(self._pending) < target and not self._closed:
                remaining = deadline - self._monotonic()
                if remaining <= 0:
                    break
                self._ready.clear()
                try:
                    async with asyncio.timeout(remaining):
                        await self._ready.wait()
                except TimeoutError:
                    break
        cameras = list(self._pending)[:max_n]
        frames = [self._pending.pop(camera)[0] for camera in cameras]
        self.taken += len(frames)
        for camera in cameras:
            callback = self._on_taken.get(camera)
            if callback is not None:
                callback()
        return frames
