"""Broker connections behind a small interface of our own.

Nothing outside this package sees aiomqtt, gmqtt or paho types: the rest of the runtime receives
:class:`~edge_runtime.types.RawMessage` objects and calls :meth:`MqttLink.publish`.
A link keeps itself connected (the runtime's one :class:`~edge_runtime.backoff.Backoff` rule:
exponential, capped, jittered), re-subscribes after every reconnect and reports its state; it
never pretends to be up after the broker refused it. Each (re)connect is a new
:class:`~edge_runtime.mqtt.transport.Connection` of the library that ``BrokerConfig.transport``
names.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
from collections.abc import Callable, Sequence

from edge_runtime.backoff import Backoff
from edge_runtime.errors import ConfigError, TransportError
from edge_runtime.lifecycle import Component
from edge_runtime.mqtt.aiomqtt_transport import AiomqttConnection
from edge_runtime.mqtt.config import BrokerConfig
from edge_runtime.mqtt.gmqtt_transport import GmqttConnection
from edge_runtime.mqtt.transport import Connection, Release, tls_context
from edge_runtime.types import RawMessage

__all__ = ["LinkState", "MessageSink", "MqttLink"]

log = logging.getLogger(__name__)

MessageSink = Callable[[RawMessage], object]

_CONNECTIONS: dict[str, type[Connection]] = {
    "aiomqtt": AiomqttConnection,
    "gmqtt": GmqttConnection,
}


class LinkState(enum.Enum):
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"
    CLOSED = "closed"


class MqttLink(Component):
    """One managed connection to a broker.

    ``subscriptions`` and ``sink`` make it a subscriber: every message goes to ``sink``, called
    synchronously as it is read (it must not block; the ingest queue it feeds is bounded and
    counts what it drops).  ``publish`` waits for the PUBACK on QoS 1 and raises
    :class:`TransportError` when the link is down.  Use as an async context manager: entering it
    loads the TLS files (TransportError naming the field when they cannot be loaded) and starts
    the connection loop as a named task in the link's own task group, which the link closes on
    exit; should the loop fail unexpectedly, the error comes out of the ``async with`` (the
    group cancels the task that entered the link), never a silent "connecting" forever.

    With ``manual_ack=True`` (transport "gmqtt" only) the PUBACK of each QoS 1 message is held
    until :meth:`ack_through` releases it, so that a broker redelivers to the persistent
    session what a crashed process never made durable. Held messages of a connection that is
    lost are dropped without their PUBACK: they come again, with ``dup`` set.
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
        manual_ack: bool = False,
    ) -> None:
        if manual_ack and config.transport != "gmqtt":
            raise ConfigError(
                f"manual acknowledgements ({role} broker) need a client library that can hold "
                f'a PUBACK; aiomqtt sends each one itself. Set transport = "gmqtt" for this '
                "broker.",
                field="transport",
            )
        self.config = config
        self.client_id = client_id
        self.role = role
        self.subscriptions = tuple(subscriptions)
        self.qos = qos
        self.sink = sink
        self.max_payload_bytes = max_payload_bytes
        self.on_oversized = on_oversized
        self.manual_ack = manual_ack
        self.state = LinkState.DOWN
        self.connects = 0
        self.disconnects = 0
        self.attempt = 0
        """Number of the current connection attempt: messages delivered while it is the same
        came over the same connection (it changes before the next CONNECT, when a broker may
        already resend a session's messages)."""
        self.last_error: str | None = None
        self._connection_type = _CONNECTIONS[config.transport]
        self._connection: Connection | None = None
        self._held: collections.deque[tuple[RawMessage, Release]] = collections.deque()
        self._up = asyncio.Event()
        self._stop = asyncio.Event()
        self._backoff = Backoff(config.reconnect_min_s, config.reconnect_max_s)
        self._group: asyncio.TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost: asyncio.Future[None] | None = None
        self._kick: asyncio.Future[str] | None = None
        self._kick_pending: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        tls_context(self.config, self.role)  # a bad TLS file fails here, naming the field
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

    # -- the connection loop -----------------------------------------------------------------

    def _open(self) -> Connection:
        deliver = self._deliver if self.sink is not None else None
        return self._connection_type(
            self.config,
            self.client_id,
            deliver=deliver,
            deliver_held=self._deliver_held if self.manual_ack and deliver else None,
        )

    async def _run(self) -> None:
        backoff = self._backoff
        while not self._stop.is_set():
            self.state = LinkState.CONNECTING
            self.attempt += 1
            connection = self._open()
            try:
                await connection.connect()
                if self.subscriptions:
                    await connection.subscribe(self.subscriptions, self.qos)
                self._connection = connection
                self._lost = asyncio.get_running_loop().create_future()
                self.state = LinkState.UP
                self.connects += 1
                backoff.reset()
                self._up.set()
                log.info(
                    "connected to %s broker %s:%d as %s (%s)",
                    self.role,
                    self.config.host,
                    self.config.port,
                    self.client_id,
                    self.config.transport,
                )
                reason = await self._wait_lost_or_kicked(connection)
                self.last_error = reason
                self.disconnects += 1
                log.warning("%s broker connection lost: %s", self.role, reason)
            except TransportError as exc:
                # log the message, not the exception: a handler that keeps records would keep
                # its traceback alive, and with it a socket the library left in a frame
                self.last_error = str(exc)
                if self.state is LinkState.UP:
                    self.disconnects += 1
                    log.warning("%s broker connection lost: %s", self.role, self.last_error)
                else:
                    # the first failure of an outage is a warning; the retries are not news
                    log.log(
                        logging.WARNING if backoff.attempt == 0 else logging.DEBUG,
                        "cannot connect to %s broker %s:%d: %s",
                        self.role,
                        self.config.host,
                        self.config.port,
                        self.last_error,
                    )
            finally:
                self._connection = None
                self._up.clear()
                if self._lost is not None and not self._lost.done():
                    self._lost.set_result(None)  # fail publishes still waiting for a PUBACK
                if self.state is not LinkState.CLOSED:
                    self.state = LinkState.DOWN
                await self._close_connection(connection)
            if self._stop.is_set():
                break
            delay = backoff.next_delay()
            log.info(
                "reconnecting to %s broker in %.2fs (attempt %d)", self.role, delay, backoff.attempt
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _wait_lost_or_kicked(self, connection: Connection) -> str:
        kick: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if self._kick_pending is not None:  # asked for while connecting
            kick.set_result(self._kick_pending)
            self._kick_pending = None
        self._kick = kick
        lost = asyncio.ensure_future(connection.wait_lost())
        try:
            await asyncio.wait((lost, kick), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._kick = None
            if not lost.done():
                lost.cancel()
        if lost.done() and not lost.cancelled():
            return lost.result()
        return kick.result()

    def reconnect(self, reason: str) -> None:
        """Drop the current connection and connect again (per the backoff): held messages go
        without their PUBACK, so the broker delivers them again to the persistent session.
        The connection counts as lost (``disconnects``) with ``reason``."""
        why = f"dropped on purpose: {reason}"
        kick = self._kick
        if kick is not None:
            if not kick.done():
                kick.set_result(why)
        elif self.state is LinkState.CONNECTING:
            self._kick_pending = why

    async def _close_connection(self, connection: Connection) -> None:
        dropped = len(self._held)
        try:
            await connection.close()
        except TransportError as exc:
            log.debug("closing the %s broker connection: %s", self.role, exc)
        finally:
            self._held.clear()
        if dropped:
            log.info(
                "%s broker: %d held message(s) dropped without PUBACK; the broker redelivers "
                "them to the session",
                self.role,
                dropped,
            )

    # -- receiving ---------------------------------------------------------------------------

    def _deliver(self, message: RawMessage) -> None:
        limit = self.max_payload_bytes
        if limit is not None and len(message.payload) > limit:
            if self.on_oversized is not None:
                self.on_oversized(message)
            return
        sink = self.sink
        assert sink is not None
        sink(message)

    def _deliver_held(self, message: RawMessage, release: Release) -> None:
        self._held.append((message, release))
        self._deliver(message)

    @property
    def held(self) -> int:
        """QoS 1 messages delivered whose PUBACK waits for :meth:`ack_through`."""
        return len(self._held)

    def ack_through(self, message: RawMessage) -> int:
        """Acknowledge every held message received up to and including ``message`` (the same
        object the sink was given), in receive order, as MQTT requires; messages set aside on
        the way (oversized, dropped by a full queue) are acknowledged with them.

        Returns how many PUBACKs were released: 0 when ``message`` is not held (acknowledged
        already, a QoS 0 message, or one of a connection since lost, which the broker will
        deliver again).
        """
        held = self._held
        count = 0
        for candidate, _ in held:
            count += 1
            if candidate is message:
                break
        else:
            return 0
        for _ in range(count):
            held.popleft()[1]()
        return count

    async def add_subscriptions(self, filters: Sequence[str]) -> None:
        """Subscribe to more filters: at once when connected (raises TransportError when the
        broker refuses), and after every reconnect. Filters are never taken away here: what
        still arrives on one no longer wanted is the sink's to set aside."""
        new = [f for f in filters if f not in self.subscriptions]
        if not new:
            return
        self.subscriptions = (*self.subscriptions, *new)
        connection = self._connection
        if connection is not None and self.state is LinkState.UP:
            await connection.subscribe(new, self.qos)

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
        connection, lost = self._connection, self._lost
        if connection is None or lost is None or self.state is not LinkState.UP:
            raise TransportError(f"{self.role} broker link is {self.state.value}")
        task = asyncio.ensure_future(
            connection.publish(topic, payload, qos, retain=retain, timeout=timeout)
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
        except TransportError as exc:
            raise TransportError(f"publish to {self.role} broker failed: {exc}") from exc
