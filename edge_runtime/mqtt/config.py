"""Connection settings of an MQTT broker: the site broker, the core broker."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator

__all__ = ["BrokerConfig", "TLSConfig"]


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
    transport: Literal["aiomqtt", "gmqtt"] = Field(
        default="gmqtt",
        description="MQTT client library of this connection: 'gmqtt' (the default: "
        "asyncio-native, about 2.5x less CPU per received message for the whole site ingest; "
        "see bench/bench_ingest.py (f) and bench/bench_peers.py) or 'aiomqtt' (paho "
        "underneath, still supported). Manual acknowledgements, which hold a message's "
        "PUBACK until the runtime has made it durable, need 'gmqtt'; with 'aiomqtt' a "
        "message's DUP flag is not reported.",
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
    receive_maximum: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="MQTT 5 with transport 'gmqtt': most QoS 1 messages the broker may send "
        "this client before their PUBACK (Receive Maximum), which bounds what a client holding "
        "its PUBACKs (the core receiver) has in hand. Unset: the broker's own limit "
        "(mosquitto: max_inflight_messages, which also applies to MQTT 3.1.1).",
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
        default=30.0,
        gt=0,
        description="Cap on the reconnect delay; each wait is drawn between half the delay and "
        "the delay, so that sites do not reconnect in step.",
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

    def file_problems(self) -> list[tuple[str, str]]:
        """The files this config names that cannot be read, as (field, what is wrong and what
        to change). The loader refuses a config with any; it runs after relative paths were
        resolved against the config file's folder, so models never touch the disk."""
        named: list[tuple[str, Path | None, str]] = [
            ("password_file", self.password_file, _HINTS[3])
        ]
        if self.tls is not None:
            named = [
                ("tls.ca_file", self.tls.ca_file, _HINTS[0]),
                ("tls.cert_file", self.tls.cert_file, _HINTS[1]),
                ("tls.key_file", self.tls.key_file, _HINTS[2]),
                *named,
            ]
        problems = []
        for field, path, hint in named:
            if path is None:
                continue
            if not path.exists():
                problems.append((field, f"{path} does not exist; {hint}"))
            elif not path.is_file():
                problems.append((field, f"{path} is not a file; {hint}"))
            elif not os.access(path, os.R_OK):
                problems.append((field, f"{path} is not readable by this user; {hint}"))
        return problems


_HINTS = (
    "point ca_file at the PEM file of the CA that signed the broker's certificate, or remove "
    "it to trust the system's CAs",
    "point cert_file at the client certificate (PEM), or remove cert_file and key_file to "
    "connect without one",
    "point key_file at the private key (PEM) of cert_file",
    "point password_file at the file holding the broker password, or use password_env",
)
