"""A :class:`~edge_runtime.mqtt.transport.Connection` on gmqtt (asyncio-native, no thread).

Only gmqtt's public API is used:

* one ``gmqtt.Client`` per connection, its own reconnects switched off (the link reconnects,
  with a fresh client, so nothing of a lost connection leaks into the next one);
* ``on_message`` / ``on_subscribe`` / ``on_disconnect`` callbacks; the DUP and RETAIN flags of
  a message come in the properties dict of ``on_message``;
* PUBACKs of our QoS 1 publishes are seen through the ``persistent_storage`` hook: gmqtt stores
  every QoS 1 packet it sends there under its packet id (``push_message``, during
  ``Client.publish``) and removes it when the PUBACK arrives (``remove_message_by_mid``);
* manual acknowledgements are gmqtt's deferred acknowledgement: with
  ``optimistic_acknowledgement=False`` and a coroutine as ``on_message``, gmqtt sends a QoS 1
  message's PUBACK when that coroutine returns. Each held message's coroutine waits on a
  future that the link resolves in receive order; held futures are resolved only after the
  socket is closed, so a dropped message gets no PUBACK and the broker redelivers it. gmqtt
  0.8 keeps this for MQTT 3.1.1 too (it reads the protocol version when the client is built,
  before ``connect``); tests/mqtt/test_manual_ack.py runs on both protocols so that a change
  there shows;
* before a close, after the released PUBACKs are written, the UNSUBACK of a filter nobody
  uses tells that the broker has read them (see :meth:`GmqttConnection._ack_barrier`).

Written against gmqtt 0.8 (its ``PersistentStorage`` is synchronous there; 0.7's was not).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from gmqtt.storage import PersistentStorage

from edge_runtime.errors import TransportError
from edge_runtime.mqtt.config import BrokerConfig
from edge_runtime.mqtt.transport import Connection, Deliver, DeliverHeld, tls_context
from edge_runtime.types import RawMessage

__all__ = ["GmqttConnection"]

log = logging.getLogger(__name__)
client_log = logging.getLogger(__name__ + ".client")
"""gmqtt's client log goes here (``Client(logger=...)``), under our name."""

# gmqtt reconnects while failed_connections <= reconnect_retries, and -1 means "forever"; 0
# still allows one attempt after a lost connection (the count is 0 then). Below -1 is never.
_NO_RECONNECTS = -2

# unsubscribed from (never subscribed to) to learn that the broker has read our PUBACKs
_BARRIER_FILTER = "edge-runtime/ack-barrier/none"

_EXPECTED = (
    # we switched gmqtt's reconnects off: the link reconnects with a new client
    "[Client] max number of failed connection attempts achieved",
    "[MqttPackageHandler] not reconnecting after a permanent CONNACK refusal",
    # the DISCONNECT of a connection already lost, and the PUBACKs of dropped held messages,
    # which are resolved only after the socket is closed so that nothing is sent
    "[TRYING WRITE TO CLOSED SOCKET]",
)


def _unexpected(record: logging.LogRecord) -> bool:
    """Drops gmqtt's log records about what this transport does on purpose."""
    return record.msg not in _EXPECTED


def _quiet_expected() -> None:
    for logger in (client_log, logging.getLogger("gmqtt.mqtt.protocol")):
        if _unexpected not in logger.filters:
            logger.addFilter(_unexpected)


class _PubackWaiters(PersistentStorage):  # type: ignore[misc]  # gmqtt has no type hints
    """gmqtt's store of unacknowledged QoS 1 packets, used to learn of each PUBACK."""

    def __init__(self) -> None:
        super().__init__()
        self.last_mid: int | None = None
        self.waiters: dict[int, asyncio.Future[None]] = {}

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        self.last_mid = mid

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        waiter = self.waiters.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail_all(self, reason: str) -> None:
        waiters, self.waiters = self.waiters, {}
        for waiter in waiters.values():
            if not waiter.done():
                waiter.set_exception(TransportError(reason))


