"""(e) Gap accounting at the core, with a real core process: counted from sequence number 1,
duplicates apart from missing, late (gap-filling) and backlog apart, the age of the oldest
missing number, and the same after a restart (rebuilt from the store)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace
from pathlib import Path

import aiomqtt
import orjson

from edge_runtime.broker import MosquittoProcess
from edge_runtime.pipelines import Summary
from edge_runtime.uplink import Envelope, encode_envelopes
from edge_runtime.uplink.acks import decode_ack
from tests.delivery.harness import Processes, figures, http_get, status, wait_ready

SITE = "gap-site"


def envelopes(*seqs: int) -> list[Envelope]:
    return [
        Envelope.wrap(
            Summary("ped", "107-quay-street", s * 60.0, s * 60.0 + 60, {"count": 4, "sum": 812.0}),
            site=SITE,
            seq=s,
            created_at=time.time(),
            version="t",
            config_hash="h",
        )
        for s in seqs
    ]


async def publish(port: int, batch: list[Envelope]) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.publish(f"edge/{SITE}/summaries", encode_envelopes(batch, "msgpack"), qos=1)


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{site="{SITE}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_missing_from_seq_1_duplicates_and_late_apart(
    core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    # no receiver has ever subscribed: the broker acknowledges these and forgets them
    await publish(core_broker.port, envelopes(*range(1, 11)))
    acked: list[tuple[int, int]] = []
    db = tmp_path / "core.db"
    with Processes(tmp_path) as procs:
        core = procs.core(core_broker, db)
        await wait_ready(core)
        async with aiomqtt.Client("127.0.0.1", core_broker.port) as client:
            await client.subscribe(f"edge/{SITE}/acks", qos=1)

            async def collect_acks() -> None:
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    acked.extend(decode_ack(message.payload).ranges)

            collecting = asyncio.create_task(collect_acks())
            try:
                await publish(core_broker.port, envelopes(*range(11, 31)))
                again = [e.as_resent() for e in envelopes(*range(15, 20))]
                await publish(core_broker.port, again)
                late = [replace(e, backlog=True) for e in envelopes(5)]
                await publish(core_broker.port, [*late, *envelopes(40)])
                async with asyncio.timeout(20):
                    while status(core)["counters"].get("envelopes", 0) < 27:
                        await asyncio.sleep(0.1)
                    while sum(hi - lo + 1 for lo, hi in acked) < 27:
                        await asyncio.sleep(0.1)
            finally:
                collecting.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await collecting
        site = status(core)["sites"][SITE]
        _, body = http_get(core.http_port or 0, "/metrics")
        metrics = body.decode()
        assert core.terminate() == 0, core.tail()
        again = procs.core(core_broker, db)  # rebuilt from the store
        await wait_ready(again)
        rebuilt = status(again)["sites"][SITE]
        assert again.terminate() == 0, again.tail()
    figures(
        "(e) gap accounting: seqs 1-10 lost, 11-30 stored, 15-19 again, 5 late, 40",
        missing=site["missing"],
        gaps=site["gaps"],
        duplicates=site["duplicates"],
        late=site["late"],
        backlog_received=site["backlog_received"],
        resent_received=site["resent_received"],
        oldest_missing_age_s=site["oldest_missing_age_s"],
        acknowledged_ranges=acked,
        after_restart=orjson.dumps({k: rebuilt[k] for k in ("missing", "gaps")}).decode(),
    )
    assert site["gaps"] == [[1, 4], [6, 10], [31, 39]]
    assert site["missing"] == 4 + 5 + 9
    assert site["duplicates"] == 5  # never missing
    assert site["late"] == 1 and site["backlog_received"] == 1
    assert site["resent_received"] == 5
    assert site["received"] == 22 and site["max_seq"] == 40
    assert site["oldest_missing_age_s"] > 0
    assert metric(metrics, "edge_core_site_missing") == 18
    assert metric(metrics, "edge_core_site_duplicates_total") == 5
    assert metric(metrics, "edge_core_site_late_total") == 1
    assert metric(metrics, "edge_core_site_oldest_missing_seconds") > 0
    # every seq that arrived is acknowledged, the duplicates again
    covered = sorted(s for lo, hi in acked for s in range(lo, hi + 1))
    assert covered == sorted([*range(11, 31), *range(15, 20), 5, 40])
    assert rebuilt["gaps"] == site["gaps"] and rebuilt["missing"] == 18
