"""Helpers for the spool tests: envelope builders, a small aiomqtt publisher, a subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Sequence

import aiomqtt

from edge_runtime.errors import TransportError
from edge_runtime.types import Envelope, Stat, Summary
from edge_runtime.uplink.envelope import decode_envelopes

T0 = 1_700_000_000.0


def stats_for(i: int) -> dict[str, Stat]:
    """Plausible window stats; ``count`` varies so that merges are checkable."""
    count = 3 + i % 5
    mean = 10.0 + (i % 7)
    return {
        "count": count,
        "missing": i % 2,
        "sum": mean * count,
        "min": mean - 2.0,
        "max": mean + 3.0,
        "mean": mean,
        "stddev": 1.0 + (i % 3) * 0.5,
        "p50": mean,
        "p95": mean + 2.0,
    }


def summary(
    key: str, i: int, *, width: float = 300.0, pipeline: str = "counts", kind: str = "summary"
) -> Summary:
    start = T0 + i * width
    return Summary(pipeline, key, start, start + width, stats_for(i), kind=kind)  # type: ignore[arg-type]


def wrap_at(created_at: float, site: str = "site-1") -> Callable[[Summary, int], Envelope]:
    def wrap(s: Summary, seq: int) -> Envelope:
        return Envelope.wrap(
            s, site=site, seq=seq, created_at=created_at, version="test", config_hash="cfg"
        )

    return wrap


def envelopes(
    n: int,
    streams: int = 10,
    *,
    created_at: float | None = None,
    width: float = 300.0,
    kind: str = "summary",
    pipeline: str = "counts",
) -> list[Envelope]:
    """``n`` envelopes round-robin over ``streams`` keys, windows advancing per stream.

    ``created_at`` defaults to now (the spool's TTL is measured against it).
    """
    wrap = wrap_at(time.time() if created_at is None else created_at)
    return [
        wrap(
            summary(f"k{i % streams}", i // streams, width=width, kind=kind, pipeline=pipeline),
            0,
        )
        for i in range(n)
    ]


class TestPublisher:
    """The sender's Publisher over aiomqtt, for tests.

    Keeps itself connected (short fixed retry, fine for tests); a publish waiting for its PUBACK
    fails with TransportError as soon as the connection drops. ``gate`` holds the connection
    back until the test opens it (so that a subscriber is in place first).
    """

    __test__ = False

    def __init__(self, port: int) -> None:
        self.port = port
        self.gate = asyncio.Event()
        self.connects = 0
        self._client: aiomqtt.Client | None = None
        self._lost: asyncio.Future[None] | None = None
        self._up = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.gate.wait()
            lost: asyncio.Future[None] = loop.create_future()
            try:
                async with aiomqtt.Client(
                    "127.0.0.1",
                    self.port,
                    identifier=f"sender-{uuid.uuid4().hex[:8]}",
                    max_inflight_messages=1000,
                    timeout=5,
                ) as client:
                    self._client, self._lost = client, lost
                    self.connects += 1
                    self._up.set()
                    async for _ in client.messages:  # ends with MqttError on disconnect
                        pass
            except aiomqtt.MqttError:
                pass
            finally:
                self._up.clear()
                self._client = None
                if not lost.done():
                    lost.set_result(None)
            await asyncio.sleep(0.05)

    async def wait_connected(self) -> None:
        await self._up.wait()

    async def publish(self, topic: str, payload: bytes, qos: int) -> None:
        client, lost = self._client, self._lost
        if client is None or lost is None or lost.done():
            raise TransportError("test link is down")
        task = asyncio.ensure_future(client.publish(topic, payload, qos=qos, timeout=30))
        done, _ = await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
            raise TransportError("connection lost before the PUBACK")
        try:
            task.result()
        except aiomqtt.MqttError as exc:
            raise TransportError(f"publish failed: {exc}") from exc


class Subscriber:
    """Collects every envelope published on ``topic``; reconnects when the broker restarts."""

    def __init__(self, port: int, topic: str) -> None:
        self.port = port
        self.topic = topic
        self.envelopes: list[Envelope] = []
        self.messages = 0
        self.first_bytes: set[bytes] = set()
        self.ready = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, timeout=5) as client:
                    await client.subscribe(self.topic, qos=1)
                    self.ready.set()
                    async for message in client.messages:
                        assert isinstance(message.payload, bytes)
                        self.messages += 1
                        self.first_bytes.add(message.payload[:1])
                        self.envelopes.extend(decode_envelopes(message.payload))
            except aiomqtt.MqttError:
                self.ready.clear()
            await asyncio.sleep(0.05)

    async def wait_count(self, ids: int, timeout: float = 60.0) -> None:
        """Wait until ``ids`` distinct envelope ids arrived."""
        async with asyncio.timeout(timeout):
            while len({e.id for e in self.envelopes}) < ids:
                await asyncio.sleep(0.05)


def first_arrival_order(received: Sequence[Envelope]) -> dict[str, list[int]]:
    """Per stream, the seqs in the order they first arrived (resends after a drop ignored)."""
    seen: set[str] = set()
    order: dict[str, list[int]] = {}
    for envelope in received:
        if envelope.id in seen:
            continue
        seen.add(envelope.id)
        order.setdefault(envelope.stream, []).append(envelope.seq)
    return order


class Proxy:
    """A TCP proxy to a broker that the test can cut (connections reset) and restore."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.severed = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.sever()
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def sever(self) -> None:
        """Reset every connection and refuse new ones, like a cable pulled out."""
        self.severed = True
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.severed = False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.severed:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst), name="proxy-pipe")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.transport.abort()
            self._writers.discard(dst)
