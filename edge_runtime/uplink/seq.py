"""Per-site sequence numbers that only grow, also across restarts."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SeqAllocator"]


class SeqAllocator:
    """Hands out increasing sequence numbers, reserving them in blocks on disk.

    The high-water mark of the reserved block is written (and fsynced) before any number of the
    block is used, so a restart never reuses a number; a crash leaves at most one block unused,
    which the core sees as a gap it can tell apart from loss by the restart it coincides with.
    """

    def __init__(self, path: Path, block: int = 10_000) -> None:
        self.path = path
        self.block = block
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._next = int(path.read_text(encoding="ascii").strip() or 0)
        except FileNotFoundError:
            self._next = 0
        except ValueError:
            # A torn write of the state file: skip far ahead rather than risk reusing numbers.
            self._next = int(path.stat().st_mtime_ns)
        self._reserved = self._next

    def _reserve(self, upto: int) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="ascii") as fh:
            fh.write(str(upto))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)
        self._reserved = upto

    def take(self, n: int = 1) -> int:
        """Reserve ``n`` consecutive numbers and return the first."""
        first = self._next
        if first + n > self._reserved:
            self._reserve(first + n + self.block)
        self._next = first + n
        return first
