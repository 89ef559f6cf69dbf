"""The small interface between :class:`~edge_runtime.mqtt.link.MqttLink` and a client library.

A :class:`Connection` is one connection to a broker, made once and never reused: the link
makes a new one for every (re)connect, so a library's own reconnect logic, queues and message
ids never outlive the connection they belong to. One module per library implements it
(:mod:`~edge_runtime.mqtt.aiomqtt_transport`, :mod:`~edge_runtime.mqtt.gmqtt_transport`); the
link owns everything else (state, backoff, subscriptions, the held acknowledgements).

Every failure a connection reports is a :class:`~edge_runtime.errors.TransportError`, with the
library's exception chained as its cause.
"""

from __future__ import annotations

import abc
import ssl
from collections.abc import Callable, Sequence

from edge_runtime.errors import TransportError
from edge_runtime.mqtt.config import BrokerConfig
from edge_runtime.types import RawMessage

__all__ = ["Connection", "Deliver", "DeliverHeld", "Release", "tls_context"]

Deliver = Callable[[RawMessage], None]
"""Called synchronously for every message received (its PUBACK, if any, is already sent)."""

Release = Callable[[], None]
"""Sends the PUBACK of one held message (called by the link, in receive order)."""

DeliverHeld = Callable[[RawMessage, Release], None]
"""With manual acknowledgements: called for every QoS 1 message, whose PUBACK waits until the
link calls ``release``."""


class Connection(abc.ABC):
    """One connection to a broker, from :meth:`connect` to :meth:`close`.

    ``deliver`` receives every message with its acknowledgement already sent, except that with
    ``deliver_held`` set (manual acknowledgements) QoS 1 messages go there instead and their
    PUBACK waits for ``release``. A release after the connection is lost sends nothing: the
    broker redelivers the message to the persistent session.
    """

    def __init__(
        self,
        config: BrokerConfig,
        client_id: str,
        *,
        deliver: Deliver | None,
        deliver_held: DeliverHeld | None = None,
    ) -> None:
        self.config = config
        self.client_id = client_id
        self.deliver = deliver
        self.deliver_held = deliver_held

    @abc.abstractmethod
    async def connect(self) -> None:
        """Connect within ``config.connect_timeout_s``; raises TransportError when the broker
        cannot be reached or refuses the connection."""

    @abc.abstractmethod
    async def subscribe(self, filters: Sequence[str], qos: int) -> None:
        """Subscribe and wait for the SUBACK; raises TransportError when a filter is refused."""

    @abc.abstractmethod
    async def publish(
        self, topic: str, payload: bytes, qos: int, *, retain: bool, timeout: float
    ) -> None:
        """Send one message; for QoS 1 return once the PUBACK arrived. Raises TransportError
        when the connection is lost first or the PUBACK takes longer than ``timeout``."""

    @abc.abstractmethod
    async def wait_lost(self) -> str:
        """Return, with the reason, once the connection is gone (it never comes back)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect (if still connected) and release everything; safe to call twice and
        after a failed :meth:`connect`. Held messages are dropped without their PUBACK."""


def tls_context(config: BrokerConfig, role: str = "") -> ssl.SSLContext | None:
    """The client TLS context a broker config asks for (None: plain TCP); TransportError naming
    the field when its files cannot be loaded (the loader checks that they exist; this catches
    a bad or unreadable one)."""
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
        where = f"{role} broker {field}" if role else field
        message = f"{where}: cannot load it ({exc}); fix the file or the setting"
        raise TransportError(message) from exc
    if tls.insecure:
        ctx.check_hostname = False
    return ctx
