"""The operations endpoint over real sockets: every route, and bad requests that it survives."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from edge_runtime.ops import OpsServer


class Health:
    def __init__(self) -> None:
        self.ok = True

    def ready(self) -> tuple[bool, str]:
        return self.ok, "site broker up" if self.ok else "site broker down"


@pytest.fixture
def health() -> Health:
    return Health()


@pytest.fixture
async def server(health: Health) -> AsyncIterator[OpsServer]:
    registry = CollectorRegistry()
    Counter("edge_test_things", "Things counted by the test.", registry=registry).inc(3)
    status: dict[str, Any] = {"site_id": "test-site", "messages_in": 6}
    async with OpsServer(
        "127.0.0.1", 0, registry, ready=health.ready, status=lambda: status
    ) as ops:
        yield ops


async def fetch(ops: OpsServer, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"http://127.0.0.1:{ops.port}{path}") as resp,
    ):
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


def exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes, return everything the server answers until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # the server may stop reading (and close) before it has all of a huge request
        with contextlib.suppress(OSError):
            sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def status_code(answer: bytes) -> int:
    return int(answer.split(b"\r\n", 1)[0].split(b" ")[1])


async def test_port_zero_binds_a_free_port(server: OpsServer) -> None:
    assert server.port != 0
    assert (await fetch(server, "/healthz"))[0] == 200


async def test_every_endpoint(server: OpsServer, health: Health) -> None:
    code, ctype, body = await fetch(server, "/metrics")
    assert (code, ctype) == (200, CONTENT_TYPE_LATEST)
    assert b"edge_test_things_total 3.0" in body
    assert (await fetch(server, "/healthz"))[::2] == (200, b"ok\n")
    assert (await fetch(server, "/readyz"))[::2] == (200, b"site broker up\n")
    health.ok = False
    assert (await fetch(server, "/readyz"))[::2] == (503, b"site broker down\n")
    code, ctype, body = await fetch(server, "/status?pretty=1")
    assert (code, ctype) == (200, "application/json")
    assert orjson.loads(body) == {"site_id": "test-site", "messages_in": 6}
    code, _, body = await fetch(server, "/nothing-here")
    assert code == 404
    assert b"/metrics" in body
    assert (await fetch(server, "/metrics", "POST"))[::2] == (405, b"GET only\n")


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", id="200KB-line"),
        pytest.param(b"\x00\x01\x02 garbage\r\n\r\n", id="binary"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n", id="bad-header"),
        pytest.param(b"GET /healthz HTTP/9.z\r\n\r\n", id="bad-version"),
    ],
)
async def test_bad_requests_get_a_4xx_and_the_server_keeps_answering(
    server: OpsServer, request_bytes: bytes
) -> None:
    answer = await asyncio.to_thread(exchange, server.port, request_bytes)
    assert 400 <= status_code(answer) < 500, answer[:200]
    assert (await fetch(server, "/healthz"))[0] == 200
    answer = await asyncio.to_thread(
        exchange, server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status_code(answer) == 200


async def test_closing_releases_the_port(health: Health) -> None:
    ops = OpsServer("127.0.0.1", 0, CollectorRegistry(), ready=health.ready, status=dict)
    async with ops:
        port = ops.port
    with pytest.raises(ConnectionRefusedError):
        await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port), 2)
    await ops.close()  # a second close is harmless
