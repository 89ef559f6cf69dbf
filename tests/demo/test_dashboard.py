"""The demo dashboard: a rich table redrawn in place on a terminal, plain lines elsewhere."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from edge_runtime.demo.dashboard import Dashboard
from edge_runtime.ops.stats import RuntimeStats
from tests.support import PseudoTerminal


def fakes() -> tuple[Any, Any]:
    stats = RuntimeStats()
    stats.messages_in = 1234
    stats.readings_in["akl-pedestrians"] = 5040
    stats.uplink = lambda: {"state": "up", "pending": 7, "sent": 99}
    site = SimpleNamespace(stats=stats, config=SimpleNamespace(site_id="demo-site"))
    status = {"sites": {"demo-site": {"received": 99, "missing": 0}}}
    core = SimpleNamespace(status=lambda: status)
    return site, core


async def show(dashboard: Dashboard) -> None:
    task = asyncio.create_task(dashboard.run())
    await asyncio.sleep(0)
    dashboard.event("uplink cut: core broker stopped for 5 s")
    logging.getLogger("edge_runtime.test").warning("a log line during the dashboard")
    dashboard.stop()
    await task


async def test_plain_lines_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    dashboard = Dashboard(*fakes(), live=True)
    assert not dashboard.live
    await show(dashboard)
    lines = out.getvalue().splitlines()
    assert "5,040 readings" in lines[0]
    assert "uplink up, spool 7, core 99" in lines[0]
    assert lines[1].endswith("uplink cut: core broker stopped for 5 s")
    assert "\x1b" not in out.getvalue()


async def test_live_table_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = PseudoTerminal()
    with open(terminal.slave, "w", encoding="utf-8") as stream:
        monkeypatch.setattr(sys, "stdout", stream)
        monkeypatch.setattr(sys, "stderr", stream)
        handler = logging.StreamHandler(stream)
        logging.getLogger().addHandler(handler)
        try:
            dashboard = Dashboard(*fakes(), live=True)
            assert dashboard.live
            await show(dashboard)
        finally:
            logging.getLogger().removeHandler(handler)
        assert handler.stream is stream  # the log handler writes to stderr again
    shown = await asyncio.to_thread(terminal.output)
    assert "edge-runtime demo" in shown
    assert "5,040 readings" in shown
    assert "spool depth 7" in shown
    assert "uplink cut: core broker stopped for 5 s" in shown
    assert "a log line during the dashboard" in shown  # not lost while rich owns the screen
    assert "\x1b[" in shown


async def test_no_dashboard_means_plain_lines_even_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    master, slave = os.openpty()
    try:
        with open(slave, "w", encoding="utf-8") as stream:
            monkeypatch.setattr(sys, "stdout", stream)
            assert not Dashboard(*fakes(), live=False).live
    finally:
        os.close(master)
