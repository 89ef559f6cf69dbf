"""The ops endpoints' bearer token: refused config beyond loopback without one; with one,
401 without the header, 200 with it; /healthz open (a real aiohttp server)."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from edge_runtime.core import CoreConfig
from edge_runtime.errors import ConfigError
from edge_runtime.ops.config import OpsConfig
from edge_runtime.ops.http import OpsServer


def test_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="http_token_env or http_token_file"):
        OpsConfig(http_host="0.0.0.0")
    with pytest.raises(ValidationError, match="beyond loopback"):
        CoreConfig(http_host="10.1.2.3")
    OpsConfig(http_host="127.0.0.1")
    OpsConfig(http_host="::1")
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    assert OpsConfig(http_host="0.0.0.0", http_token_file=token).token() == "s3cret"
    with pytest.raises(ConfigError, match="OPS_TOKEN_NOT_SET"):
        OpsConfig(http_host="0.0.0.0", http_token_env="OPS_TOKEN_NOT_SET").token()


def _get(port: int, path: str, token: str | None = None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_token_required_except_healthz() -> None:
    server = OpsServer(
        "127.0.0.1",
        0,
        CollectorRegistry(),
        ready=lambda: (True, "ok"),
        status=lambda: {"ok": True},
        token="s3cret",
    )
    async with server:
        codes = {
            (path, token): await asyncio.to_thread(_get, server.port, path, token)
            for path in ("/metrics", "/status", "/readyz", "/healthz")
            for token in (None, "wrong", "s3cret")
        }
    print(codes)
    for (path, token), code in codes.items():
        expected = 200 if path == "/healthz" or token == "s3cret" else 401
        assert code == expected, (path, token, code)
