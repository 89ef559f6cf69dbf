"""Broker connections behind a small interface of our own.

Nothing outside this package sees aiomqtt or paho types: the rest of the runtime receives
:class:`~edge_runtime.pipelines.RawMessage` objects and calls :meth:`MqttLink.publish`.
A link keeps itself connected (the runtime's one :class:`~edge_runtime.backoff.Backoff` rule:
exponential, capped, jittered), re-subscribes after every reconnect and reports its state; it
never pretends to be up after the broker refused it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import ssl
import time
from collections.abc import Callable, Sequence

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_runtime.backoff import Backoff
from edge_runtime.errors import TransportError
from edge_runtime.lifecycle import Component
from edge_runtime.mqtt.config import BrokerConfig
from edge_runtime.types import RawMessage

__all__ = ["LinkState", "MessageSink", "MqttLink"]

log = logging.getLogger(__name__)

MessageSink = Callable[[RawMessage], object]


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


class LinkState(enum.Enum):
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"
    CLOSED = "closed"


def _tls_context(config: BrokerConfig, role: str) -> ssl.SSLContext | None:
    """The TLS context of a broker config; TransportError naming the field when its files
    cannot be loaded (the loader checks that they exist; this catches a bad or unreadable one)."""
    tls = config.tls
    if tls is None:
        return None
    field = "tls.ca_file"
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        if tls.cert_file is not None and tls.key_file is not None:
            field = "tls.cert_file / tls.key_file"
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise TransportError(
            f"{role} broker {field}: cannot load it ({exc}); fix the file or the setting"
        ) from exc
    if tls.insecure:
        ctx.check_hostname = False
    return ctx


class MqttLink(Component):
    """One managed connection to a broker.

    ``subscriptions`` and ``sink`` make it a subscriber: every message goes to ``sink``, called
    synchronously from the socket-read callback (it must not block; the ingest queue it feeds
    is bounded and counts what it drops).  ``publish`` waits for the PUBACK on QoS 1
    and raises :class:`TransportError` when the link is down.  Use as an async context manager:
    entering it loads the TLS files (TransportError when they cannot be loaded) and starts the
    connection loop as a named task in the link's own task group, which the link closes on exit;
    should the loop fail unexpectedly, the task group cancels the task that entered the link and
    the error comes out of the ``async with``, never a silent "connecting" forever.
    """

    def __init__(
        self,
        config: BrokerConfig,
        *,
        client_id: str,
        role: str,
        subscriptions: Sequence[str] = (),
        qos: int = 1,
        sink: MessageSink | None = None,
        max_payload_bytes: int | None = None,
        on_oversized: Callable[[RawMessage], None] | None = None,
    ) -> None:
        self.config = config
        self.client_id = client_id
        self.role = role
        self.subscriptions = tuple(subscriptions)
        self.qos = qos
        self.sink = sink
        self.max_payload_bytes = max_payload_bytes
        self.on_oversized = on_oversized
        self.state = LinkState.DOWN
        self.connects = 0
        self.disconnects = 0
        self.last_error: str | None = None
        self._client: aiomqtt.Client | None = None
        self._up = asyncio.Event()
        self._stop = asyncio.Event()
        self._backoff = Backoff(config.reconnect_min_s, config.reconnect_max_s)
        self._group: asyncio.TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost: asyncio.Future[None] | None = None
        self._tls: ssl.SSLContext | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._tls = _tls_context(self.config, self.role)
        group = asyncio.TaskGroup()
        await group.__aenter__()
        self._group = group
        self._task = group.create_task(self._run(), name=f"mqtt-{self.role}-{self.client_id}")

    async def close(self) -> None:
        """Stop the connection loop (safe twice); an error it failed with is raised here."""
        self._stop.set()
        group, task = self._group, self._task
        self._group = self._task = None
        if task is not None:
            task.cancel()
        try:
            if group is not None:
                await group.__aexit__(None, None, None)
        finally:
            self.state = LinkState.CLOSED
            self._up.clear()

    @property
    def is_up(self) -> bool:
        return self.state is LinkState.UP

    async def wait_connected(self) -> None:
        await self._up.wait()

    # -- client construction -----------------------------------------------------------------

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
            tls_context=self._tls,
            tls_insecure=cfg.tls.insecure if cfg.tls is not None else None,
            max_inflight_messages=1000,
            # small QoS 0 writes must not wait for a delayed ACK (Nagle): ~40 ms otherwise
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            max_queued_outgoing_messages=0,
            queue_type=_direct_queue(self._deliver) if self.sink is not None else None,
        )

    # -- the connection loop -----------------------------------------------------------------

    async def _run(self) -> None:
        backoff = self._backoff
        while not self._stop.is_set():
            self.state = LinkState.CONNECTING
            client = self._make_client()
            try:
                async with client:
                    self._client = client
                    self._lost = asyncio.get_running_loop().create_future()
                    if self.subscriptions:
                        await client.subscribe([(f, self.qos) for f in self.subscriptions])
                    self.state = LinkState.UP
                    self.connects += 1
                    backoff.reset()
                    self._up.set()
                    log.info(
                        "connected to %s broker %s:%d as %s",
                        self.role,
                        self.config.host,
                        self.config.port,
                        self.client_id,
                    )
                    await self._until_disconnected(client)
            except (aiomqtt.MqttError, OSError) as exc:
                self.last_error = str(exc)
                if self.state is LinkState.UP:
                    self.disconnects += 1
                    log.warning("%s broker connection lost: %s", self.role, exc)
                else:
                    # the first failure of an outage is a warning; the retries are not news
                    log.log(
                        logging.WARNING if backoff.attempt == 0 else logging.DEBUG,
                        "cannot connect to %s broker %s:%d: %s",
                        self.role,
                        self.config.host,
                        self.config.port,
                        exc,
                    )
            finally:
                self._client = None
                self._up.clear()
                if self._lost is not None and not self._lost.done():
                    self._lost.set_result(None)  # fail publishes still waiting for a PUBACK
                if self.state is not LinkState.CLOSED:
                    self.state = LinkState.DOWN
            if self._stop.is_set():
                break
            delay = backoff.next_delay()
            log.info(
                "reconnecting to %s broker in %.2fs (attempt %d)", self.role, delay, backoff.attempt
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    @staticmethod
    async def _until_disconnected(client: aiomqtt.Client) -> None:
        # Messages arrive through _deliver (subscribers) or not at all (publishers); the always
        # empty iterator is how aiomqtt tells us the connection is gone (it raises MqttError).
        async for _ in client.messages:
            pass

    def _deliver(self, message: aiomqtt.Message) -> None:
        sink = self.sink
        assert sink is not None
        payload = message.payload
        if not isinstance(payload, bytes):  # paho gives bytes; be strict about anything else
            payload = b"" if payload is None else str(payload).encode()
        raw = RawMessage(message.topic.value, payload, message.qos, message.retain, time.time())
        limit = self.max_payload_bytes
        if limit is not None and len(payload) > limit:
            if self.on_oversized is not None:
                self.on_oversized(raw)
            return
        sink(raw)

    # -- publishing --------------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        *,
        retain: bool = False,
        timeout: float = 30.0,
    ) -> None:
        """Publish and, for QoS 1, wait for the PUBACK. Raises TransportError when the link is
        down, or goes down before the PUBACK arrives (the client library would otherwise leave
        the publish waiting for its timeout while newer messages go out on the next connection,
        which breaks ordering)."""
        client, lost = self._client, self._lost
        if client is None or lost is None or self.state is not LinkState.UP:
            raise TransportError(f"{self.role} broker link is {self.state.value}")
        task = asyncio.ensure_future(
            client.publish(topic, payload, qos=qos, retain=retain, timeout=timeout)
        )
        try:
            await asyncio.wait((task, lost), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not task.done():
            task.cancel()
            raise TransportError(f"{self.role} broker link lost before the PUBACK")
        try:
            task.result()
        except aiomqtt.MqttError as exc:
            raise TransportError(f"publish to {self.role} broker failed: {exc}") from exc
