"""Bearer tokens for the ops endpoints: required whenever they listen beyond loopback.

``/healthz`` stays open (liveness probes carry no token); ``/metrics``, ``/readyz`` and
``/status`` need ``Authorization: Bearer <token>``. The token comes from an environment
variable or a file, is read at start and never logged.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from edge_runtime.errors import ConfigError

__all__ = ["check_exposure", "is_loopback", "resolve_token"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve beyond loopback


def check_exposure(host: str, token_env: str | None, token_file: Path | None, prefix: str) -> None:
    """Raises ValueError (for a config validator) when the endpoint would listen beyond
    loopback without a token, or when both token sources are given."""
    if token_env is not None and token_file is not None:
        raise ValueError(f"give {prefix}token_env or {prefix}token_file, not both")
    if not is_loopback(host) and token_env is None and token_file is None:
        raise ValueError(
            f"{prefix}host = {host!r} listens beyond loopback: set {prefix}token_env or "
            f"{prefix}token_file (a bearer token the scrapers send), or bind 127.0.0.1"
        )


def resolve_token(token_env: str | None, token_file: Path | None) -> str | None:
    """The token, read now; :class:`ConfigError` when its source is missing or empty."""
    token: str | None = None
    if token_env is not None:
        token = os.environ.get(token_env)
        if not token:
            raise ConfigError(
                f"environment variable {token_env!r} (the ops bearer token) is not set"
            )
    elif token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the ops token file {token_file}: {exc.strerror}"
            ) from exc
        if not token:
            raise ConfigError(f"the ops token file {token_file} is empty")
    return token
