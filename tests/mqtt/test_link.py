"""MqttLink on each transport against a real mosquitto: the same behaviour from both libraries."""

from __future__ import annotations

import asyncio
import gc

import aiomqtt
import pytest

from edge_runtime.broker import MosquittoProcess, free_port
from edge_runtime.errors import TransportError
from edge_runtime.mqtt import BrokerConfig, LinkState, MqttLink, TLSConfig
from tests.mqtt.conftest import PASSWORD, USER, Certificates
from tests.mqtt.helpers import (
    PROTOCOLS,
    TRANSPORTS,
    Inbox,
    broker_config,
    connected,
    loaded_broker,
    until,
)

each = pytest.mark.parametrize("transport", TRANSPORTS)
# paho (under aiomqtt) leaves the socket of a failed TLS handshake open: its _ssl_wrap_socket
# raises without closing it, and Python closes it when it is collected, with a ResourceWarning.
# Nothing in aiomqtt's API reaches that socket, so the TLS tests let that one warning pass.
each_tls = pytest.mark.parametrize(
    "transport",
    [
        pytest.param(
            "aiomqtt",
            marks=pytest.mark.filterwarnings(
                "ignore:Exception ignored in.*SSLSocket:pytest.PytestUnraisableExceptionWarning"
            ),
        ),
        "gmqtt",
    ],
)


@each
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_publish_and_subscribe(
    site_broker: MosquittoProcess, unique: str, transport: str, protocol: str
) -> None:
    config = broker_config(site_broker.port, transport, protocol)
    inbox = Inbox()
    async with MqttLink(config, client_id=f"{unique}-pub", role="core") as pub:
        await connected(pub)
        await pub.publish(f"{unique}/retained", b"kept", qos=1, retain=True)
        async with MqttLink(
            config,
            client_id=f"{unique}-sub",
            role="site",
            subscriptions=[f"{unique}/#"],
            sink=inbox,
        ) as sub:
            await connected(sub)
            await inbox.wait_for(1)
            await pub.publish(f"{unique}/a", b"one", qos=1)
            await pub.publish(f"{unique}/b", b"two", qos=0)
            await inbox.wait_for(3)
            assert sub.state is LinkState.UP and sub.connects == 1 and sub.disconnects == 0
    got = [(m.topic, m.payload, m.qos, m.retain, m.dup) for m in inbox.messages]
    assert got == [
        (f"{unique}/retained", b"kept", 1, True, False),
        (f"{unique}/a", b"one", 1, False, False),
        (f"{unique}/b", b"two", 0, False, False),
    ]
    assert all(m.received_at > 0 for m in inbox.messages)
    assert sub.state is LinkState.CLOSED


@each
async def test_oversized_messages_are_set_aside(
    site_broker: MosquittoProcess, unique: str, transport: str
) -> None:
    config = broker_config(site_broker.port, transport)
    inbox, oversized = Inbox(), Inbox()
    async with MqttLink(
        config,
        client_id=f"{unique}-sub",
        role="site",
        subscriptions=[f"{unique}/#"],
        sink=inbox,
        max_payload_bytes=4,
        on_oversized=oversized,
    ) as link:
        await connected(link)
        await link.publish(f"{unique}/big", b"12345", qos=1)
        await link.publish(f"{unique}/small", b"1234", qos=1)
        await inbox.wait_for(1)
    assert inbox.payloads == [b"1234"] and oversized.payloads == [b"12345"]


@each
async def test_credentials(auth_broker: MosquittoProcess, unique: str, transport: str) -> None:
    base = f'port = {auth_broker.port}\ntransport = "{transport}"\nreconnect_min_s = 0.05\n'
    base += 'reconnect_max_s = 0.2\nusername = "' + USER + '"\npassword_env = "EDGE_TEST_PW"\n'
    with pytest.MonkeyPatch.context() as env:
        env.setenv("EDGE_TEST_PW", PASSWORD)
        good = loaded_broker(base)
        env.setenv("EDGE_TEST_PW", "wrong-password")
        bad = loaded_broker(base)
    inbox = Inbox()
    async with MqttLink(
        good, client_id=f"{unique}-good", role="site", subscriptions=[f"{unique}/#"], sink=inbox
    ) as link:
        await connected(link)
        await link.publish(f"{unique}/x", b"in", qos=1)
        await inbox.wait_for(1)

    states: set[LinkState] = set()
    async with MqttLink(bad, client_id=f"{unique}-bad", role="site") as link:
        # several refused attempts; the state is sampled all the while
        async with asyncio.timeout(15):
            while link.last_error is None or link._backoff.attempt < 3:
                states.add(link.state)
                await asyncio.sleep(0.005)
        assert not link.is_up
        with pytest.raises(TransportError):
            await link.publish(f"{unique}/x", b"never", qos=1)
    assert LinkState.UP not in states
    assert link.connects == 0 and link.disconnects == 0
    assert link.last_error is not None


@each_tls
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_tls(
    tls_broker: MosquittoProcess,
    certificates: Certificates,
    unique: str,
    transport: str,
    protocol: str,
) -> None:
    config = broker_config(
        tls_broker.port, transport, protocol, tls=TLSConfig(ca_file=certificates.ca)
    )
    inbox = Inbox()
    async with MqttLink(
        config, client_id=f"{unique}-tls", role="site", subscriptions=[f"{unique}/#"], sink=inbox
    ) as link:
        await connected(link)
        await link.publish(f"{unique}/x", b"secret", qos=1)
        await inbox.wait_for(1)
    assert inbox.payloads == [b"secret"]

    # the system trust store does not know the test CA: the broker's certificate is refused
    untrusted = broker_config(tls_broker.port, transport, protocol, tls=TLSConfig())
    await _stays_down(untrusted, f"{unique}-untrusted")


