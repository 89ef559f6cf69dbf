"""Brokers the runtime can start itself: the mosquitto binary, else the pure-Python amqtt.

Used when a config declares ``embedded = true`` for a broker, by the demo, and by the test
fixtures (which need to stop and restart a real broker on a fixed port).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Self

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.lifecycle import Component

__all__ = ["EmbeddedBroker", "MosquittoProcess", "free_port", "wait_port"]

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until ``host:port`` accepts TCP connections (raises after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise EdgeRuntimeError(f"broker on {host}:{port} did not start: {exc}") from exc
            time.sleep(0.02)


class MosquittoProcess:
    """A real mosquitto on ``host:port`` that can be stopped and started again (same port)."""

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        *,
        binary: str | None = None,
        persistence: bool = False,
        workdir: Path | None = None,
        extra_conf: str = "",
    ) -> None:
        found = (
            binary
            or shutil.which("mosquitto")
            or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        )
        if found is None:
            raise EdgeRuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.binary = found
        self.host = host
        self.port = port or free_port(host)
        self._tmp = (
            tempfile.TemporaryDirectory(prefix="edge-mosquitto-") if workdir is None else None
        )
        self.workdir = workdir or Path(self._tmp.name if self._tmp else ".")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf = self.workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} {host}",
            "allow_anonymous true",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "max_queued_messages 1000000",
            "max_inflight_messages 0",
            "message_size_limit 0",
            "set_tcp_nodelay true",
            "log_dest file " + str(self.workdir / "mosquitto.log"),
            "log_type error",
            "log_type warning",
            extra_conf,
        ]
        if os.geteuid() == 0:
            # run as root, mosquitto drops to the 'mosquitto' user and then cannot write its
            # persistence file or log into our (root-owned) working directory
            lines.append("user root")
        self.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists()

    def start(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(self.host, self.port, timeout)
        except EdgeRuntimeError:
            self.stop()
            raise

    def stop(self, *, kill: bool = False) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EmbeddedBroker(Component):
    """Runs a broker for the site, mosquitto else amqtt, while ``async with`` lasts."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, workdir: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.workdir = workdir
        self.kind = "mosquitto" if MosquittoProcess.available() else "amqtt"
        self._mosquitto: MosquittoProcess | None = None
        self._amqtt: Any = None

    async def start(self) -> None:
        if self.kind == "mosquitto":
            self._mosquitto = MosquittoProcess(self.port, self.host, workdir=self.workdir)
            await asyncio.to_thread(self._mosquitto.start)
        else:
            await self._start_amqtt()
        log.info("embedded %s broker on %s:%d", self.kind, self.host, self.port)

    async def _start_amqtt(self) -> None:
        try:
            from amqtt.broker import Broker  # noqa: PLC0415 (optional dependency)
        except ImportError as exc:
            raise EdgeRuntimeError(
                "no embedded broker available: install mosquitto (apt-get install mosquitto) "
                "or the Python broker (pip install 'edge-runtime[embedded-broker]')"
            ) from exc
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }
        self._amqtt = Broker(config)
        await self._amqtt.start()

    async def close(self) -> None:
        mosquitto, self._mosquitto = self._mosquitto, None
        amqtt, self._amqtt = self._amqtt, None
        if mosquitto is not None:
            await asyncio.to_thread(mosquitto.close)
        if amqtt is not None:
            with contextlib.suppress(Exception):
                await amqtt.shutdown()
