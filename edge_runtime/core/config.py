"""Configuration of the core receiver (``edge-runtime core``)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_runtime.mqtt.config import BrokerConfig
from edge_runtime.ops.auth import check_exposure

__all__ = ["CoreConfig", "FleetRolloutConfig", "NatsForwardConfig"]


def _core_broker() -> BrokerConfig:
    # one client, not a fleet: it may come back quickly after a broker restart
    return BrokerConfig(transport="gmqtt", protocol="5", reconnect_max_s=5.0)


class NatsForwardConfig(BaseModel):
    """NATS JetStream: the store of record (store = "nats"), or a forward after SQLite.

    JetStream writes to disk lazily by default (``sync_interval`` 2 min), and acknowledges a
    publish before the write reaches the disk: a power cut loses what it acknowledged. With
    store = "nats" the server must run with ``jetstream { sync_interval: always }`` (nats-server
    2.10 and later) so that its acknowledgement, which the core passes on to the site, means
    the summary is on disk; the core cannot check this from the client side.
    """

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
        description="JetStream's own de-duplication window (the envelope id is the message "
        "id, Nats-Msg-Id). Make it longer than a site may take to send a summary again (its "
        "uplink.ack_timeout_s backoff, or a site outage): within it a summary two receivers "
        "both took is stored once.",
    )
    publish_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="How long a batch may wait for JetStream's acknowledgements before the "
        "batch counts as failed and is tried again (nothing is acknowledged meanwhile).",
    )


def _check_waves(waves: list[float]) -> list[float]:
    if not waves:
        raise ValueError("give at least one wave (e.g. [1.0])")
    if any(not 0 < w <= 1 for w in waves):
        raise ValueError("each wave is a cumulative share of the group's sites in (0, 1]")
    if any(b <= a for a, b in itertools.pairwise(waves)):
        raise ValueError("waves are cumulative shares: each one larger than the one before")
    if waves[-1] != 1.0:
        raise ValueError("the last wave must be 1.0 (every site of the group)")
    return waves


class FleetRolloutConfig(BaseModel):
    """Fleet management at the core: heartbeats, rollouts in waves, drift (needs registry).

    When the operator publishes a signed bundle for a group (``edge-runtime fleet publish``),
    the core verifies it with the registry's operator.pub and rolls it out to the group's
    sites (the sites whose heartbeats name the group) in waves: it publishes the operator's
    signed bytes, unchanged and retained, to each chosen site's desired topic and waits for
    each site's heartbeat to report the outcome. A wave whose failures (refused, rolled back,
    no outcome within wave_timeout_s) pass failure_threshold halts the rollout.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=True,
        description="Track heartbeats, roll bundles out and report drift. It runs only when "
        "the core has a registry (the site keys to verify heartbeats with, operator.pub to "
        "verify bundles with).",
    )
    waves: list[float] = Field(
        default_factory=lambda: [0.2, 1.0],
        description="Cumulative shares of the group's sites that have the bundle after each "
        "wave, e.g. [0.2, 1.0]: a canary fifth (at least one site), then the rest. Strictly "
        "growing, each in (0, 1], the last 1.0.",
    )
    rollback_waves: list[float] = Field(
        default_factory=lambda: [1.0],
        description="The waves of a rollback ('edge-runtime fleet rollback'): by default all "
        "sites at once, without the canary pause. Same rules as waves.",
    )
    failure_threshold: int = Field(
        default=0,
        ge=0,
        description="Failures allowed in one wave (a site that refused the bundle, rolled "
        "back, or reported no outcome within wave_timeout_s); one more halts the rollout, "
        "and the sites of later waves keep what they run.",
    )
    wave_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="How long a wave waits for each of its sites to report the outcome "
        "(applied, refused, rolled back) in a heartbeat; a site silent that long counts as a "
        "failure. Make it longer than the bundles' health_timeout_s plus a heartbeat interval.",
    )
    heartbeat_stale_s: float | None = Field(
        default=None,
        gt=0,
        description="A site whose newest heartbeat is older than this is reported as drift "
        "('heartbeat stale'). Unset: three of the site's own heartbeat intervals.",
    )
    client_id: str = Field(
        default="edge-core-fleet",
        description="MQTT client id of the core's fleet connection (a second connection to "
        "the core broker, with the broker settings above).",
    )

    _waves = field_validator("waves", "rollback_waves")(_check_waves)


