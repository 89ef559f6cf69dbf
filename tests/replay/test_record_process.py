"""``record`` in a real process: Ctrl-C closes the file cleanly; SIGKILL leaves it readable.

The child builds the ``edge-runtime`` subcommands with :func:`add_commands` (what the main CLI
does) and runs ``record`` against a real mosquitto while the test publishes numbered messages.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import pytest

from edge_runtime.broker import MosquittoProcess
from edge_runtime.replay import RecordingReader

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
import argparse, sys
from edge_runtime.replay.cli import add_commands
parser = argparse.ArgumentParser(prog="edge-runtime")
add_commands(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


async def publish_numbered(broker: MosquittoProcess, topic: str, stop: asyncio.Event) -> int:
    """Publish 0, 1, 2 ... (QoS 1) every 2 ms until ``stop``; how many were published."""
    n = 0
    async with aiomqtt.Client(broker.host, broker.port) as client:
        while not stop.is_set():
            await client.publish(topic, b"%d" % n, qos=1)
            n += 1
            await asyncio.sleep(0.002)
    return n


def file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


async def run_and_signal(
    broker: MosquittoProcess, topic: str, out: Path, sig: signal.Signals
) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = ["record", str(out), "-t", topic, "--broker", f"{broker.host}:{broker.port}"]
    stop = asyncio.Event()
    feeder = asyncio.create_task(publish_numbered(broker, topic, stop))
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    ) as child:
        try:
            # Wait until records reach the file (the writer flushes at least every second).
            deadline = time.monotonic() + 20
            while file_size(out) < 2000:
                assert child.poll() is None, "the recorder exited early"
                assert time.monotonic() < deadline, "the recorder wrote nothing"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            child.send_signal(sig)
            _, stderr = await asyncio.to_thread(child.communicate, None, 20)
        finally:
            stop.set()
            await feeder
            if child.poll() is None:
                child.kill()
    return child.returncode, stderr.decode()


def assert_consecutive(path: Path) -> int:
    """The recorded payloads are consecutive numbers (QoS 1, nothing lost in between)."""
    numbers = [int(m.payload) for m in RecordingReader(path)]
    assert numbers, "nothing recorded"
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    return len(numbers)


async def test_ctrl_c_closes_the_recording_cleanly(
    site_broker: MosquittoProcess, unique: str, tmp_path: Path
) -> None:
    out = tmp_path / "sigint.edgerec"
    rc, stderr = await run_and_signal(site_broker, f"{unique}/n", out, signal.SIGINT)
    assert rc == 0, stderr
    assert "recorded" in stderr and "[stopped]" in stderr
    info = RecordingReader(out).scan()
    assert info.closed_cleanly
    assert info.tail is None
    assert assert_consecutive(out) == info.count > 0


@pytest.mark.parametrize("attempt", range(3))
async def test_a_killed_recorder_leaves_a_readable_file(
    site_broker: MosquittoProcess, unique: str, tmp_path: Path, attempt: int
) -> None:
    """SIGKILL (no clean-up at all): every record that reached the file reads back in order;
    the file is marked as not closed cleanly."""
    out = tmp_path / f"killed{attempt}.edgerec"
    rc, _ = await run_and_signal(site_broker, f"{unique}/n", out, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    info = RecordingReader(out).scan()
    assert not info.closed_cleanly
    assert assert_consecutive(out) == info.count > 0
    if info.tail is not None:  # killed in the middle of a write: rare, and only ever the tail
        assert info.tail.reason == "truncated"
