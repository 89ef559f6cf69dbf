"""The sender against a real mosquitto: outage then drain, a link cut mid-drain, the rate cap."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterable
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.backoff import Backoff
from edge_runtime.broker import MosquittoProcess
from edge_runtime.errors import TransportError
from edge_runtime.uplink.config import SenderConfig
from edge_runtime.uplink.sender import Sender
from edge_runtime.uplink.spool import Priority, Spool, SpoolConfig, SpoolError
from tests.uplink.spool.spool_helpers import (
    Proxy,
    Subscriber,
    TestPublisher,
    envelopes,
    first_arrival_order,
)


@contextlib.asynccontextmanager
async def background(*coros: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run never-ending helper loops for the duration of the block."""
    tasks = [asyncio.create_task(c, name=f"helper-{i}") for i, c in enumerate(coros)]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if not isinstance(result, asyncio.CancelledError):
                raise AssertionError(f"helper loop failed: {result!r}")


async def _drained(spool: Spool) -> None:
    async with asyncio.timeout(10):
        while spool.stats().depth:
            await asyncio.sleep(0.01)


def _topic() -> str:
    return f"edge/test-{uuid.uuid4().hex[:8]}/uplink"


def _assert_in_order(received: list[Any], expected_ids: set[str]) -> None:
    assert {e.id for e in received} == expected_ids
    for stream, seqs in first_arrival_order(received).items():
        assert seqs == sorted(seqs), f"{stream} out of order"


async def test_outage_then_drain_delivers_everything_in_order(
    spool_config: SpoolConfig, stopped_broker: MosquittoProcess
) -> None:
    topic = _topic()
    publisher = TestPublisher(stopped_broker.port)
    subscriber = Subscriber(stopped_broker.port, topic)
    config = SenderConfig(topic=topic, max_batch_records=250, live_window_s=0.5)
    batch = envelopes(5000, streams=10)
    async with (
        Spool(spool_config) as spool,
        background(publisher.run()),
        Sender(spool, publisher, config) as sender,
    ):
        for start in range(0, 5000, 500):  # the broker is down: everything is spooled
            await spool.append(batch[start : start + 500])
        assert spool.stats().depth == 5000
        await asyncio.sleep(0.6)  # older than live_window_s by the time the link is back
        assert sender.stats().records_sent == 0 and not sender.stats().connected
        await asyncio.to_thread(stopped_broker.start)
        async with background(subscriber.run()):
            # the subscriber first: the broker drops QoS 1 messages nobody subscribed to
            await asyncio.wait_for(subscriber.ready.wait(), 10)
            publisher.gate.set()  # the link comes back
            await asyncio.wait_for(sender.wait_sent(5000), 60)
            await subscriber.wait_count(5000)
        stats = sender.stats()
        await _drained(spool)
        assert spool.stats().acked == 5000
    _assert_in_order(subscriber.envelopes, {e.id for e in batch})
    assert all(e.backlog for e in subscriber.envelopes)
    assert stats.backlog_flagged == 5000 and stats.messages_sent >= 20
    assert stats.records_by_lane["backlog"] == 5000


async def test_link_cut_mid_drain_resends_in_order(
    spool_config: SpoolConfig, stopped_broker: MosquittoProcess
) -> None:
    stopped_broker.start()
    topic = _topic()
    subscriber = Subscriber(stopped_broker.port, topic)
    config = SenderConfig(topic=topic, max_batch_records=100, max_in_flight=32)
    batch = envelopes(20_000, streams=10)
    async with Proxy(stopped_broker.port) as proxy, background(subscriber.run()):
        await asyncio.wait_for(subscriber.ready.wait(), 10)
        publisher = TestPublisher(proxy.port)
        publisher.gate.set()
        async with Spool(spool_config) as spool:
            await spool.append(batch)
            async with background(publisher.run()), Sender(spool, publisher, config) as sender:
                async with asyncio.timeout(60):
                    while sender.stats().records_sent < 3000:
                        await asyncio.sleep(0.005)
                proxy.sever()  # the cable is pulled while messages are in flight
                await asyncio.sleep(0.3)
                assert not sender.stats().connected
                live = envelopes(50, streams=5, pipeline="after-cut")
                await spool.append(live)
                proxy.restore()
                await asyncio.wait_for(sender.wait_sent(20_050), 60)
                await subscriber.wait_count(20_050)
                stats = sender.stats()
            await _drained(spool)
    assert stats.link_downs == 1 and publisher.connects == 2
    _assert_in_order(subscriber.envelopes, {e.id for e in [*batch, *live]})
    # records pending when the link went down come back flagged as backlog; the rest are live
    arrived = {e.id: e for e in reversed(subscriber.envelopes)}  # first arrival wins
    assert all(not arrived[e.id].backlog for e in live)


async def test_backlog_rate_cap_lets_live_data_through(
    spool_config: SpoolConfig, stopped_broker: MosquittoProcess
) -> None:
    stopped_broker.start()
    topic = _topic()
    subscriber = Subscriber(stopped_broker.port, topic)
    publisher = TestPublisher(stopped_broker.port)
    publisher.gate.set()
    rate = 1000.0
    config = SenderConfig(topic=topic, max_batch_records=100, backlog_rate_per_s=rate)
    backlog = envelopes(4000, streams=10, pipeline="old")
    backlog_ids = {e.id for e in backlog}
    async with background(subscriber.run(), publisher.run()), Spool(spool_config) as spool:
        await asyncio.wait_for(subscriber.ready.wait(), 10)
        await spool.append(backlog, priority=Priority.BACKLOG)
        started = time.monotonic()
        async with Sender(spool, publisher, config) as sender:
            await asyncio.sleep(0.3)
            live = envelopes(20, streams=2, pipeline="live")
            await spool.append(live)
            live_ids = {e.id for e in live}
            async with asyncio.timeout(30):
                while not live_ids <= {e.id for e in subscriber.envelopes}:
                    await asyncio.sleep(0.01)
            backlog_before_live = len(backlog_ids & {e.id for e in subscriber.envelopes})
            await asyncio.wait_for(sender.wait_sent(4020), 60)
            drained_at = time.monotonic() - started
    # burst (max(rate, batch) = 1000) at once, the other 3000 at 1000/s: the cap is a lower
    # bound on the drain time whatever the machine's speed (a slower one only takes longer),
    # and the live summaries got through while backlog was still held back
    assert drained_at >= 2.7, drained_at
    assert backlog_before_live < len(backlog), backlog_before_live
    _assert_in_order(subscriber.envelopes, {e.id for e in [*backlog, *live]})


