"""A live terminal dashboard for the demo (plain ANSI, no extra dependency)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_runtime.core import CoreReceiver
    from edge_runtime.runtime.site import SiteRuntime

__all__ = ["Dashboard"]

_CLEAR = "\x1b[H\x1b[2J"


class Dashboard:
    """Redraws a status panel every second (``live``), or prints a status line every 5 s."""

    def __init__(self, site: SiteRuntime, core: CoreReceiver, *, live: bool) -> None:
        self.site = site
        self.core = core
        self.live = live and sys.stdout.isatty()
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
        interval = 1.0 if self.live else 5.0
        while not self._stop.is_set():
            self._draw()
            try:
                async with asyncio.timeout(interval):
                    await self._stop.wait()
            except TimeoutError:
                pass
        self._draw()

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

    def _draw(self) -> None:
        f = self._figures()
        elapsed = time.monotonic() - self._t0
        if not self.live:
            print(
                f"[{elapsed:6.1f}s] {f['msg_rate']:,.0f} msg/s, {f['readings']:,} readings, "
                f"{f['windows']} windows, {f['frames']} frames, uplink {f['uplink']}, "
                f"spool {f['depth']}, core {f['core']}",
                flush=True,
            )
            return
        panel = [
            f"edge-runtime demo   {elapsed:6.1f} s",
            "",
            f"  ingest      {f['msg_rate']:>10,.0f} msg/s   {f['reading_rate']:>10,.0f} readings/s",
            f"  sensors     {f['readings']:>10,} readings   {f['windows']:>6} daily windows closed",
            f"  camera      {f['frames']:>10,} frames     {f['skipped']:>6} skipped (latest wins)"
            f"   {f['alerts']} alerts",
            f"  uplink      {f['uplink']:>10}         spool depth {f['depth']:>6}"
            f"   sent {f['sent']}",
            f"  core        {f['core']:>10,} stored     {f['gaps']} sequence gaps",
            "",
            *self.events[-6:],
        ]
        sys.stdout.write(_CLEAR + "\n".join(panel) + "\n")
        sys.stdout.flush()
