"""The in-memory uplink against a real core broker: accepted summaries reach the core in order."""

from __future__ import annotations

from pathlib import Path

from edge_runtime.broker import MosquittoProcess
from edge_runtime.clock import SystemClock
from edge_runtime.mqtt import BrokerConfig, MqttLink
from edge_runtime.types import Summary
from edge_runtime.uplink.config import UplinkConfig
from edge_runtime.uplink.memory import MemoryUplink
from edge_runtime.uplink.seq import SeqAllocator
from tests.support import Collector


async def test_summaries_reach_the_core_and_drain_empties_the_queue(
    core_broker: MosquittoProcess, tmp_path: Path, unique: str
) -> None:
    broker = BrokerConfig(port=core_broker.port, reconnect_min_s=0.05, reconnect_max_s=0.5)
    config = UplinkConfig(broker=broker, store_and_forward=False, max_batch=4)
    summaries = [Summary("p", f"k{i}", i * 60.0, i * 60.0 + 60, {"count": i}) for i in range(10)]
    async with (
        Collector(core_broker) as collector,
        MqttLink(broker, client_id=f"{unique}-uplink", role="core") as link,
        MemoryUplink(
            config,
            link,
            site_id=unique,
            version="test",
            config_hash="h",
            seq=SeqAllocator(tmp_path / "seq.state"),
            clock=SystemClock(),
        ) as uplink,
    ):
        await uplink.submit(summaries)
        assert uplink.pending == 10
        assert await uplink.drain(10.0) == 0
        await collector.wait_for(lambda envs: len(envs) >= 10)
    assert [e.key for e in collector.envelopes] == [f"k{i}" for i in range(10)]
    assert [e.seq for e in collector.envelopes] == list(range(10))
    assert uplink.stats()["sent"] == 10
    assert link.state.value == "closed"
