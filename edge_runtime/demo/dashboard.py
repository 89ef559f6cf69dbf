"""The demo's live terminal dashboard: a :mod:`rich` table redrawn in place every second.

Off a terminal, or with ``--no-dashboard``, it prints a plain status line every 5 s instead (no
escape codes), and each event on a line of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from edge_runtime.core import CoreReceiver
    from edge_runtime.runtime.site import SiteRuntime

__all__ = ["Dashboard"]


class Dashboard:
    """Redraws a status panel every second (``live``), or prints a status line every 5 s."""

    def __init__(self, site: SiteRuntime, core: CoreReceiver, *, live: bool) -> None:
        self.site = site
        self.core = core
        self.console = Console(file=sys.stdout, highlight=False)
        self.live = live and self.console.is_terminal
        self.events: list[str] = []
        self._stop = asyncio.Event()
        self._t0 = time.monotonic()
        self._last = (self._t0, 0, 0)

    def event(self, text: str) -> None:
        stamp = f"[{time.monotonic() - self._t0:6.1f}s] {text}"
        self.events.append(stamp)
        if not self.live:
            print(stamp, flush=True)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        if not self.live:
            await self._every(5.0, self._print_line)
            self._print_line()
            return
        # redrawn by this task only (no refresh thread reading the runtime's counters)
        stderr = sys.stderr
        with (
            Live(self._panel(), console=self.console, auto_refresh=False) as live,
            _logs_above_the_panel(stderr),
        ):
            await self._every(1.0, lambda: live.update(self._panel(), refresh=True))
            live.update(self._panel(), refresh=True)

    async def _every(self, interval: float, draw: Callable[[], None]) -> None:
        while not self._stop.is_set():
            draw()
            try:
                async with asyncio.timeout(interval):
                    await self._stop.wait()
            except TimeoutError:
                pass

    def _figures(self) -> dict[str, float | str]:
        stats = self.site.stats
        now = time.monotonic()
        readings = sum(stats.readings_in.values())
        t, m0, r0 = self._last
        dt = max(now - t, 1e-6)
        rates = ((stats.messages_in - m0) / dt, (readings - r0) / dt)
        self._last = (now, stats.messages_in, readings)
        cam = stats.pipeline_events.get("street-cam") or Counter[str]()
        akl = stats.pipeline_events.get("akl-pedestrians") or Counter[str]()
        uplink = stats.uplink() if stats.uplink else {}
        core = self.core.status()
        site = core["sites"].get(self.site.config.site_id, {})
        return {
            "msg_rate": rates[0],
            "reading_rate": rates[1],
            "readings": readings,
            "windows": akl.get("windows_emitted", 0),
            "frames": cam.get("frames_inferred", 0),
            "skipped": cam.get("frames_skipped", 0),
            "alerts": cam.get("alerts", 0),
            "uplink": str(uplink.get("state", "?")),
            "depth": uplink.get("pending", 0),
            "sent": uplink.get("sent", 0),
            "core": site.get("received", 0),
            "gaps": site.get("missing", 0),
        }

    def _print_line(self) -> None:
        f = self._figures()
        elapsed = time.monotonic() - self._t0
        print(
            f"[{elapsed:6.1f}s] {f['msg_rate']:,.0f} msg/s, {f['readings']:,} readings, "
            f"{f['windows']} windows, {f['frames']} frames, uplink {f['uplink']}, "
            f"spool {f['depth']}, core {f['core']}",
            flush=True,
        )

    def _panel(self) -> Group:
        f = self._figures()
        elapsed = time.monotonic() - self._t0
        table = Table(
            title=f"edge-runtime demo   {elapsed:6.1f} s",
            title_justify="left",
            show_header=False,
            box=None,
            padding=(0, 2),
        )
        table.add_column(style="bold")
        for _ in range(3):
            table.add_column(justify="right")
        table.add_row(
            "ingest", f"{f['msg_rate']:,.0f} msg/s", f"{f['reading_rate']:,.0f} readings/s", ""
        )
        table.add_row(
            "sensors", f"{f['readings']:,} readings", f"{f['windows']} daily windows closed", ""
        )
        table.add_row(
            "camera",
            f"{f['frames']:,} frames",
            f"{f['skipped']} skipped (latest wins)",
            f"{f['alerts']} alerts",
        )
        table.add_row("uplink", str(f["uplink"]), f"spool depth {f['depth']}", f"sent {f['sent']}")
        table.add_row("core", f"{f['core']:,} stored", f"{f['gaps']} sequence gaps", "")
        return Group(table, Text(""), *(Text(e) for e in self.events[-6:]))


@contextlib.contextmanager
def _logs_above_the_panel(stderr: TextIO) -> Iterator[None]:
    """While :class:`Live` redirects ``sys.stderr``, the log handlers that write to the real
    stderr write through it, so that log lines print above the panel instead of into it."""
    moved = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and h.stream is stderr
    ]
    for handler in moved:
        handler.setStream(sys.stderr)
    try:
        yield
    finally:
        for handler in moved:
            handler.setStream(stderr)
