"""Metrics, health and logs settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge_runtime.ops.auth import check_exposure, resolve_token

__all__ = ["OpsConfig"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OpsConfig(_Model):
    """Metrics, health and logs."""

    http_host: str = Field(
        default="127.0.0.1",
        description="Address of the metrics/health HTTP endpoint. Beyond loopback (0.0.0.0, a "
        "LAN address, a host name) it needs http_token_env or http_token_file, or the config "
        "is refused.",
    )
    http_token_env: str | None = Field(
        default=None,
        description="Environment variable holding the bearer token that /metrics, /readyz and "
        "/status then require ('Authorization: Bearer <token>'); /healthz stays open for "
        "liveness probes.",
    )
    http_token_file: Path | None = Field(
        default=None,
        description="File holding the bearer token (instead of http_token_env; a mounted secret).",
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
    shutdown_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="The longest a stop (SIGTERM/SIGINT) may take, from the signal to the exit; "
        "past it the process logs what was still running and exits with code 3. Every accepted "
        "summary is durable in the spool by then. Must exceed uplink.drain_timeout_s. A second "
        "signal exits at once (code 130).",
    )
    tick_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="How often pipelines' on_tick runs (closes idle windows, emits timers).",
    )
    pipeline_error_limit: int = Field(
        default=5,
        ge=1,
        description="A pipeline whose plugin raises in this many calls in a row (process, "
        "process_messages, on_tick, flush ...) is isolated: its calls are skipped and its "
        "messages set aside (counted as decode errors with reason pipeline_isolated), and "
        "/status and /readyz report it until the site restarts. Every failed call is logged "
        "with the pipeline's name and counted in edge_pipeline_errors_total{pipeline,call}; "
        "the other pipelines go on.",
    )

    @model_validator(mode="after")
    def _exposure(self) -> OpsConfig:
        if self.http_enabled:
            check_exposure(self.http_host, self.http_token_env, self.http_token_file, "http_")
        return self

    def token(self) -> str | None:
        """The bearer token, read now (:class:`~edge_runtime.errors.ConfigError` if missing)."""
        return resolve_token(self.http_token_env, self.http_token_file)
