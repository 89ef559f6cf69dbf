"""Protocol-level site peers for the core's fleet tests: each holds a provisioned site
identity, connects to the core broker as its own broker user, reads its retained desired
topic, verifies each bundle with the operator.pub it was provisioned with, answers as told
(apply, refuse, roll back) and sends signed heartbeats. It is the site's side of the fleet
protocol and nothing more: no pipelines, no reload."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import msgpack
import orjson

from edge_runtime.broker import MosquittoProcess
from edge_runtime.config.loader import resolve_broker
from edge_runtime.core import CoreConfig, CoreReceiver
from edge_runtime.core.config import FleetRolloutConfig
from edge_runtime.errors import DecodeError
from edge_runtime.fleet import Heartbeat, Revision, desired_topic, heartbeat_topic, open_bundle
from edge_runtime.fleet.bundle import managed_hash
from edge_runtime.identity import (
    CORE_USER,
    Sealer,
    SiteIdentity,
    load_public_key,
    open_sealed,
    provision,
)
from edge_runtime.mqtt.config import BrokerConfig

RUNTIME = "0.1.0"
LOCAL_HASH = managed_hash({})


@dataclass
class PeerSite:
    """One site's fleet protocol. A verified bundle with a serial above the one it runs is
    answered with ``answer``: 'applied:', 'refused:<reason>', 'rolled_back:<reason>' or
    'applying:' (it waits; set another answer and call :meth:`retake`)."""

    directory: Path
    group: str
    port: int
    interval_s: float = 0.5
    answer: str = "applied:"
    running_serial: int = 0
    managed: str = LOCAL_HASH
    models: dict[str, str] = field(default_factory=dict)
    runtime_version: str = RUNTIME
    last_serial: int = 0
    last_outcome: str | None = None
    last_reason: str = ""
    drift: tuple[str, ...] = ()
    seen: list[int] = field(default_factory=list)
    """serials of the verified bundles it received"""

    def __post_init__(self) -> None:
        self.identity = SiteIdentity.load(self.directory)
        self.site = self.identity.site_id
        self.operator = load_public_key(self.directory / "operator.pub")
        self.password = (self.directory / "broker-password").read_text()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_payload = b""
        self.last_good = b""

    def heartbeat(self, sealer: Sealer | None = None) -> bytes:
        """The heartbeat of now, signed with the site's key (or ``sealer``)."""
        revision = Revision(
            self.runtime_version, self.managed[:12], {"windows": RUNTIME}, self.models
        )
        return Heartbeat(
            site=self.site,
            group=self.group,
            revision=revision,
            managed_hash=self.managed,
            running_serial=self.running_serial,
            last_serial=self.last_serial,
            last_outcome=self.last_outcome,  # type: ignore[arg-type]
            last_reason=self.last_reason,
            drift=self.drift,
            ready=True,
            backlog=0,
            interval_s=self.interval_s,
        ).seal(sealer or self.identity.sealer)

    def retake(self) -> None:
        """Answer the newest bundle again (after ``answer`` changed)."""
        self._take(self._last_payload)
        self._changed.set()

    def _take(self, payload: bytes) -> None:
        self._last_payload = payload
        try:
            bundle = open_bundle(payload, self.operator)
        except DecodeError as exc:
            self.last_outcome, self.last_reason = "refused", f"bad bundle: {exc.reason}"
            return
        self.seen.append(bundle.serial)
        self.last_good = payload
        if bundle.serial <= self.running_serial:
            return
        self.last_serial = bundle.serial
        outcome, _, reason = self.answer.partition(":")
        self.last_outcome, self.last_reason = outcome, reason
        if outcome == "applied":
            self.running_serial = bundle.serial
            self.managed = bundle.managed_hash
            self.models = dict(bundle.models)
            self.runtime_version = bundle.runtime_version

    async def _run(self) -> None:
        async with aiomqtt.Client(
            "127.0.0.1",
            self.port,
            identifier=f"peer-{self.site}",
            username=self.site,
            password=self.password,
        ) as client:
            await client.subscribe(desired_topic(self.site), qos=1)

            async def beats() -> None:
                while True:
                    await client.publish(heartbeat_topic(self.site), self.heartbeat(), qos=1)
                    self._changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), self.interval_s)

            async with asyncio.TaskGroup() as tg:
                tg.create_task(beats(), name=f"peer-{self.site}-beats")
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    self._take(message.payload)
                    self._changed.set()

    async def __aenter__(self) -> PeerSite:
        self._task = asyncio.create_task(self._run(), name=f"peer-{self.site}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def core_config(registry: Path, port: int, db: Path) -> CoreConfig:
    config = CoreConfig(
        broker=BrokerConfig(
            port=port,
            username=CORE_USER,
            password_file=registry / "core-broker-password",
            reconnect_max_s=0.5,
        ),
        database=db,
        registry=registry,
        http_port=0,
        fleet=FleetRolloutConfig(waves=[0.2, 1.0], wave_timeout_s=60, failure_threshold=0),
    )
    resolve_broker(config.broker, "broker", "test")
    return config


@contextlib.asynccontextmanager
async def running_core(config: CoreConfig) -> AsyncIterator[CoreReceiver]:
    core = CoreReceiver(config)
    task = asyncio.create_task(core.run(), name="core-under-test")
    try:
        await asyncio.wait_for(core.wait_started(), 30)
        yield core
    finally:
        core.stop()
        await asyncio.wait_for(task, 30)


def provisioned(registry: Path, workdir: Path, sites: list[str]) -> dict[str, Path]:
    """Provision ``sites`` into ``registry``; their identity directories."""
    out = {}
    for site in sites:
        out[site] = workdir / f"id-{site}"
        provision(site, registry, out[site])
    return out


def secured_broker(registry: Path) -> MosquittoProcess:
    """A real mosquitto with the registry's password file and ACL (anonymous clients may
    connect but the ACL gives them no topic)."""
    mosquitto = registry / "mosquitto"
    broker = MosquittoProcess(
        extra_conf=f"password_file {mosquitto / 'passwd'}\nacl_file {mosquitto / 'acl'}\n"
    )
    broker.start()
    return broker


async def poll(check: object, what: str, timeout: float = 60.0) -> object:
    """Call ``check()`` (sync or async) until it returns something truthy; fail with ``what``
    and the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        last = check()  # type: ignore[operator]
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s; last: {last!r}")
        await asyncio.sleep(0.1)


def dump(doc: object) -> str:
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()


def tamper(payload: bytes) -> bytes:
    """The bundle with one byte of its signed body changed (its signature kept)."""
    outer = msgpack.unpackb(payload, raw=False)
    sealed = open_sealed(payload, "fleet")
    body = bytearray(sealed.body)
    body[-1] ^= 1
    outer["body"] = bytes(body)
    return msgpack.packb(outer, use_bin_type=True)  # type: ignore[no-any-return]