class GmqttConnection(Connection):
    def __init__(
        self,
        config: BrokerConfig,
        client_id: str,
        *,
        deliver: Deliver | None,
        deliver_held: DeliverHeld | None = None,
    ) -> None:
        super().__init__(config, client_id, deliver=deliver, deliver_held=deliver_held)
        _quiet_expected()
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._lost: asyncio.Future[str] = loop.create_future()
        self._socket_closed = asyncio.Event()
        self._held: dict[asyncio.Future[None], asyncio.Task[Any]] = {}
        self._subacks: dict[int, asyncio.Future[tuple[int, ...]]] = {}
        self._pubacks = _PubackWaiters()
        self._client = self._make_client()
        self._closed = False
        self._acked = False
        self._closing: asyncio.Task[None] | None = None

    def _make_client(self) -> Any:
        cfg = self.config
        properties: dict[str, Any] = {}
        if cfg.protocol == "5":
            properties["session_expiry_interval"] = 0 if cfg.clean_start else cfg.session_expiry_s
            if cfg.receive_maximum is not None:
                properties["receive_maximum"] = cfg.receive_maximum
        client = gmqtt.Client(
            self.client_id,
            clean_session=cfg.clean_start,
            optimistic_acknowledgement=self.deliver_held is None,
            persistent_storage=self._pubacks,
            logger=client_log,
            **properties,
        )
        # delay 0: should gmqtt's rule change, a stray reconnect would show at once
        # (tests/mqtt/test_link.py::test_only_the_link_reconnects)
        client.set_config({"reconnect_retries": _NO_RECONNECTS, "reconnect_delay": 0})
        if cfg.username is not None:
            password = cfg.password.get_secret_value() if cfg.password is not None else None
            client.set_auth_credentials(cfg.username, password)
        if self.deliver_held is not None:
            client.on_message = self._on_message_held
        elif self.deliver is not None:
            client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_disconnect = self._on_disconnect
        return client

    # -- callbacks (gmqtt calls them from its packet handler) ---------------------------------

    def _on_message(
        self, client: Any, topic: str | bytes, payload: bytes, qos: int, properties: dict[str, Any]
    ) -> None:
        deliver = self.deliver
        assert deliver is not None
        if isinstance(topic, bytes):  # gmqtt passes bytes when the topic is not UTF-8
            topic = topic.decode("utf-8", "replace")
        deliver(
            RawMessage(
                topic,
                payload,
                qos,
                properties["retain"] == 1,
                time.time(),
                properties["dup"] == 1,
            )
        )

    async def _on_message_held(
        self, client: Any, topic: str | bytes, payload: bytes, qos: int, properties: dict[str, Any]
    ) -> int:
        """gmqtt sends the PUBACK when this returns (0 is its success reason code)."""
        if qos == 0:
            self._on_message(client, topic, payload, qos, properties)
            return 0
        if self._lost.done() or self._closed:
            # arrived as the connection went: never delivered, so never acknowledged
            await self._socket_closed.wait()
            return 0
        if isinstance(topic, bytes):
            topic = topic.decode("utf-8", "replace")
        message = RawMessage(
            topic, payload, qos, properties["retain"] == 1, time.time(), properties["dup"] == 1
        )
        held = self._loop.create_future()
        task = asyncio.current_task()
        assert task is not None
        self._held[held] = task
        # gmqtt added its PUBACK callback to this task before it started: ours runs after it,
        # so a message leaves _held once its PUBACK is written (close() relies on that)
        task.add_done_callback(functools.partial(self._forget, held))
        deliver_held = self.deliver_held
        assert deliver_held is not None
        deliver_held(message, functools.partial(self._release, held))
        await held
        return 0

    def _forget(self, held: asyncio.Future[None], task: asyncio.Task[Any]) -> None:
        self._held.pop(held, None)

    def _release(self, held: asyncio.Future[None]) -> None:
        if not held.done():
            held.set_result(None)
            self._acked = True

    def _on_subscribe(
        self, client: Any, mid: int, granted: tuple[int, ...], properties: dict[str, Any]
    ) -> None:
        waiter = self._subacks.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(tuple(granted))

    def _on_unsubscribe(self, client: Any, mid: int, granted: Any) -> None:
        waiter = self._subacks.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(())

    def _on_disconnect(self, client: Any, packet: Any, exc: object = None) -> None:
        if self._lost.done():
            return
        if isinstance(packet, Exception):
            reason = f"connection dropped: {packet}"
        elif packet:
            reason = "the broker sent DISCONNECT"
        else:
            reason = "connection lost"
        self._lost.set_result(reason)
        self._pubacks.fail_all(f"{reason} before the PUBACK")
        for waiter in self._subacks.values():
            if not waiter.done():
                waiter.set_exception(TransportError(f"{reason} before the SUBACK"))
        self._subacks.clear()

    # -- Connection ---------------------------------------------------------------------------

    async def connect(self) -> None:
        cfg = self.config
        ssl = tls_context(cfg)
        try:
            async with asyncio.timeout(cfg.connect_timeout_s):
                await self._client.connect(
                    cfg.host,
                    cfg.port,
                    ssl=ssl if ssl is not None else False,
                    keepalive=cfg.keepalive_s,
                    version=MQTTv50 if cfg.protocol == "5" else MQTTv311,
                    raise_exc=True,
                )
        except TimeoutError as exc:
            raise TransportError(f"no CONNACK within {cfg.connect_timeout_s}s") from exc
        except gmqtt.MQTTConnectError as exc:
            raise TransportError(f"the broker refused the connection: {exc}") from exc
        except OSError as exc:
            raise TransportError(f"cannot connect: {exc}") from exc
        if self._lost.done():
            raise TransportError(self._lost.result())

    async def subscribe(self, filters: Sequence[str], qos: int) -> None:
        if self._lost.done():
            raise TransportError(self._lost.result())
        mid = self._client.subscribe([gmqtt.Subscription(f, qos=qos) for f in filters])
        waiter = self._subacks[mid] = self._loop.create_future()
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                granted = await waiter
        except TimeoutError as exc:
            raise TransportError(f"no SUBACK within {self.config.connect_timeout_s}s") from exc
        finally:
            self._subacks.pop(mid, None)
        refused = [f for f, code in zip(filters, granted, strict=False) if code >= 0x80]
        if refused:
            raise TransportError(f"the broker refused the subscription to {refused}")

    async def publish(
        self, topic: str, payload: bytes, qos: int, *, retain: bool, timeout: float
    ) -> None:
        if self._lost.done() or self._closed:
            raise TransportError("connection lost")
        pubacks = self._pubacks
        pubacks.last_mid = None
        try:
            self._client.publish(topic, payload, qos=qos, retain=retain)
        except OverflowError as exc:  # every packet id is in flight
            raise TransportError(f"publish refused: {exc}") from exc
        if qos == 0:
            return
        mid = pubacks.last_mid
        assert mid is not None, "gmqtt stores every QoS 1 publish"
        waiter = pubacks.waiters[mid] = self._loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError as exc:
            raise TransportError(f"no PUBACK within {timeout}s") from exc
        finally:
            pubacks.waiters.pop(mid, None)

    async def _ack_barrier(self) -> None:
        """Wait until the broker has read the PUBACKs sent so far.

        A broker reads the packets of one connection in order, but may handle a new
        connection with the same client id (the next run, or the next link) before it has
        read what the old one sent last, and then drops it: the acknowledged messages would
        come again. It answers an UNSUBSCRIBE only after reading the packets before it, so the
        UNSUBACK of a filter nobody subscribes to tells that the PUBACKs have arrived.
        """
        mid = self._client.unsubscribe(_BARRIER_FILTER)
        waiter = self._subacks[mid] = self._loop.create_future()
        try:
            await waiter
        finally:
            self._subacks.pop(mid, None)

    async def wait_lost(self) -> str:
        return await asyncio.shield(self._lost)

    async def close(self) -> None:
        # shielded: a second cancel must not stop it between the DISCONNECT and the release of
        # the held messages (which have to wait until the socket is closed)
        if self._closing is None:
            self._closed = True
            self._closing = self._loop.create_task(
                self._close(), name=f"gmqtt-close-{self.client_id}"
            )
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        timeout = self.config.connect_timeout_s
        try:
            async with asyncio.timeout(timeout):
                # PUBACKs released before the close go out before the DISCONNECT
                while released := [t for f, t in self._held.items() if f.done()]:
                    await asyncio.wait(released)
                if self._acked and not self._lost.done():
                    await self._ack_barrier()
        except TimeoutError:
            late = sum(1 for f in self._held if f.done())
            log.warning("%d released PUBACK(s) not confirmed within %ss", late, timeout)
        except TransportError as exc:
            log.debug("closing %s: %s", self.client_id, exc)
        try:
            # gmqtt closes the socket before its first await: once this starts, nothing more
            # is written, whatever happens next
            async with asyncio.timeout(timeout):
                await self._client.disconnect()
        except (TimeoutError, OSError) as exc:
            log.debug("disconnect from %s:%d: %r", self.config.host, self.config.port, exc)
        finally:
            self._socket_closed.set()
            if not self._lost.done():
                self._lost.set_result("closed")
            self._pubacks.fail_all("connection closed before the PUBACK")
            # the socket is closed: the PUBACKs these would send go nowhere, and the broker
            # delivers the messages again
            for held in list(self._held):
                if not held.done():
                    held.set_result(None)
