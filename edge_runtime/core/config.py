"""Configuration of the core receiver (``edge-runtime core``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from edge_runtime.mqtt.config import BrokerConfig

__all__ = ["CoreConfig", "NatsForwardConfig"]


class NatsForwardConfig(BaseModel):
    """Forwarding of accepted summaries to NATS JetStream."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(default="nats://127.0.0.1:4222", description="NATS server URL.")
    stream: str = Field(
        default="EDGE_SUMMARIES",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="JetStream stream; created (subjects '<subject_prefix>.>') if missing.",
    )
    subject_prefix: str = Field(
        default="edge",
        description="Summaries go to '<prefix>.<site>.<pipeline>' (dots in names become '_').",
    )
    duplicate_window_s: float = Field(
        default=3600.0,
        gt=0,
        description="JetStream's own de-duplication window (the envelope id is the message id).",
    )


class CoreConfig(BaseModel):
    """The core receiver: where summaries arrive, where they are kept, where they go next."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    broker: BrokerConfig = Field(
        default_factory=BrokerConfig, description="The core broker the sites publish to."
    )
    topics: list[str] = Field(
        default_factory=lambda: ["edge/+/summaries", "edge/+/alerts"],
        description="Topic filters carrying site envelopes.",
    )
    database: Path = Field(
        default=Path("./var/core/summaries.db"),
        description="SQLite database (WAL mode) where accepted summaries are stored.",
    )
    nats: NatsForwardConfig | None = Field(
        default=None,
        description="Forward each accepted summary to NATS JetStream; unset: SQLite only.",
    )
    http_host: str = Field(default="127.0.0.1", description="Address of the status endpoint.")
    http_port: int = Field(
        default=9109, ge=0, le=65535, description="Port of /metrics and /status; 0 = free port."
    )
