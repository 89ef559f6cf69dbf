"""How a site reaches its two brokers: the embedded brokers its config asks for, the site
broker link that fills the ingest queue, and the uplink link to the core broker (on which the
core's acknowledgements and the fleet's bundles come back).

The links supervise themselves (reconnects with backoff: :class:`~edge_runtime.mqtt.link.MqttLink`);
the runtime enters them in its exit stack, in the order :meth:`SiteRuntime.run
<edge_runtime.runtime.site.SiteRuntime.run>` gives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack

from edge_runtime.broker.embedded import EmbeddedBroker
from edge_runtime.config.models import SiteConfig
from edge_runtime.mqtt.config import BrokerConfig
from edge_runtime.mqtt.link import MessageSink, MqttLink
from edge_runtime.types import RawMessage

__all__ = ["site_link", "start_brokers", "uplink_link"]


async def start_brokers(
    stack: AsyncExitStack, config: SiteConfig
) -> tuple[BrokerConfig, BrokerConfig]:
    """Start the embedded brokers ``config`` asks for, in ``stack`` (one when the site and
    the uplink share its port); return the site and the uplink broker configs to dial."""
    site = await _embedded(stack, config, config.site_broker)
    uplink = await _embedded(stack, config, config.uplink.broker, reuse=(config.site_broker, site))
    return site, uplink


async def _embedded(
    stack: AsyncExitStack,
    config: SiteConfig,
    broker: BrokerConfig,
    reuse: tuple[BrokerConfig, BrokerConfig] | None = None,
) -> BrokerConfig:
    """Start an embedded broker if ``broker`` asks for one; return the config to dial."""
    if not broker.embedded:
        return broker
    if reuse is not None and reuse[0].embedded and reuse[0].port == broker.port:
        return reuse[1]  # site and uplink share one embedded broker
    data = config.data_dir / "broker"
    embedded = await stack.enter_async_context(EmbeddedBroker(broker.host, broker.port, data))
    return broker.model_copy(update={"port": embedded.port})


def uplink_link(
    config: SiteConfig,
    broker: BrokerConfig,
    *,
    subscriptions: Sequence[str],
    sink: MessageSink,
) -> MqttLink:
    """The link to the core broker (QoS 1); what it receives on ``subscriptions`` goes to
    ``sink``."""
    return MqttLink(
        broker,
        client_id=broker.client_id or f"edge-{config.site_id}-uplink",
        role="core",
        subscriptions=list(subscriptions),
        qos=1,
        sink=sink,
    )


def site_link(
    config: SiteConfig,
    broker: BrokerConfig,
    *,
    topics: Sequence[str],
    sink: MessageSink,
    on_oversized: Callable[[RawMessage], None],
    manual_ack: bool,
) -> MqttLink:
    """The link to the site broker: ``topics`` at the ingest QoS into ``sink``; a message
    over ``max_payload_bytes`` goes to ``on_oversized`` instead. With ``manual_ack`` the
    PUBACKs wait for the checkpoints (see :meth:`Checkpointer.holds_pubacks
    <edge_runtime.runtime.checkpointing.Checkpointer.holds_pubacks>`)."""
    return MqttLink(
        broker,
        client_id=broker.client_id or f"edge-{config.site_id}-ingest",
        role="site",
        subscriptions=topics,
        qos=config.ingest.qos,
        sink=sink,
        max_payload_bytes=config.ingest.max_payload_bytes,
        on_oversized=on_oversized,
        manual_ack=manual_ack,
    )
