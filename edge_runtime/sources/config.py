"""How messages from the site broker enter the runtime."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["IngestConfig", "OverflowPolicy"]

OverflowPolicy = Literal["drop_oldest", "drop_newest"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IngestConfig(_Model):
    """How messages from the site broker enter the runtime."""

    qos: Literal[0, 1] = Field(default=1, description="QoS of the subscriptions (0 or 1).")
    extra_subscriptions: list[str] = Field(
        default_factory=list,
        description="Topic filters to subscribe to besides the pipelines' own (e.g. '#' to audit "
        "a broker). Messages that match no pipeline are counted as 'unexpected_topic'.",
    )
    queue_size: int = Field(
        default=100_000,
        ge=1,
        description="Capacity of the ingest queue (messages) between the MQTT client and the "
        "pipelines.",
    )
    overflow: OverflowPolicy = Field(
        default="drop_oldest",
        description="What happens when the ingest queue is full: 'drop_oldest' (keep the "
        "freshest data) or 'drop_newest'; each dropped message is counted in "
        "edge_ingest_dropped_total{reason='overflow'}. Size queue_size for the bursts you expect.",
    )
    batch_max: int = Field(
        default=2048, ge=1, description="Largest micro-batch handed to the pipelines (messages)."
    )
    batch_wait_ms: float = Field(
        default=20.0,
        ge=0,
        description="Longest a micro-batch waits to fill up after its first message arrives.",
    )
    max_payload_bytes: int = Field(
        default=256 * 1024,
        ge=1,
        description="Payloads larger than this are set aside and counted as 'oversized'.",
    )
