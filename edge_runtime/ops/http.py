"""The operations endpoint on aiohttp: /metrics (Prometheus text), /healthz, /readyz, /status.

With a bearer token (see :mod:`edge_runtime.ops.auth`) every path but /healthz (and the
``public_paths`` given, pages that hold no data themselves) answers 401 without
``Authorization: Bearer <token>``.

aiohttp parses the requests: an oversized or malformed request gets its 4xx from there and the
server goes on answering. The :class:`aiohttp.web.Application` is public (``OpsServer.app``) so
that a component above (the core's fleet page) can add its routes before the server starts.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from edge_runtime.lifecycle import Component

__all__ = ["OpsServer"]

log = logging.getLogger(__name__)

_SHUTDOWN_TIMEOUT_S = 1.0  # a scrape in flight at shutdown gets this long to finish
_HELP = "try /metrics, /healthz, /readyz or /status\n"


class OpsServer(Component):
    """Serves the runtime's metrics and health on ``host:port`` (port 0 picks a free one;
    :attr:`port` holds the bound port once started). ``async with`` starts and stops it."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        *,
        ready: Callable[[], tuple[bool, str]],
        status: Callable[[], dict[str, Any]],
        token: str | None = None,
        public_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.host = host
        self.port = port
        self.registry = registry
        self.ready = ready
        self.status = status
        self._token = token.encode() if token is not None else None
        self._public = frozenset({"/healthz", *public_paths})
        self.app = web.Application(middlewares=[_plain_errors, self._authorise])
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/status", self._status)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("metrics and health on http://%s:%d/", self.host, self.port)

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @web.middleware
    async def _authorise(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """With a token, every path but /healthz (and the ``public_paths`` a component above
        serves without data) needs ``Authorization: Bearer <token>``."""
        if self._token is None or request.path in self._public:
            return await handler(request)
        given = request.headers.get(hdrs.AUTHORIZATION, "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self._token):
            return await handler(request)
        return web.Response(
            status=401, text="bearer token required\n", headers={hdrs.WWW_AUTHENTICATE: "Bearer"}
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST}
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        ok, why = self.ready()
        return web.Response(status=200 if ok else 503, text=why + "\n")

    async def _status(self, request: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps(self.status(), option=orjson.OPT_INDENT_2),
            content_type="application/json",
        )


@web.middleware
async def _plain_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unknown paths and methods other than GET get the short plain-text answers they always
    got, rather than aiohttp's generic pages."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        return web.Response(status=404, text=_HELP)
    except web.HTTPMethodNotAllowed as exc:
        return web.Response(
            status=405, text="GET only\n", headers={hdrs.ALLOW: ",".join(exc.allowed_methods)}
        )
