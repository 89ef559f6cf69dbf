"""The site configuration model: one TOML file per site, validated by pydantic.

Every field carries a description; ``docs/config-reference.md`` is generated from them
(``edge-runtime config-reference``).  Secrets (broker passwords) are named by environment
variable or file here and resolved by the loader; they are never stored in the file or logged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from edge_runtime.spool.config import SpoolConfig

__all__ = [
    "BrokerConfig",
    "IngestConfig",
    "OpsConfig",
    "OverflowPolicy",
    "SiteConfig",
    "TLSConfig",
    "UplinkConfig",
]

OverflowPolicy = Literal["drop_oldest", "drop_newest"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSConfig(_Model):
    """TLS for a broker connection."""

    ca_file: Path | None = Field(
        default=None,
        description="PEM file of the CA(s) that signed the broker's certificate; unset uses the "
        "system trust store.",
    )
    cert_file: Path | None = Field(
        default=None, description="Client certificate (PEM) for mutual TLS; needs key_file."
    )
    key_file: Path | None = Field(
        default=None, description="Private key (PEM) of the client certificate."
    )
    insecure: bool = Field(
        default=False,
        description="Skip the broker hostname check. Only for lab setups; never in production.",
    )

    @model_validator(mode="after")
    def _pair(self) -> TLSConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both cert_file and key_file for mutual TLS, or neither")
        return self


class BrokerConfig(_Model):
    """An MQTT broker connection (the site broker, or the core's)."""

    embedded: bool = Field(
        default=False,
        description="Start a broker for this site inside the runtime (the mosquitto binary when "
        "installed, else the pure-Python amqtt broker). For demos and single-box sites; a "
        "config that names a real broker never falls back to an embedded one.",
    )
    host: str = Field(default="127.0.0.1", description="Broker host name or IP address.")
    port: int = Field(
        default=1883,
        ge=0,
        le=65535,
        description="Broker TCP port. With embedded = true, 0 picks a free port.",
    )
    protocol: Literal["3.1.1", "5"] = Field(
        default="3.1.1",
        description="MQTT protocol version to speak: '3.1.1' or '5'. 3.1.1 is the default: "
        "the client parses MQTT 5 properties on every message, which costs about 15% more CPU "
        "per message (measured with bench/bench_ingest.py).",
    )
    client_id: str | None = Field(
        default=None,
        description="MQTT client id. Default: 'edge-<site_id>-<role>'. Keep it stable: the "
        "persistent session is keyed by it.",
    )
    clean_start: bool = Field(
        default=False,
        description="Start a fresh session on every connect. false keeps a persistent session, so "
        "QoS 1 messages published while the runtime was disconnected are delivered on return.",
    )
    session_expiry_s: int = Field(
        default=3600,
        ge=0,
        description="MQTT 5 session expiry interval: how long the broker keeps the session after "
        "a disconnect.",
    )
    keepalive_s: int = Field(
        default=30, ge=5, le=3600, description="MQTT keep-alive interval in seconds."
    )
    username: str | None = Field(default=None, description="User name for broker authentication.")
    password_env: str | None = Field(
        default=None,
        description="Name of the environment variable that holds the broker password.",
    )
    password_file: Path | None = Field(
        default=None,
        description="File whose content (stripped of trailing newlines) is the broker password.",
    )
    tls: TLSConfig | None = Field(default=None, description="TLS settings; unset means plain TCP.")
    reconnect_min_s: float = Field(
        default=0.2, gt=0, description="First reconnect delay; doubles after each failure."
    )
    reconnect_max_s: float = Field(
        default=30.0, gt=0, description="Cap on the reconnect delay (full jitter is applied)."
    )
    connect_timeout_s: float = Field(
        default=10.0, gt=0, description="How long one connection attempt may take."
    )

    _password: SecretStr | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self) -> BrokerConfig:
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("set password_env or password_file, not both")
        if (self.password_env or self.password_file) and self.username is None:
            raise ValueError("a password needs a username")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        if self.port == 0 and not self.embedded:
            raise ValueError("port 0 (pick a free port) only makes sense with embedded = true")
        return self

    @property
    def password(self) -> SecretStr | None:
        """The resolved password (set by the loader); print it only as '**********'."""
        return self._password


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
        description="Keep every summary in the durable spool (see [spool]) until the core "
        "broker acknowledged it. false: a bounded in-memory retry queue (lost on a crash).",
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
        if "+" in self.topic or "#" in self.topic:
            raise ValueError("topic must be a topic name, not a filter (no + or #)")
        return self


class OpsConfig(_Model):
    """Metrics, health and logs."""

    http_host: str = Field(
        default="127.0.0.1", description="Address of the metrics/health HTTP endpoint."
    )
    http_enabled: bool = Field(
        default=True, description="Serve the metrics/health HTTP endpoint at all."
    )
    http_port: int = Field(
        default=9108,
        ge=0,
        le=65535,
        description="Port of the HTTP endpoint serving /metrics (Prometheus), /healthz, /readyz "
        "and /status; 0 picks a free port.",
    )
    log_format: Literal["json", "text"] = Field(
        default="json", description="Log line format: structured 'json' or human 'text'."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Lowest log level written."
    )
    tick_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="How often pipelines' on_tick runs (closes idle windows, emits timers).",
    )


class SiteConfig(_Model):
    """One site: its identity, its brokers and its pipelines."""

    site_id: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Unique id of this site within the city; goes into every envelope.",
    )
    data_dir: Path = Field(
        default=Path("./var/edge-runtime"),
        description="Directory for the runtime's state (sequence numbers, the spool). Relative "
        "paths are resolved against the config file's folder.",
    )
    site_broker: BrokerConfig = Field(
        default_factory=BrokerConfig, description="The site's own broker that sensors publish to."
    )
    uplink: UplinkConfig = Field(
        default_factory=UplinkConfig, description="The uplink to the core."
    )
    ingest: IngestConfig = Field(default_factory=IngestConfig, description="Ingest settings.")
    ops: OpsConfig = Field(default_factory=OpsConfig, description="Metrics, health and logs.")
    spool: SpoolConfig = Field(
        default_factory=SpoolConfig,
        description="The durable store-and-forward spool (used when uplink.store_and_forward).",
    )
    plugin_paths: list[Path] = Field(
        default_factory=list,
        description="Extra folders whose *.py modules define pipeline plugins (relative to the "
        "config file). Plugins installed as packages are found through the "
        "'edge_runtime.pipelines' entry-point group without this.",
    )
    pipelines: list[dict[str, Any]] = Field(
        min_length=1,
        description="The pipelines ([[pipelines]] tables). Each has a 'type' naming its plugin; "
        "the plugin's own config model validates the rest (see the per-plugin sections).",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> SiteConfig:
        names = [p.get("name") for p in self.pipelines]
        dupes = sorted({str(n) for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"pipeline names must be unique; repeated: {dupes}")
        return self