@each_tls
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_mutual_tls(
    mtls_broker: MosquittoProcess,
    certificates: Certificates,
    unique: str,
    transport: str,
    protocol: str,
) -> None:
    tls = TLSConfig(
        ca_file=certificates.ca,
        cert_file=certificates.client_cert,
        key_file=certificates.client_key,
    )
    config = broker_config(mtls_broker.port, transport, protocol, tls=tls)
    inbox = Inbox()
    async with MqttLink(
        config, client_id=f"{unique}-mtls", role="site", subscriptions=[f"{unique}/#"], sink=inbox
    ) as link:
        await connected(link)
        await link.publish(f"{unique}/x", b"both ways", qos=1)
        await inbox.wait_for(1)
    assert inbox.payloads == [b"both ways"]

    no_client_cert = broker_config(
        mtls_broker.port, transport, protocol, tls=TLSConfig(ca_file=certificates.ca)
    )
    await _stays_down(no_client_cert, f"{unique}-anonymous")


async def _stays_down(config: BrokerConfig, client_id: str) -> None:
    states: set[LinkState] = set()
    async with MqttLink(config, client_id=client_id, role="site") as link:
        async with asyncio.timeout(15):
            while link.last_error is None or link._backoff.attempt < 2:
                states.add(link.state)
                await asyncio.sleep(0.005)
    assert LinkState.UP not in states and link.connects == 0
    gc.collect()  # what a library left unclosed shows up in this test, not in the next one


@each
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_persistent_session_keeps_messages_while_away(
    site_broker: MosquittoProcess, unique: str, transport: str, protocol: str
) -> None:
    config = broker_config(site_broker.port, transport, protocol, clean_start=False)
    topic = f"{unique}/#"
    async with MqttLink(
        config, client_id=f"{unique}-sub", role="site", subscriptions=[topic]
    ) as sub:
        await connected(sub)  # the session and its subscription now exist
    async with MqttLink(config, client_id=f"{unique}-pub", role="core") as pub:
        await connected(pub)
        for i in range(5):
            await pub.publish(f"{unique}/{i}", b"%d" % i, qos=1)
    inbox = Inbox()
    # the same client id, no subscriptions of its own: what arrives was queued for the session
    async with MqttLink(config, client_id=f"{unique}-sub", role="site", sink=inbox) as sub:
        await inbox.wait_for(5)
    assert inbox.payloads == [b"0", b"1", b"2", b"3", b"4"]
    assert all(m.qos == 1 for m in inbox.messages)


@each
async def test_reconnects_after_the_broker_restarts(
    site_broker: MosquittoProcess, unique: str, transport: str
) -> None:
    config = broker_config(site_broker.port, transport)
    inbox = Inbox()
    async with (
        MqttLink(
            config,
            client_id=f"{unique}-sub",
            role="site",
            subscriptions=[f"{unique}/#"],
            sink=inbox,
        ) as sub,
        MqttLink(config, client_id=f"{unique}-pub", role="core") as pub,
    ):
        await connected(sub, pub)
        await pub.publish(f"{unique}/x", b"before", qos=1)
        await inbox.wait_for(1)

        site_broker.stop(kill=True)
        await until(lambda: not sub.is_up and not pub.is_up)
        with pytest.raises(TransportError):
            await pub.publish(f"{unique}/x", b"while down", qos=1)

        site_broker.start()  # same port; no persistence: the subscription must be made again
        await connected(sub, pub)
        await pub.publish(f"{unique}/x", b"after", qos=1)
        await inbox.wait_for(2)
        assert (sub.connects, sub.disconnects) == (2, 1)
        assert (pub.connects, pub.disconnects) == (2, 1)
    assert inbox.payloads == [b"before", b"after"]


@each
async def test_publish_while_down_raises(unique: str, transport: str) -> None:
    config = broker_config(free_port(), transport)  # nothing listens there
    async with MqttLink(config, client_id=f"{unique}-pub", role="core") as link:
        await until(lambda: link.last_error is not None)
        with pytest.raises(TransportError, match="core broker link is"):
            await link.publish(f"{unique}/x", b"nowhere", qos=1)
        assert link.connects == 0


@each
async def test_only_the_link_reconnects(
    site_broker: MosquittoProcess, unique: str, transport: str
) -> None:
    """A library's own reconnect would come back with the client id while the link waits to
    reconnect, and then fight the link's new connection for it: the intruder here would be
    kicked off long before the link returns."""
    config = broker_config(site_broker.port, transport, reconnect_min_s=2.0, reconnect_max_s=2.0)
    inbox = Inbox()
    async with MqttLink(
        config, client_id=f"{unique}-sub", role="site", subscriptions=[f"{unique}/#"], sink=inbox
    ) as link:
        await connected(link)
        async with aiomqtt.Client(
            "127.0.0.1", site_broker.port, identifier=f"{unique}-sub"
        ) as intruder:  # the broker disconnects the link: a client with its id arrived
            await until(lambda: not link.is_up)
            await asyncio.sleep(0.5)  # the link waits at least 1 s before it reconnects
            await intruder.publish(f"{unique}/x", b"intruder still connected", qos=1)
        await until(lambda: link.is_up)
        async with MqttLink(config, client_id=f"{unique}-pub", role="core") as pub:
            await connected(pub)
            await pub.publish(f"{unique}/x", b"after", qos=1)
        await inbox.wait_for(1)
        assert (link.connects, link.disconnects) == (2, 1)
