"""A stop is bounded: whatever hangs, the process exits within ops.shutdown_timeout_s (code 3,
naming what was still running); a second signal exits at once (code 130)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_runtime.broker import MosquittoProcess
from tests.support import site_toml

HANGING_PLUGIN = '''
import time
from typing import ClassVar, Literal

from pydantic import Field

from edge_runtime.pipelines import Pipeline, PipelineConfig, ReadingBatch, Summary


class HangConfig(PipelineConfig):
    type: Literal["hang-on-flush"] = Field(default="hang-on-flush", description="test plugin")


class HangOnFlush(Pipeline[HangConfig]):
    """Takes readings; its flush blocks the event loop, as a buggy plugin might."""

    type_name: ClassVar[str] = "hang-on-flush"
    config_model: ClassVar[type[PipelineConfig]] = HangConfig

    def process(self, batch: ReadingBatch) -> list[Summary]:
        return []

    def flush(self) -> list[Summary]:
        time.sleep(3600)
        return []
'''

PIPELINE = """
[[pipelines]]
type = "hang-on-flush"
name = "stuck"
topics = ["t/#"]
"""


def _start(cfg: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_runtime", "run", "-c", str(cfg), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_running(proc: subprocess.Popen[bytes], data: Path) -> None:
    deadline = time.monotonic() + 60
    while not (data / "site.lock").exists() or time.monotonic() < deadline - 58:
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, "the site never started"
        time.sleep(0.1)
    time.sleep(1.0)  # past start-up: the signal handlers are in place


@pytest.mark.parametrize("second_signal", [False, True])
def test_a_stop_is_bounded_even_when_a_plugin_blocks_the_loop(
    site_broker: MosquittoProcess,
    core_broker: MosquittoProcess,
    tmp_path: Path,
    second_signal: bool,
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "hang.py").write_text(HANGING_PLUGIN)
    data = tmp_path / "data"
    extra = f'plugin_paths = ["{plugins}"]'
    text = site_toml(site_broker, core_broker, data, PIPELINE, extra=extra)
    text = text.replace("drain_timeout_s = 5", "drain_timeout_s = 1")
    text = text.replace("[ops]\n", "[ops]\nshutdown_timeout_s = 4\n")
    cfg = tmp_path / "site.toml"
    cfg.write_text(text)
    proc = _start(cfg)
    try:
        _wait_running(proc, data)
        proc.send_signal(signal.SIGTERM)
        if second_signal:
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    text_err = err.decode()
    print(f"exit code {proc.returncode}; last log lines:\n{text_err[-800:]}")
    # the loop is blocked in flush, so even a second signal waits for the watchdog thread
    assert proc.returncode == 3, text_err[-2000:]
    assert "the shutdown still running after 4 s" in text_err
    assert "tasks still running" in text_err
