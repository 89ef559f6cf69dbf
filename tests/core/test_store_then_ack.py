"""The core stores, then acknowledges: PUBACK and the site's ack only after the commit; a full
inbox refuses and gets the rest delivered again; gap accounting on its own."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import aiomqtt
import pytest

from edge_runtime.broker import MosquittoProcess
from edge_runtime.config import BrokerConfig
from edge_runtime.core import CoreConfig, CoreReceiver, SiteProgress
from edge_runtime.pipelines import Summary
from edge_runtime.uplink import Envelope, encode_envelopes
from edge_runtime.uplink.acks import decode_ack


def envelope(seq: int, site: str = "s1") -> Envelope:
    return Envelope.wrap(
        Summary("p", "k", seq * 60.0, seq * 60.0 + 60, {"count": seq}),
        site=site,
        seq=seq,
        created_at=time.time(),
        version="t",
        config_hash="h",
    )


async def until(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def config(broker: MosquittoProcess, tmp_path: Path, **kw: object) -> CoreConfig:
    return CoreConfig(
        broker=BrokerConfig(port=broker.port, reconnect_min_s=0.05),
        database=tmp_path / "core.db",
        http_port=0,
        **kw,  # type: ignore[arg-type]
    )


async def test_nothing_is_acknowledged_before_the_commit(
    core_broker: MosquittoProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = CoreReceiver(config(core_broker, tmp_path))
    real_add = receiver.store.add
    failures = []

    def failing_add(envelopes, received_at):  # type: ignore[no-untyped-def]
        if len(failures) < 2:  # the disk is full, twice
            failures.append(len(envelopes))
            raise sqlite3.OperationalError("database or disk is full")
        return real_add(envelopes, received_at)

    monkeypatch.setattr(receiver.store, "add", failing_add)
    acks: list[tuple[int, int]] = []
    task = asyncio.create_task(receiver.run())
    try:
        await receiver.wait_started()
        assert receiver.link is not None
        await receiver.link.wait_connected()
        async with aiomqtt.Client("127.0.0.1", core_broker.port) as client:
            await client.subscribe("edge/s1/acks", qos=1)
            await client.publish(
                "edge/s1/summaries",
                encode_envelopes([envelope(s) for s in (1, 2, 3)], "msgpack"),
                qos=1,
            )
            await until(lambda: len(failures) >= 1)
            assert receiver.link.held == 1  # no PUBACK while it is not stored
            async with asyncio.timeout(20):
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    acks.extend(decode_ack(message.payload).ranges)
                    break
        assert receiver.link.held == 0 and receiver.store.count() == 3
    finally:
        receiver.stop()
        await asyncio.wait_for(task, 10)
    assert failures == [3, 3] and acks == [(1, 3)]
    assert receiver.counters["store_failures"] == 2


async def test_a_full_inbox_refuses_and_the_broker_delivers_again(
    core_broker: MosquittoProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = CoreReceiver(config(core_broker, tmp_path, inbox_messages=4))
    real_add = receiver.store.add

    def slow_add(envelopes, received_at):  # type: ignore[no-untyped-def]
        time.sleep(0.005)
        return real_add(envelopes, received_at)

    monkeypatch.setattr(receiver.store, "add", slow_add)
    task = asyncio.create_task(receiver.run())
    peak = 0
    try:
        await receiver.wait_started()
        assert receiver.link is not None
        await receiver.link.wait_connected()
        async with aiomqtt.Client("127.0.0.1", core_broker.port) as client:
            for seq in range(1, 61):
                payload = encode_envelopes([envelope(seq)], "msgpack")
                await client.publish("edge/s1/summaries", payload, qos=1)
        async with asyncio.timeout(60):
            while receiver.counters["envelopes"] < 60:
                peak = max(peak, receiver.inbox_depth)
                await asyncio.sleep(0.001)
    finally:
        receiver.stop()
        await asyncio.wait_for(task, 10)
    assert peak <= 4
    assert receiver.counters["inbox_overflow"] >= 1
    assert receiver.status()["stored"] == 60 and receiver.counters["duplicates"] == 0
    assert receiver.sites["s1"].missing == 0


def test_core_config_needs_a_broker_that_can_hold_pubacks() -> None:
    assert CoreConfig().broker.transport == "gmqtt" and CoreConfig().broker.protocol == "5"
    assert CoreConfig(broker=BrokerConfig(port=1)).broker.transport == "gmqtt"
    with pytest.raises(ValueError, match="gmqtt"):
        CoreConfig(broker=BrokerConfig(transport="aiomqtt"))
    with pytest.raises(ValueError, match="persistent session"):
        CoreConfig(broker=BrokerConfig(clean_start=True))
    shared = CoreConfig(share_group="city")
    assert shared.subscriptions() == ["$share/city/edge/+/summaries", "$share/city/edge/+/alerts"]
    assert CoreConfig(store="nats").jetstream is not None


def test_gap_accounting_from_seq_1() -> None:
    p = SiteProgress("s")
    assert p.see([5, 6], now=10.0) == 0
    assert p.gaps == [(1, 4)] and p.missing == 4
    assert p.see([9], now=20.0) == 0 and p.gaps == [(1, 4), (7, 8)]
    assert p.see([2], now=30.0) == 1  # late: it filled a gap
    assert p.gaps == [(1, 1), (3, 4), (7, 8)] and p.gap_since == [10.0, 10.0, 20.0]
    assert p.see([6, 0], now=30.0) == 0  # seen before, and 0 is never expected
    assert p.missing == 5 and p.oldest_missing_age_s(40.0) == 30.0
    assert p.see([1, 3, 4, 7, 8], now=50.0) == 5
    assert p.missing == 0 and p.oldest_missing_age_s(60.0) is None and p.max_seq == 9
