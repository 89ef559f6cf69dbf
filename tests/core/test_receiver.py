"""The core receiver against a real mosquitto and a real nats-server with JetStream."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import nats
import pytest

from edge_runtime.broker import MosquittoProcess
from edge_runtime.config import BrokerConfig
from edge_runtime.core import CoreConfig, CoreReceiver, NatsForwardConfig
from edge_runtime.pipelines import Summary
from edge_runtime.uplink import Envelope, encode_envelopes
from tests.support import NatsServer


def envelope(site: str, seq: int, key: str = "k", window: float = 0.0) -> Envelope:
    summary = Summary("p", key, window, window + 60, {"count": seq, "mean": 1.5})
    return Envelope.wrap(
        summary, site=site, seq=seq, created_at=1.7e9 + seq, version="t", config_hash="h"
    )


async def wait_until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_dedupe_store_gaps_and_jetstream(
    core_broker: MosquittoProcess, nats_server: NatsServer, tmp_path: Path
) -> None:
    config = CoreConfig(
        broker=BrokerConfig(port=core_broker.port, reconnect_min_s=0.05),
        database=tmp_path / "core.db",
        nats=NatsForwardConfig(url=nats_server.url, stream="TEST_EDGE"),
        http_port=0,
    )
    receiver = CoreReceiver(config)
    task = asyncio.create_task(receiver.run())
    await receiver.wait_started()
    assert receiver.link is not None
    await receiver.link.wait_connected()

    a = [envelope("site-a", s, window=s * 60.0) for s in range(10)]
    b = [envelope("site-b", s, window=s * 60.0) for s in (0, 1, 2, 5, 6)]  # 3 and 4 missing
    async with aiomqtt.Client("127.0.0.1", core_broker.port) as client:
        await client.publish("edge/site-a/summaries", encode_envelopes(a[:6], "msgpack"), qos=1)
        await client.publish("edge/site-a/summaries", encode_envelopes(a[4:], "json"), qos=1)
        await client.publish("edge/site-b/summaries", encode_envelopes(b, "msgpack"), qos=1)
        await client.publish("edge/site-b/summaries", b"\x93garbage", qos=1)
    await wait_until(lambda: receiver.counters["envelopes"] >= 17)
    status = receiver.status()
    assert status["stored"] == 15
    assert status["counters"]["duplicates"] == 2
    assert status["counters"]["rejected_malformed_envelope"] == 1
    assert status["sites"]["site-a"]["missing"] == 0
    assert status["sites"]["site-a"]["max_seq"] == 9
    assert status["sites"]["site-b"]["gaps"] == [(3, 4)]

    # the gap fills when the late ones arrive (e.g. from a site's backlog)
    async with aiomqtt.Client("127.0.0.1", core_broker.port) as client:
        late = [envelope("site-b", s, window=s * 60.0).as_backlog() for s in (3, 4)]
        await client.publish("edge/site-b/summaries", encode_envelopes(late, "msgpack"), qos=1)
    await wait_until(lambda: receiver.counters["stored"] >= 17)
    assert receiver.status()["sites"]["site-b"]["missing"] == 0
    assert receiver.status()["sites"]["site-b"]["backlog_received"] == 2

    receiver.stop()
    await asyncio.wait_for(task, 10)

    nc = await nats.connect(nats_server.url)
    info = await nc.jetstream().stream_info("TEST_EDGE")
    await nc.close()
    assert info.state.messages == 17  # 10 + 7, each once

    # progress (gaps, max seq) is rebuilt from the store after a restart
    again = CoreReceiver(config.model_copy(update={"nats": None}))
    assert again.sites["site-b"].missing == 0
    assert again.sites["site-a"].max_seq == 9
    assert again.store.count() == 17
    again.store.close()


def test_core_config_rejects_unknown_fields(tmp_path: Path) -> None:
    from edge_runtime.config.loader import load_model
    from edge_runtime.errors import ConfigError

    cfg = tmp_path / "core.toml"
    cfg.write_text('databse = "x.db"\n')
    with pytest.raises(ConfigError, match="databse"):
        load_model(CoreConfig, cfg)


def test_core_command_stops_cleanly_on_sigterm(
    core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    """`edge-runtime core` then SIGTERM: exit code 0 and the final status printed (the status
    is taken before the store closes)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from edge_runtime.broker import free_port

    http_port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_runtime",
            "core",
            "--broker",
            f"127.0.0.1:{core_broker.port}",
            "--db",
            str(tmp_path / "core.db"),
            "--http-port",
            str(http_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, proc.communicate()[1].decode()
                assert time.monotonic() < deadline, "the core never became ready"
                time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err, err.decode()
    assert b'"stored": 0' in out


async def test_replayed_summaries_do_not_count_as_lag(
    core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    """A recording from 2019 replayed into a site: its summaries are counted apart and the
    site's lag stays that of its live summaries."""
    from dataclasses import replace
    from time import time

    config = CoreConfig(
        broker=BrokerConfig(port=core_broker.port, reconnect_min_s=0.05),
        database=tmp_path / "core.db",
        http_port=0,
    )
    receiver = CoreReceiver(config)
    task = asyncio.create_task(receiver.run())
    await receiver.wait_started()
    assert receiver.link is not None
    await receiver.link.wait_connected()
    old = replace(envelope("site-r", 0, window=0.0), replayed=True, created_at=1_546_300_800.0)
    live = replace(envelope("site-r", 1, window=60.0), created_at=time())
    async with aiomqtt.Client("127.0.0.1", core_broker.port) as client:
        payload = encode_envelopes([old, live], "msgpack")
        await client.publish("edge/site-r/summaries", payload, qos=1)
    await wait_until(lambda: receiver.counters["stored"] >= 2)
    site = receiver.status()["sites"]["site-r"]
    assert site["replayed_received"] == 1
    assert site["replayed_newest_created_at"] == 1_546_300_800.0
    assert 0 <= site["lag_s"] < 600
    receiver.stop()
    await asyncio.wait_for(task, 10)
    again = CoreReceiver(config)  # rebuilt from the store the same way
    assert again.sites["site-r"].replayed == 1
    assert again.sites["site-r"].last_created_at == live.created_at
    again.store.close()
