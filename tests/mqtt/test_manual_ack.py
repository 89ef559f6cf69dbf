"""Manual acknowledgements (gmqtt): a held PUBACK is what makes the broker deliver again."""

from __future__ import annotations

import asyncio

import pytest

from edge_runtime.broker import MosquittoProcess
from edge_runtime.errors import ConfigError
from edge_runtime.mqtt import BrokerConfig, MqttLink
from tests.mqtt.helpers import PROTOCOLS, Inbox, broker_config, connected, until

each_protocol = pytest.mark.parametrize("protocol", PROTOCOLS)


def _subscriber(config: BrokerConfig, unique: str, inbox: Inbox) -> MqttLink:
    return MqttLink(
        config,
        client_id=f"{unique}-sub",
        role="site",
        subscriptions=[f"{unique}/#"],
        qos=1,
        sink=inbox,
        manual_ack=True,
    )


async def _publish(config: BrokerConfig, unique: str, *payloads: bytes, qos: int = 1) -> None:
    async with MqttLink(config, client_id=f"{unique}-pub", role="core") as pub:
        await connected(pub)
        for payload in payloads:
            await pub.publish(f"{unique}/m", payload, qos=qos)


async def _marker_then(config: BrokerConfig, unique: str, inbox: Inbox) -> list[bytes]:
    """Publish a marker and return what the inbox got before and with it: everything the
    broker had queued for the session comes before the marker."""
    await _publish(config, unique, b"marker")
    async with asyncio.timeout(15):
        while b"marker" not in inbox.payloads:
            await inbox.wait_for(len(inbox.messages) + 1)
    return inbox.payloads


@each_protocol
async def test_unacknowledged_messages_come_again_with_dup(
    site_broker: MosquittoProcess, unique: str, protocol: str
) -> None:
    config = broker_config(site_broker.port, "gmqtt", protocol, clean_start=False)
    first = Inbox()
    async with _subscriber(config, unique, first) as link:
        await connected(link)
        await _publish(config, unique, b"0", b"1", b"2", b"3", b"4")
        await first.wait_for(5)
        assert link.held == 5
        assert not any(m.dup for m in first.messages)
        assert link.ack_through(first.messages[1]) == 2
        assert link.held == 3
    # closed with 2, 3, 4 held: the broker has them as in flight, unacknowledged

    second = Inbox()
    async with _subscriber(config, unique, second) as link:
        await second.wait_for(3)
        assert second.payloads == [b"2", b"3", b"4"]
        assert all(m.dup for m in second.messages)
        assert link.ack_through(second.messages[-1]) == 3
        assert link.held == 0

    third = Inbox()
    async with _subscriber(config, unique, third) as link:
        await connected(link)
        assert await _marker_then(config, unique, third) == [b"marker"]
        link.ack_through(third.messages[-1])


@each_protocol
async def test_ack_through_releases_a_prefix_in_receive_order(
    site_broker: MosquittoProcess, unique: str, protocol: str
) -> None:
    config = broker_config(site_broker.port, "gmqtt", protocol, clean_start=False)
    inbox = Inbox()
    async with _subscriber(config, unique, inbox) as link:
        await connected(link)
        await _publish(config, unique, b"q0", qos=0)
        await _publish(config, unique, b"0", b"1", b"2", b"3", b"4")
        await inbox.wait_for(6)
        qos0, _m0, m1, m2, m3, m4 = inbox.messages
        assert link.held == 5  # QoS 0 has no PUBACK to hold
        assert link.ack_through(qos0) == 0
        assert link.ack_through(m2) == 3  # m0, m1, m2
        assert link.ack_through(m1) == 0  # acknowledged already
        assert link.ack_through(m3) == 1
        assert link.held == 1
        # an equal message is not the same message: identity decides
        assert link.ack_through(type(m4)(m4.topic, m4.payload, m4.qos)) == 0
        assert link.held == 1

    again = Inbox()
    async with _subscriber(config, unique, again) as link:
        await again.wait_for(1)
        assert again.payloads == [b"4"] and again.messages[0].dup
        assert await _marker_then(config, unique, again) == [b"4", b"marker"]
        link.ack_through(again.messages[-1])


async def test_held_messages_are_dropped_when_the_connection_is_lost(unique: str) -> None:
    broker = MosquittoProcess(persistence=True)  # the session survives a broker restart
    broker.start()
    try:
        config = broker_config(broker.port, "gmqtt", clean_start=False)
        inbox = Inbox()
        async with _subscriber(config, unique, inbox) as link:
            await connected(link)
            await _publish(config, unique, b"0", b"1", b"2")
            await inbox.wait_for(3)
            assert link.held == 3
            broker.stop()  # mosquitto saves its sessions on the way down
            await until(lambda: not link.is_up)
            await until(lambda: link.held == 0)  # dropped, not acknowledged
            # an acknowledgement of a dropped message is a no-op: it comes again
            assert link.ack_through(inbox.messages[2]) == 0
            broker.start()
            await inbox.wait_for(6)
            assert inbox.payloads == [b"0", b"1", b"2", b"0", b"1", b"2"]
            assert [m.dup for m in inbox.messages] == [False] * 3 + [True] * 3
            assert link.held == 3
            assert link.ack_through(inbox.messages[-1]) == 3
    finally:
        broker.close()


def test_manual_ack_needs_gmqtt() -> None:
    config = BrokerConfig(transport="aiomqtt")
    with pytest.raises(ConfigError, match='transport = "gmqtt"') as err:
        MqttLink(config, client_id="x", role="site", sink=print, manual_ack=True)
    assert err.value.field == "transport"
