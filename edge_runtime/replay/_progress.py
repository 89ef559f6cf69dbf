"""Progress on stderr for the record and replay commands.

On a terminal it is a :mod:`rich.progress` display (bar and percentage when the total is known,
then the text) redrawn in place; on a pipe or a file it is a plain text line at most every
``every_s`` seconds, without escape codes, so that logs stay readable.
"""

from __future__ import annotations

import atexit
import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
)

__all__ = ["ProgressLine", "human_bytes"]


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class ProgressLine:
    """One progress line: :meth:`show` updates it (``fraction`` in [0, 1] when the total is
    known), :meth:`done` writes the last one."""

    def __init__(self, stream: TextIO | None = None, *, every_s: float = 1.0) -> None:
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.console = Console(file=self.stream, highlight=False)
        self.tty = self.console.is_terminal
        self._last = float("-inf")
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def show(self, text: str, *, fraction: float | None = None, force: bool = False) -> None:
        if fraction is not None:
            fraction = min(1.0, max(0.0, fraction))
        if self.tty:
            self._update(text, fraction)
            return
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        percent = "" if fraction is None else f"{fraction * 100:3.0f}% "
        self.stream.write(percent + text + "\n")
        self.stream.flush()

    def done(self, text: str) -> None:
        progress, self._progress = self._progress, None
        if progress is not None:
            assert self._task is not None
            progress.update(self._task, description=text)
            progress.stop()  # leaves the last state on screen
            atexit.unregister(progress.stop)
        elif self.tty:
            self.console.print(text, markup=False, soft_wrap=True)
        else:
            self.show(text, force=True)

    def _update(self, text: str, fraction: float | None) -> None:
        if self._progress is None:
            columns: list[ProgressColumn] = []
            if fraction is not None:
                columns = [BarColumn(bar_width=24), TaskProgressColumn()]
            self._progress = Progress(
                *columns, TextColumn("{task.description}", markup=False), console=self.console
            )
            self._task = self._progress.add_task(text, total=1.0 if fraction is not None else None)
            self._progress.start()
            # a command that fails half-way must still give the terminal its cursor back
            atexit.register(self._progress.stop)
        assert self._task is not None
        self._progress.update(self._task, description=text, completed=fraction)
