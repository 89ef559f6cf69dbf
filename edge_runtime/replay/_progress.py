"""Progress on stderr for the record and replay commands: a one-line text bar, no extra deps."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressLine", "human_bytes"]


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class ProgressLine:
    """Rewrites one status line in place on a terminal; on a pipe or file, prints a line at
    most every ``every_s`` seconds (so logs stay readable)."""

    def __init__(self, stream: TextIO | None = None, *, every_s: float = 1.0) -> None:
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.tty = self.stream.isatty()
        self._last = float("-inf")
        self._width = 0

    def show(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (0.1 if self.tty else self.every_s):
            return
        self._last = now
        if self.tty:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self, text: str) -> None:
        self.show(text, force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    @staticmethod
    def bar(fraction: float, width: int = 24) -> str:
        fraction = min(1.0, max(0.0, fraction))
        full = int(fraction * width)
        return "[" + "#" * full + "-" * (width - full) + f"] {fraction * 100:3.0f}%"
