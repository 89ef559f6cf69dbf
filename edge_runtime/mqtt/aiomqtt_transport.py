"""A :class:`~edge_runtime.mqtt.transport.Connection` on aiomqtt (paho underneath).

aiomqtt sends every PUBACK itself as the message arrives, so this transport has no manual
acknowledgements, and its messages carry no DUP flag: :attr:`RawMessage.dup` stays False.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Sequence

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_runtime.errors import TransportError
from edge_runtime.mqtt.config import BrokerConfig
from edge_runtime.mqtt.transport import Connection, Deliver, DeliverHeld, tls_context
from edge_runtime.types import RawMessage

__all__ = ["AiomqttConnection"]


def _direct_queue(
    deliver: Callable[[aiomqtt.Message], None],
) -> type[asyncio.Queue[aiomqtt.Message]]:
    """A queue class for aiomqtt's ``queue_type`` that hands each message straight to us.

    aiomqtt puts every received message into its queue from the socket-read callback; its
    iterator then costs a task and an ``asyncio.wait`` per message. Delivering from
    ``put_nowait`` skips that round trip: the message reaches our bounded ingest queue in the
    same callback, and the iterator is used only to learn of a disconnect.
    """

    class DirectQueue(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            deliver(item)

    return DirectQueue


class AiomqttConnection(Connection):
    def __init__(
        self,
        config: BrokerConfig,
        client_id: str,
        *,
        deliver: Deliver | None,
        deliver_held: DeliverHeld | None = None,
    ) -> None:
        if deliver_held is not None:
            raise TransportError("aiomqtt cannot hold acknowledgements: use gmqtt")
        super().__init__(config, client_id, deliver=deliver)
        self._client = self._make_client()
        self._entered = False

    def _make_client(self) -> aiomqtt.Client:
        cfg = self.config
        v5 = cfg.protocol == "5"
        properties = None
        if v5:
            # paho types its Properties constructor loosely (no annotations on __init__)
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 0 if cfg.clean_start else cfg.session_expiry_s
        password = cfg.password.get_secret_value() if cfg.password is not None else None
        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else cfg.clean_start,
            clean_start=cfg.clean_start if v5 else 3,  # 3 = paho's MQTT_CLEAN_START_FIRST_ONLY
            properties=properties,
            keepalive=cfg.keepalive_s,
            timeout=cfg.connect_timeout_s,
            tls_context=tls_context(cfg),
            tls_insecure=cfg.tls.insecure if cfg.tls is not None else None,
            max_inflight_messages=1000,
            # small QoS 0 writes must not wait for a delayed ACK (Nagle): ~40 ms otherwise
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            max_queued_outgoing_messages=0,
            queue_type=_direct_queue(self._deliver) if self.deliver is not None else None,
        )

    def _deliver(self, message: aiomqtt.Message) -> None:
        deliver = self.deliver
        assert deliver is not None
        payload = message.payload
        if not isinstance(payload, bytes):  # paho gives bytes; be strict about anything else
            payload = b"" if payload is None else str(payload).encode()
        deliver(RawMessage(message.topic.value, payload, message.qos, message.retain, time.time()))

    async def connect(self) -> None:
        try:
            await self._client.__aenter__()
        except aiomqtt.MqttError as exc:
            raise TransportError(str(exc)) from exc
        self._entered = True

    async def subscribe(self, filters: Sequence[str], qos: int) -> None:
        try:
            await self._client.subscribe([(f, qos) for f in filters])
        except aiomqtt.MqttError as exc:
            raise TransportError(f"subscribe failed: {exc}") from exc

    async def publish(
        self, topic: str, payload: bytes, qos: int, *, retain: bool, timeout: float
    ) -> None:
        try:
            await self._client.publish(topic, payload, qos=qos, retain=retain, timeout=timeout)
        except aiomqtt.MqttError as exc:
            raise TransportError(f"publish failed: {exc}") from exc

    async def wait_lost(self) -> str:
        # Messages arrive through _deliver (subscribers) or not at all (publishers); the always
        # empty iterator is how aiomqtt tells us the connection is gone (it raises MqttError).
        try:
            async for _ in self._client.messages:
                pass
        except aiomqtt.MqttError as exc:
            return str(exc)
        return "disconnected"

    async def close(self) -> None:
        if not self._entered:
            return
        self._entered = False
        try:
            await self._client.__aexit__(None, None, None)
        except aiomqtt.MqttError as exc:
            raise TransportError(f"disconnect failed: {exc}") from exc