async def test_sender_stops_cleanly_and_returns_leases(tmp_path: Path) -> None:
    class Down:
        async def publish(self, topic: str, payload: bytes, qos: int) -> None:
            raise AssertionError("never connected")

        async def wait_connected(self) -> None:
            await asyncio.Event().wait()

    async with Spool(SpoolConfig(path=str(tmp_path / "s.db"))) as spool:
        await spool.append(envelopes(10))
        async with Sender(spool, Down(), SenderConfig()):
            await asyncio.sleep(0.05)
        assert spool.stats().leased == 0 and spool.stats().depth == 10


async def test_json_encoding_and_alerts_first(
    spool_config: SpoolConfig, stopped_broker: MosquittoProcess
) -> None:
    stopped_broker.start()
    topic = _topic()
    subscriber = Subscriber(stopped_broker.port, topic)
    publisher = TestPublisher(stopped_broker.port)
    config = SenderConfig(topic=topic, encoding="json", max_batch_records=1000)
    live = envelopes(30, streams=3)
    alerts = envelopes(4, kind="alert", pipeline="alarm")
    async with background(subscriber.run(), publisher.run()), Spool(spool_config) as spool:
        await asyncio.wait_for(subscriber.ready.wait(), 10)
        await spool.append(live)
        await spool.append(alerts)
        async with Sender(spool, publisher, config) as sender:
            publisher.gate.set()
            await asyncio.wait_for(sender.wait_sent(34), 20)
            await subscriber.wait_count(34)
    assert subscriber.messages == 1 and subscriber.first_bytes == {b"["}  # one JSON message
    assert [e.kind for e in subscriber.envelopes[:4]] == ["alert"] * 4
    _assert_in_order(subscriber.envelopes, {e.id for e in [*live, *alerts]})


async def test_a_link_that_fails_while_up_is_retried_with_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first failure goes straight back to wait_connected; failures after it wait per
    Backoff, each longer than the one before (the delays themselves are zeroed here)."""
    attempts: list[int] = []
    real_next_delay = Backoff.next_delay

    def next_delay(self: Backoff) -> float:
        attempts.append(self.attempt)
        real_next_delay(self)
        return 0.0

    monkeypatch.setattr(Backoff, "next_delay", next_delay)

    class Flaky:
        def __init__(self) -> None:
            self.failures = 4
            self.sent: list[bytes] = []

        async def publish(self, topic: str, payload: bytes, qos: int) -> None:
            if self.failures:
                self.failures -= 1
                raise TransportError("refused while connected")
            self.sent.append(payload)

        async def wait_connected(self) -> None:
            return

    flaky = Flaky()
    async with Spool(SpoolConfig(path=str(tmp_path / "s.db"))) as spool:
        await spool.append(envelopes(10))
        async with Sender(spool, flaky, SenderConfig()) as sender:
            await asyncio.wait_for(sender.wait_sent(10), 10)
            stats = sender.stats()
        await sender.close()  # closing twice is harmless
    assert attempts == [0, 1, 2]
    assert stats.link_downs == 4 and stats.records_sent == 10


class _AcksFail(Spool):
    """A real spool whose acks fail (a disk error other than a full disk)."""

    async def ack(self, ids: Iterable[int]) -> int:
        del ids
        raise SpoolError("injected: the delete failed", path=str(self.path))


async def test_records_whose_ack_fails_are_not_resent_in_a_loop(
    spool_config: SpoolConfig, stopped_broker: MosquittoProcess
) -> None:
    """The broker acknowledged the records but the spool cannot delete them: they go back and
    are sent again, but after a backoff (counted as spool_errors), never in a tight loop."""
    stopped_broker.start()
    topic = _topic()
    publisher = TestPublisher(stopped_broker.port)
    subscriber = Subscriber(stopped_broker.port, topic)
    config = SenderConfig(topic=topic, max_batch_records=10, max_in_flight=2)
    watched_s = 3.0
    async with (
        _AcksFail(spool_config) as spool,
        background(publisher.run(), subscriber.run()),
    ):
        await spool.append(envelopes(100))
        await asyncio.wait_for(subscriber.ready.wait(), 10)
        publisher.gate.set()
        async with Sender(spool, publisher, config) as sender:
            await asyncio.sleep(watched_s)
            stats = sender.stats()
        await asyncio.sleep(0.3)  # the last messages reach the subscriber
    # the backoff doubles from 50 ms (each wait at least half of that): at most 8 rounds in 3 s,
    # each with max_in_flight messages and one more leased as the round fails (a slower machine
    # only sends fewer); a tight loop sends thousands
    bound = 8 * (config.max_in_flight + 1)
    print(
        f"\nacks failing for {watched_s} s: {subscriber.messages} messages sent (bound {bound}), "
        f"{stats.records_sent} records, spool errors {stats.spool_errors}"
    )
    assert 1 <= stats.spool_errors <= 8
    assert 1 <= subscriber.messages <= bound
