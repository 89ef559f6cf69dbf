"""Operations against a real process: metrics, health, status, and a clean drain on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import aiomqtt
import orjson

from edge_runtime.broker import MosquittoProcess, free_port
from edge_runtime.cli import main
from tests.support import Collector, load, running_site, site_toml

PIPELINE = """
[[pipelines]]
type = "windows"
name = "noise"
topics = ["city/noise/+"]
decode = { format = "json", key = "topic:2" }
window = { kind = "tumbling", size_s = 60, idle_timeout_s = 3600 }
"""
T0 = 1_700_000_040.0


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def test_metrics_health_and_status(
    site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    loaded = load(site_toml(site_broker, core_broker, tmp_path, PIPELINE))
    async with running_site(loaded) as site:
        async with aiomqtt.Client("127.0.0.1", site_broker.port) as client:
            for i in range(5):
                doc = {"value": 50 + i, "ts": T0 + i}
                await client.publish("city/noise/n1", orjson.dumps(doc), qos=1)
            await client.publish("city/noise/n1", b"{bad", qos=1)
        async with asyncio.timeout(10):
            while site.runtime.stats.messages_in < 6:
                await asyncio.sleep(0.02)
        assert site.runtime.ops is not None
        base = f"http://127.0.0.1:{site.runtime.ops.port}"
        status, body = await asyncio.to_thread(get, base + "/metrics")
        text = body.decode()
        assert status == 200
        assert "edge_messages_in_total 6.0" in text
        assert 'edge_decode_errors_total{pipeline="noise",reason="malformed_json"} 1.0' in text
        assert 'edge_readings_in_total{pipeline="noise"} 5.0' in text
        assert "edge_ingest_queue_depth" in text
        assert "edge_batch_size_bucket" in text
        assert 'edge_pipeline_gauge{name="open_windows",pipeline="noise"} 1.0' in text
        assert 'edge_uplink{name="up"} 1.0' in text
        assert (await asyncio.to_thread(get, base + "/healthz"))[0] == 200
        assert (await asyncio.to_thread(get, base + "/readyz"))[0] == 200
        assert await asyncio.to_thread(main, ["status", "--url", base]) == 0
        shown = orjson.loads(capsys.readouterr().out)
        assert shown["site_id"] == "test-site"
        assert shown["messages_in"] == 6
        site_broker.stop()
        await asyncio.sleep(0.3)
        code, why = await asyncio.to_thread(get, base + "/readyz")
        assert code == 503
        assert b"site broker" in why
        site_broker.start()


async def test_sigterm_flushes_open_windows_to_the_core(
    site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text(
        site_toml(site_broker, core_broker, tmp_path / "data", PIPELINE).replace(
            "http_port = 0", f"http_port = {free_port()}"
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_runtime", "run", "-c", str(cfg), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        async with Collector(core_broker) as collector:
            async with asyncio.timeout(20):
                while b"connected to site broker" not in (await _peek_log(tmp_path, proc)):
                    await asyncio.sleep(0.1)
            async with aiomqtt.Client("127.0.0.1", site_broker.port) as client:
                for i in range(30):
                    doc = {"value": float(i), "ts": T0 + i}
                    await client.publish(f"city/noise/n{i % 3}", orjson.dumps(doc), qos=1)
            await asyncio.sleep(1.0)
            assert collector.envelopes == []  # windows are open (60 s, no idle close)
            proc.send_signal(signal.SIGTERM)
            out, _ = await asyncio.to_thread(proc.communicate, timeout=30)
            assert proc.returncode == 0, out.decode()
            await collector.wait_for(lambda envs: len(envs) >= 3)
        counts = sorted(e.stats["count"] for e in collector.envelopes)
        assert counts == [10, 10, 10]
        assert b"draining" in out
        assert b"0 unsent" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


_log_buffer: dict[int, bytes] = {}


async def _peek_log(tmp_path: Path, proc: subprocess.Popen[bytes]) -> bytes:
    """Read what the process logged so far without blocking (stdout is a pipe)."""
    import os

    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    chunk = proc.stdout.read() or b""
    os.set_blocking(proc.stdout.fileno(), True)
    _log_buffer[proc.pid] = _log_buffer.get(proc.pid, b"") + chunk
    return _log_buffer[proc.pid]
