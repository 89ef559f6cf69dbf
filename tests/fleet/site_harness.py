"""A provisioned site under fleet management, as a real process, and the operator's tools:
bundles sealed with the registry's operator key, published retained on the site's desired
topic of a real core broker; the site's /status, metrics and signed heartbeats read back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from edge_runtime import __version__
from edge_runtime.broker import MosquittoProcess, free_port
from edge_runtime.fleet import Bundle, Heartbeat, desired_topic, heartbeat_topic, open_heartbeat
from edge_runtime.identity import Sealer, SiteRegistry, load_private_key, provision
from tests.delivery.harness import ROOT, SITE_ID, Proc, SiteFiles, status

GROUP = "city-centre"
FAILING_PLUGINS = ROOT / "tests" / "runtime" / "failing_plugins"


def window_table(
    name: str,
    *,
    size_s: float = 4.0,
    stats: str = '"count", "sum", "min", "max"',
    topic: str = "city/lanes/+/count",
    plugin: str = "windows",
) -> str:
    return f"""
[[pipelines]]
type = "{plugin}"
name = "{name}"
topics = ["{topic}"]
decode = {{ format = "json", key = "topic:2" }}
window = {{ kind = "tumbling", size_s = {size_s}, allowed_lateness_s = 0, idle_timeout_s = 3, \
stats = [{stats}] }}
"""


LOCAL_PIPELINES = window_table("lanes") + window_table("raw")


@dataclass(frozen=True)
class FleetSite:
    files: SiteFiles
    registry: Path
    identity: Path
    operator: Sealer
    checkpoints: bool = True

    def write_config(self, pipelines: str, *, core_port: int, site_port: int) -> None:
        self.files.config.write_text(
            site_text(
                self.files,
                self.identity,
                pipelines,
                core_port=core_port,
                site_port=site_port,
                checkpoints=self.checkpoints,
            ),
            encoding="utf-8",
        )


def site_text(
    files: SiteFiles,
    identity: Path,
    pipelines: str,
    *,
    core_port: int,
    site_port: int,
    checkpoints: bool = True,
) -> str:
    return f"""
site_id = "{SITE_ID}"
data_dir = "{files.data_dir}"
plugin_paths = ["{FAILING_PLUGINS}"]

[identity]
dir = "{identity}"

[fleet]
group = "{GROUP}"
heartbeat_interval_s = 0.5
health_timeout_s = 60

[site_broker]
port = {site_port}
transport = "gmqtt"
reconnect_min_s = 0.05
reconnect_max_s = 0.5

[checkpoint]
enabled = {str(checkpoints).lower()}
interval_s = 0.5

[ingest]
batch_wait_ms = 5

[uplink]
delivery = "core"
ack_timeout_s = 3
drain_timeout_s = 20

[uplink.broker]
port = {core_port}
reconnect_min_s = 0.1
reconnect_max_s = 1.0

[ops]
http_port = {files.http_port}
log_format = "text"
tick_interval_s = 0.2
shutdown_timeout_s = 40
pipeline_error_limit = 3

{pipelines}
"""


def fleet_site(
    workdir: Path,
    site_broker: MosquittoProcess,
    core_broker: MosquittoProcess,
    pipelines: str = LOCAL_PIPELINES,
    *,
    checkpoints: bool = True,
) -> FleetSite:
    """A provisioned site (its registry holds the operator key) and its config file."""
    registry, identity = workdir / "registry", workdir / "identity"
    provision(SITE_ID, registry, identity)
    files = SiteFiles(workdir / "site.toml", workdir / "site", free_port())
    site = FleetSite(
        files,
        registry,
        identity,
        Sealer(load_private_key(registry / "operator.key"), "operator"),
        checkpoints,
    )
    site.write_config(pipelines, core_port=core_broker.port, site_port=site_broker.port)
    return site


_serials = iter(range(1, 1_000_000))


def next_serial() -> int:
    """Serials grow as the operator's do (microseconds), without two equal in one test."""
    return int(time.time() * 1e6) + next(_serials)


MANAGED_TABLES = """
[checkpoint]
enabled = true
interval_s = 0.5

[ingest]
batch_wait_ms = 5
"""
"""The site's own checkpoint and ingest tables: a bundle sets every managed table (one it
leaves out runs with its defaults), so the test bundles carry these unchanged."""


def bundle(
    pipelines: str,
    *,
    serial: int | None = None,
    group: str = GROUP,
    runtime_version: str = __version__,
    health_timeout_s: float = 60.0,
    models: dict[str, str] | None = None,
) -> Bundle:
    return Bundle(
        group=group,
        serial=serial if serial is not None else next_serial(),
        config=MANAGED_TABLES + pipelines,
        runtime_version=runtime_version,
        models=models or {},
        health_timeout_s=health_timeout_s,
    )


async def publish_desired(port: int, payload: bytes) -> None:
    """What the core does: the sealed bundle, retained, on the site's desired topic."""
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.publish(desired_topic(SITE_ID), payload, qos=1, retain=True)


async def poll(
    proc: Proc, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 90.0
) -> dict[str, Any]:
    """The site's /status once ``check`` holds for it (fails at once if the site exits)."""
    deadline = time.monotonic() + timeout
    doc: dict[str, Any] = {}
    while True:
        assert proc.running, f"site exited:\n{proc.tail()}"
        try:
            doc = await asyncio.to_thread(status, proc)
        except (OSError, AssertionError):
            doc = {}
        if doc and check(doc):
            return doc
        assert time.monotonic() < deadline, f"never {what}: {doc.get('fleet')}\n{proc.tail(40)}"
        await asyncio.sleep(0.2)


class Heartbeats:
    """Keeps every signed heartbeat of the site that arrives on the core broker, verified
    against the registry."""

    def __init__(self, port: int, registry: Path) -> None:
        self.port = port
        self.registry = SiteRegistry(registry)
        self.beats: list[Heartbeat] = []
        self.bad = 0
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def _run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port) as client:
            await client.subscribe(heartbeat_topic(SITE_ID), qos=1)
            self._ready.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                self.beats.append(open_heartbeat(message.payload, self.registry.public_key))

    async def __aenter__(self) -> Heartbeats:
        self._task = asyncio.create_task(self._run(), name="heartbeats")
        await asyncio.wait_for(self._ready.wait(), 20)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_for(self, check: Callable[[Heartbeat], bool], what: str) -> Heartbeat:
        deadline = time.monotonic() + 60.0
        while True:
            assert self._task is not None
            if self._task.done():
                self._task.result()  # raises what stopped it
            for beat in reversed(self.beats):
                if check(beat):
                    return beat
            last = self.beats[-1].to_dict() if self.beats else None
            assert time.monotonic() < deadline, f"no heartbeat {what}; last: {last}"
            await asyncio.sleep(0.2)
