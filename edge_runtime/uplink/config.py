"""Where summaries go: the uplink to the core broker."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge_runtime.mqtt.config import BrokerConfig

__all__ = ["Delivery", "SenderConfig", "UplinkConfig"]

Delivery = Literal["core", "broker"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UplinkConfig(_Model):
    """Where summaries go: the core's broker."""

    broker: BrokerConfig = Field(
        default_factory=BrokerConfig, description="The core broker connection."
    )
    topic: str = Field(
        default="edge/{site_id}/summaries",
        description="Topic summaries and alerts are published to ('{site_id}' is replaced), "
        "QoS 1. One topic on one connection keeps every stream in order; alerts go first.",
    )
    store_and_forward: bool = Field(
        default=True,
        description="Keep every summary in the durable spool (see [spool]) until it is "
        "delivered (see delivery). false: a bounded in-memory retry queue, sent with the core "
        "broker's PUBACK as the only confirmation (lost on a crash).",
    )
    delivery: Delivery = Field(
        default="core",
        description="When a spooled summary counts as delivered and leaves the spool. 'core': "
        "when the core receiver acknowledges (on ack_topic) that it has stored it durably; "
        "summaries the core has not acknowledged are sent again. 'broker': on the core "
        "broker's PUBACK, which a broker crash or a lost subscriber session can still lose; "
        "only for a core that sends no acknowledgements, and as the benchmark's baseline.",
    )
    ack_topic: str = Field(
        default="edge/{site_id}/acks",
        description="Topic the core publishes its acknowledgements to ('{site_id}' is "
        "replaced); the site subscribes to it with QoS 1 (delivery = 'core'). Must match the "
        "core's ack_topic.",
    )
    ack_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Summaries the core broker accepted (PUBACK) but the core has not "
        "acknowledged this long after are sent again, flagged resent; the wait doubles for "
        "each further try of the same summary, up to 8 times this. Every summary still "
        "unacknowledged is also sent again after each reconnect.",
    )
    max_unacked: int = Field(
        default=50_000,
        ge=1,
        description="Most summaries sent and not yet acknowledged by the core (delivery = "
        "'core'); at the bound the sender waits for acknowledgements.",
    )
    encoding: Literal["msgpack", "json"] = Field(
        default="msgpack", description="Envelope encoding on the wire: 'msgpack' or 'json'."
    )
    max_batch: int = Field(
        default=500, ge=1, description="Most summaries packed into one uplink message."
    )
    max_batch_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        description="Largest uplink message payload in bytes (spooled uplink); a single larger "
        "envelope is still sent alone.",
    )
    max_in_flight: int = Field(
        default=32, ge=1, description="Most uplink messages awaiting their PUBACK at once."
    )
    live_window_s: float = Field(
        default=60.0,
        gt=0,
        description="Summaries older than this when sent, or pending when the link went down, "
        "are sent flagged backlog=true, behind alerts and live summaries.",
    )
    backlog_rate_per_s: float | None = Field(
        default=None,
        gt=0,
        description="Cap on backlog summaries sent per second, so that draining a long outage "
        "does not starve live data. Unset: as fast as the link allows.",
    )
    publish_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="An uplink message without PUBACK after this long counts as a link failure; "
        "its summaries are sent again.",
    )
    retry_queue: int = Field(
        default=100_000,
        ge=1,
        description="In-memory uplink only (spool disabled): summaries kept for retry while the "
        "core is unreachable; beyond it the oldest are dropped and counted.",
    )
    drain_timeout_s: float = Field(
        default=10.0,
        ge=0,
        description="On shutdown, how long to keep trying to hand pending summaries to the core.",
    )

    @model_validator(mode="after")
    def _check(self) -> UplinkConfig:
        for name in ("topic", "ack_topic"):
            value = getattr(self, name)
            if "+" in value or "#" in value:
                raise ValueError(f"{name} must be a topic name, not a filter (no + or #)")
        return self

    def ack_subscriptions(self, site_id: str) -> list[str]:
        """What the uplink link subscribes to: the core's acknowledgements, when they count."""
        if self.store_and_forward and self.delivery == "core":
            return [self.ack_topic.format(site_id=site_id)]
        return []


class SenderConfig(BaseModel):
    """How the sender drains the spool to the core broker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str = Field(
        default="edge/uplink",
        min_length=1,
        description=(
            "Core broker topic the uplink messages are published to (QoS 1). One topic and "
            "one connection keep each stream's records in order."
        ),
    )
    encoding: Literal["msgpack", "json"] = Field(
        default="msgpack",
        description=(
            "Encoding of uplink messages. msgpack is sent from the stored bytes without "
            "re-encoding; json decodes and re-encodes every envelope."
        ),
    )
    max_batch_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        description=(
            "Largest uplink message payload in bytes (several envelopes per message); a "
            "single larger envelope is still sent alone."
        ),
    )
    max_batch_records: int = Field(
        default=2000,
        ge=1,
        description="Most envelopes in one uplink message.",
    )
    max_in_flight: int = Field(
        default=64,
        ge=1,
        description=(
            "Uplink messages published and not yet acknowledged (PUBACK) at once. More in "
            "flight drains faster over a long round trip."
        ),
    )
    live_window_s: float = Field(
        default=60.0,
        gt=0,
        description=(
            "Records older than this when sent, or pending when the link went down, are sent "
            "flagged backlog=True and drained at backlog_rate_per_s behind live data."
        ),
    )
    backlog_rate_per_s: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Token-bucket cap on backlog records sent per second so that a drain does not "
            "starve live data; None drains the backlog as fast as the link allows."
        ),
    )
    backlog_burst: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Bucket size of the backlog rate cap in records; defaults to one second of "
            "backlog_rate_per_s or max_batch_records, whichever is larger."
        ),
    )
    publish_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "A publish without PUBACK after this long counts as a link failure: in-flight "
            "records go back to the spool and are resent once the link is back."
        ),
    )
    delivery: Delivery = Field(
        default="broker",
        description=(
            "'core': a record is acked in the spool only when the core's acknowledgement "
            "names it (see :meth:`Sender.on_ack`), and resent when none comes; 'broker': "
            "on the PUBACK (the sender alone, e.g. to a plain subscriber)."
        ),
    )
    ack_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description=(
            "delivery = 'core': records PUBACKed but not acknowledged by the core this long "
            "after go back to the spool and are sent again, flagged resent; the wait doubles "
            "with each try of a record, up to 8 times this."
        ),
    )
    max_unacked: int = Field(
        default=50_000,
        ge=1,
        description="delivery = 'core': most records sent and not yet acknowledged by the core.",
    )
