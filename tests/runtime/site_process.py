"""A site runtime as a real process (``python -m edge_runtime run -c CFG --quiet``), watched
through its ops endpoint, and a feed of readings for it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiomqtt
import orjson


def http_get(url: str) -> tuple[int, bytes]:
    """Status and body; (0, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        return 0, str(exc).encode()


class SiteProcess:
    """``edge-runtime run`` in a subprocess; stdout and stderr go to ``log``."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config = config
        self.base = f"http://127.0.0.1:{port}"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_runtime", "run", "-c", str(self.config), "--quiet"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def get(self, path: str) -> tuple[int, bytes]:
        return await asyncio.to_thread(http_get, self.base + path)

    async def status(self) -> dict[str, Any]:
        code, body = await self.get("/status")
        assert code == 200, body
        doc: dict[str, Any] = orjson.loads(body)
        return doc

    async def until(self, what: str, predicate: Any, timeout: float = 120.0) -> Any:
        """Poll ``predicate()`` (a coroutine function returning ``(done, seen)``) until done;
        the process must stay alive meanwhile. Returns what it saw last."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.alive, f"the site exited while waiting for {what}:\n{self.tail()}"
            done, seen = await predicate()
            if done:
                return seen
            assert time.monotonic() < deadline, (
                f"no {what} within {timeout} s; last seen: {seen!r}\n{self.tail()}"
            )
            await asyncio.sleep(0.2)

    async def wait_serving(self) -> None:
        async def serving() -> tuple[bool, bytes]:
            code, body = await self.get("/healthz")
            return code == 200, body

        await self.until("/healthz", serving, timeout=60)

    async def ready(self) -> tuple[bool, str]:
        """(``/readyz`` answered 200, its body)."""
        code, body = await self.get("/readyz")
        return code == 200, body.decode(errors="replace")

    async def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, and the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def tail(self, n: int = 4000) -> str:
        return self.log.read_bytes()[-n:].decode(errors="replace")

    def output(self) -> str:
        return self.log.read_bytes().decode(errors="replace")


async def feed(port: int, topics: list[str], stop: asyncio.Event, per_round: float = 0.25) -> int:
    """Publish one reading (event time now) on each topic every ``per_round`` seconds until
    ``stop``; the messages published."""
    sent = 0
    async with aiomqtt.Client("127.0.0.1", port) as client:
        while not stop.is_set():
            now = time.time()
            for i, topic in enumerate(topics):
                doc = {"value": float(i % 100), "ts": now}
                await client.publish(topic, orjson.dumps(doc), qos=0)
            sent += len(topics)
            await asyncio.sleep(per_round)
    return sent