class CoreConfig(BaseModel):
    """The core receiver: where summaries arrive, where they are kept, where they go next.

    A summary counts as delivered (the core acknowledges it to its site on ``ack_topic``) only
    once the store of record has it durably: the SQLite database committed with
    ``synchronous=FULL``, or JetStream's publish acknowledgement. The core's own PUBACK of
    the uplink message follows the same commit, so the broker delivers again what a core
    that crashed in between never stored.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    broker: BrokerConfig = Field(
        default_factory=_core_broker,
        description="The core broker the sites publish to. The core holds each message's "
        "PUBACK until the message is stored, which needs transport = 'gmqtt' (the default "
        "here; 'aiomqtt' is refused); protocol '5' (the default here) lets the core bound "
        "what the broker sends before the PUBACKs (receive_maximum = inbox_messages). Keep "
        "clean_start = false and a stable client_id: the persistent session holds what "
        "arrives while the core is away.",
    )
    topics: list[str] = Field(
        default_factory=lambda: ["edge/+/summaries", "edge/+/alerts"],
        description="Topic filters carrying site envelopes.",
    )
    share_group: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Subscribe through the MQTT shared subscription '$share/<group>/<filter>' "
        "so that several receivers (each its own client_id) split the sites' traffic. Use it "
        "with store = 'nats': each receiver's SQLite then holds only its share, and so does "
        "its /status view of gaps.",
    )
    ack_topic: str = Field(
        default="edge/{site_id}/acks",
        description="Where the core acknowledges stored summaries to each site ('{site_id}' is "
        "replaced), QoS 1; must match the sites' uplink.ack_topic.",
    )
    store: Literal["sqlite", "nats"] = Field(
        default="sqlite",
        description="The store of record, whose durable write the acknowledgement to the site "
        "follows: 'sqlite' (database, committed with synchronous=FULL) or 'nats' (JetStream, "
        "see [nats]; the SQLite database then keeps this receiver's index of what it stored, "
        "for duplicates and gaps, committed with synchronous=NORMAL).",
    )
    database: Path = Field(
        default=Path("./var/core/summaries.db"),
        description="SQLite database (WAL mode) where accepted summaries are stored.",
    )
    nats: NatsForwardConfig | None = Field(
        default=None,
        description="NATS JetStream: with store = 'nats' the store of record (default settings "
        "when unset); with store = 'sqlite', where each stored summary is forwarded after the "
        "commit; unset: SQLite only.",
    )
    inbox_messages: int = Field(
        default=256,
        ge=1,
        le=65535,
        description="Most uplink messages received and not yet stored. The broker is told so "
        "(MQTT 5 receive maximum); should a broker send more, the core drops its connection "
        "and the broker delivers the messages again (counted as inbox_overflow).",
    )
    registry: Path | None = Field(
        default=None,
        description="The site registry 'edge-runtime provision' fills (site public keys, the "
        "core's signing key). Set: signed uplink messages are verified against it before "
        "anything is stored or acknowledged, and acknowledgements are signed with the core "
        "key. Unset: no signatures (as before).",
    )
    require_signed: bool | None = Field(
        default=None,
        description="Refuse unsigned uplink messages (counted as rejected_unsigned). Default: "
        "true when registry is set; it cannot be true without a registry.",
    )
    max_seq_ahead: int = Field(
        default=1_000_000,
        ge=1,
        description="An envelope whose sequence number is more than this beyond the highest "
        "the core has seen from its site is refused with its message (rejected_seq_too_far), "
        "so a forged number cannot fake millions of missing summaries. Keep it above the most "
        "summaries a site may hold in its spool.",
    )
    replay_window_s: float = Field(
        default=600.0,
        gt=0,
        description="A signed message signed longer ago than this is refused (rejected_stale), "
        "and within it a message whose signing time was seen before is refused "
        "(rejected_replayed). The site signs when it sends (a resend is signed again), so "
        "this bounds the transit time and the time a message may wait at the broker.",
    )
    max_clock_skew_s: float = Field(
        default=60.0,
        ge=0,
        description="How far ahead of the core's clock a site's signing time may be.",
    )
    http_host: str = Field(
        default="127.0.0.1",
        description="Address of the status endpoint. Beyond loopback it needs http_token_env "
        "or http_token_file.",
    )
    http_port: int = Field(
        default=9109, ge=0, le=65535, description="Port of /metrics and /status; 0 = free port."
    )
    http_token_env: str | None = Field(
        default=None,
        description="Environment variable holding the bearer token that /metrics, /readyz, "
        "/status and /fleet.json require (/healthz and the /fleet page itself, which holds "
        "no data, stay open; the page sends the token it is given in its URL fragment).",
    )
    http_token_file: Path | None = Field(
        default=None, description="File holding the bearer token (instead of http_token_env)."
    )
    fleet: FleetRolloutConfig = Field(
        default_factory=FleetRolloutConfig,
        description="Fleet management (heartbeats, rollouts in waves, drift, the /fleet "
        "page); active when registry is set.",
    )

    @field_validator("broker", mode="after")
    @classmethod
    def _holding_broker(cls, broker: BrokerConfig) -> BrokerConfig:
        given = broker.model_fields_set
        if "transport" not in given:
            broker = broker.model_copy(update={"transport": "gmqtt"})
        if "protocol" not in given:
            broker = broker.model_copy(update={"protocol": "5"})
        if broker.transport != "gmqtt":
            raise ValueError(
                "the core receiver holds each PUBACK until the summaries are stored, which "
                "needs transport = 'gmqtt' (or leave transport unset)"
            )
        if broker.clean_start:
            raise ValueError(
                "the core receiver needs a persistent session (clean_start = false): the broker "
                "keeps what arrives while the core is away, and delivers again what it never "
                "acknowledged"
            )
        return broker

    @model_validator(mode="after")
    def _check(self) -> CoreConfig:
        if "+" in self.ack_topic or "#" in self.ack_topic:
            raise ValueError("ack_topic must be a topic name, not a filter (no + or #)")
        if "{site_id}" not in self.ack_topic:
            raise ValueError("ack_topic must name the site: put '{site_id}' in it")
        if self.require_signed and self.registry is None:
            raise ValueError(
                "require_signed = true needs a registry (the site public keys to verify with)"
            )
        check_exposure(self.http_host, self.http_token_env, self.http_token_file, "http_")
        return self

    @property
    def signatures_required(self) -> bool:
        if self.require_signed is None:
            return self.registry is not None
        return self.require_signed

    @property
    def jetstream(self) -> NatsForwardConfig | None:
        """The JetStream settings in use (the defaults when store = 'nats' and none given)."""
        if self.nats is None and self.store == "nats":
            return NatsForwardConfig()
        return self.nats

    def subscriptions(self) -> list[str]:
        if self.share_group is None:
            return list(self.topics)
        return [f"$share/{self.share_group}/{t}" for t in self.topics]
