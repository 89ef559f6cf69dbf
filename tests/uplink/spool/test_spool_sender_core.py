"""The sender with delivery = "core" against a real mosquitto: a stand-in core (a plain MQTT
client) acknowledges what it chooses on the ack topic; the sender keeps every record until
it is acknowledged, resends the rest (after the timeout, after a reconnect), flagged, in
order, and keeps at most max_unacked out."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable

import aiomqtt

from edge_runtime.broker import MosquittoProcess
from edge_runtime.mqtt import BrokerConfig, MqttLink
from edge_runtime.types import Envelope, RawMessage
from edge_runtime.uplink.acks import decode_ack, encode_ack, seq_ranges
from edge_runtime.uplink.config import SenderConfig
from edge_runtime.uplink.envelope import decode_envelopes
from edge_runtime.uplink.sender import Sender
from edge_runtime.uplink.spool import Spool, SpoolConfig
from tests.uplink.spool.spool_helpers import Proxy, envelopes, first_arrival_order


class StandInCore:
    """Receives the uplink messages and acknowledges those ``policy`` accepts."""

    def __init__(self, port: int, topic: str, ack_topic: str) -> None:
        self.port = port
        self.topic = topic
        self.ack_topic = ack_topic
        self.policy: Callable[[Envelope], bool] = lambda env: True
        self.received: list[Envelope] = []
        self.ready = asyncio.Event()

    async def run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port) as client:
            await client.subscribe(self.topic, qos=1)
            self.ready.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                batch = decode_envelopes(message.payload)
                self.received.extend(batch)
                seqs = [e.seq for e in batch if self.policy(e)]
                if seqs:
                    payload = encode_ack("site-1", seq_ranges(seqs))
                    await client.publish(self.ack_topic, payload, qos=1)

    async def ack_all(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port) as client:
            seqs = [e.seq for e in self.received]
            await client.publish(self.ack_topic, encode_ack("site-1", seq_ranges(seqs)), qos=1)


@contextlib.asynccontextmanager
async def uplink(
    spool_config: SpoolConfig, port: int, core_port: int, **config: object
) -> AsyncIterator[tuple[Spool, Sender, StandInCore, MqttLink]]:
    base = f"edge/test-{uuid.uuid4().hex[:8]}"
    topic, ack_topic = f"{base}/summaries", f"{base}/acks"
    core = StandInCore(core_port, topic, ack_topic)
    sender_holder: list[Sender] = []

    def on_ack(message: RawMessage) -> None:
        sender_holder[0].on_ack(decode_ack(message.payload))

    link = MqttLink(
        BrokerConfig(port=port, reconnect_min_s=0.05, reconnect_max_s=0.2),
        client_id=f"sender-{uuid.uuid4().hex[:8]}",
        role="core",
        subscriptions=[ack_topic],
        sink=on_ack,
    )
    cfg = SenderConfig(topic=topic, delivery="core", max_batch_records=50, **config)  # type: ignore[arg-type]
    core_task = asyncio.create_task(core.run(), name="stand-in-core")
    try:
        await asyncio.wait_for(core.ready.wait(), 10)
        async with Spool(spool_config) as spool:
            sender = Sender(spool, link, cfg, link_generation=lambda: link.connects)
            sender_holder.append(sender)
            async with link, sender:
                await link.wait_connected()
                yield spool, sender, core, link
    finally:
        core_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await core_task


async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_records_leave_the_spool_on_the_core_ack_not_the_puback(
    spool_config: SpoolConfig, stopped_broker: MosquittoProcess
) -> None:
    stopped_broker.start()
    port = stopped_broker.port
    async with uplink(spool_config, port, port, ack_timeout_s=60.0) as (spool, sender, core, _):
        core.policy = lambda env: False
        batch = envelopes(200, streams=5)
        await spool.append(batch)
        await asyncio.wait_for(sender.wait_sent(200), 20)  # PUBACKed, all of them
        await until(lambda: len(core.received) == 200)
        assert spool.stats().depth == 200 and sender.stats().unacked == 200
        await core.ack_all()
        await until(lambda: spool.stats().depth == 0)
        stats = sender.stats()
    assert stats.core_acked == 200 and stats.unacked == 0 and stats.resent == 0
    assert stats.ack_p50_ms is not None


async def test_unacknowledged_records_are_resent_flagged_after_the_timeout(
    spool_config: SpoolConfig, stopped_broker: MosquittoProcess
) -> None:
    stopped_broker.start()
    port = stopped_broker.port
    async with uplink(spool_config, port, port, ack_timeout_s=0.3) as (spool, sender, core, _):
        core.policy = lambda env: env.resent  # the first copies are "lost"
        batch = envelopes(300, streams=6)
        await spool.append(batch)
        await until(lambda: spool.stats().depth == 0)
        stats = sender.stats()
    first = [e for e in core.received if not e.resent]
    again = [e for e in core.received if e.resent]
    assert {e.id for e in first} == {e.id for e in again} == {e.id for e in batch}
    assert stats.resent >= 300 and stats.core_acked == 300
    for arrivals in (first, again):  # each pass keeps every stream in order
        for stream, seqs in first_arrival_order(arrivals).items():
            assert seqs == sorted(seqs), stream


async def test_unacknowledged_records_are_resent_after_a_reconnect(
    spool_config: SpoolConfig, stopped_broker: MosquittoProcess
) -> None:
    stopped_broker.start()
    async with (
        Proxy(stopped_broker.port) as proxy,
        uplink(spool_config, proxy.port, stopped_broker.port, ack_timeout_s=60.0) as parts,
    ):
        spool, sender, core, link = parts
        if True:
            core.policy = lambda env: env.resent
            await spool.append(envelopes(100, streams=4))
            await asyncio.wait_for(sender.wait_sent(100), 20)
            await until(lambda: len(core.received) == 100)
            proxy.sever()  # nothing in flight: only the reconnect tells
            await until(lambda: not link.is_up)
            proxy.restore()
            await until(lambda: spool.stats().depth == 0)  # long before the 60 s timeout
            stats = sender.stats()
    assert sum(e.resent for e in core.received) >= 100
    assert stats.resent >= 100 and stats.core_acked == 100 and link.disconnects == 1


async def test_at_most_max_unacked_records_are_out(
    spool_config: SpoolConfig, stopped_broker: MosquittoProcess
) -> None:
    stopped_broker.start()
    port = stopped_broker.port
    async with uplink(spool_config, port, port, ack_timeout_s=60.0, max_unacked=40) as (
        spool,
        sender,
        core,
        _,
    ):
        core.policy = lambda env: False
        await spool.append(envelopes(400, streams=4))
        await until(lambda: len(core.received) >= 40)
        await asyncio.sleep(0.5)
        assert len(core.received) == 40 and sender.stats().unacked == 40
        core.policy = lambda env: True
        await core.ack_all()  # room again: the rest flows, each acknowledged as it comes
        await until(lambda: spool.stats().depth == 0)
    assert len({e.id for e in core.received}) == 400
