"""Envelope ids stay honest: revisions, superseded results, the replay namespace (issue 12,
item 4). The store is a real SQLite file; the receiver test talks to a real mosquitto."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiomqtt

from edge_runtime.broker import MosquittoProcess
from edge_runtime.config import BrokerConfig
from edge_runtime.core import CoreConfig, CoreReceiver, SummaryStore
from edge_runtime.pipelines import Summary
from edge_runtime.types import Envelope, SummaryKind
from edge_runtime.uplink import encode_envelopes


def envelope(
    seq: int,
    count: int,
    *,
    revision: int = 0,
    kind: SummaryKind = "summary",
    window: float = 0.0,
    replayed: bool = False,
    config_hash: str = "h",
) -> Envelope:
    summary = Summary("p", "k", window, window + 60, {"count": count}, kind, revision)
    return Envelope.wrap(
        summary,
        site="s1",
        seq=seq,
        created_at=1.7e9 + seq,
        version="t",
        config_hash=config_hash,
        replayed=replayed,
    )


def test_two_results_of_one_window_never_share_an_id() -> None:
    first = envelope(1, 31)
    again = envelope(2, 33, revision=1)
    correction = envelope(3, 34, revision=2, kind="correction")
    replayed = envelope(4, 30, replayed=True)
    other_replay = envelope(5, 29, replayed=True, config_hash="h2")
    ids = {e.id for e in (first, again, correction, replayed, other_replay)}
    assert len(ids) == 5
    # revisions of one window share its window id; a replay is a window of its own
    assert first.window_id == again.window_id == correction.window_id
    assert replayed.window_id != first.window_id != other_replay.window_id
    # the same result sent twice keeps its id (a duplicate), whatever its seq
    assert envelope(9, 31).id == first.id


def test_the_store_keeps_the_highest_revision_and_counts_the_rest(tmp_path: Path) -> None:
    store = SummaryStore(tmp_path / "core.db", synchronous="NORMAL")
    added = store.add([envelope(1, 31)], 1.0)
    assert [e.seq for e in added.stored] == [1] and not added.stale and not added.replaced

    # a higher revision replaces the stored row; the replaced one is superseded
    added = store.add([envelope(2, 33, revision=1)], 2.0)
    assert [e.seq for e in added.stored] == [2] and added.replaced == [("s1", 1)]
    # the same id and revision again: a duplicate, nothing changes
    added = store.add([envelope(7, 33, revision=1)], 3.0)
    assert not added.stored and not added.stale and not added.replaced
    # a lower revision than the stored one: superseded on arrival, not stored
    added = store.add([envelope(3, 32, revision=0, window=0.0).as_resent()], 4.0)
    assert not added.stored  # same id as seq 1's: a duplicate
    stale = envelope(4, 30, revision=0, kind="correction")  # another id, revision 0 < 1
    added = store.add([stale], 4.0)
    assert [e.seq for e in added.stale] == [4] and not added.stored

    # several revisions in one call: only the highest is stored
    added = store.add([envelope(5, 10, window=60.0), envelope(6, 11, revision=1, window=60.0)], 5.0)
    assert [e.seq for e in added.stored] == [6] and [e.seq for e in added.stale] == [5]

    # a replayed result of window 0 is a window of its own: stored beside the live one
    added = store.add([envelope(8, 29, replayed=True)], 6.0)
    assert [e.seq for e in added.stored] == [8]

    rows = {(e.window_start, e.replayed): e for e in store.envelopes()}
    assert rows[(0.0, False)].stats["count"] == 33 and rows[(0.0, False)].revision == 1
    assert rows[(60.0, False)].revision == 1 and rows[(0.0, True)].stats["count"] == 29
    assert store.superseded("s1") == 3  # seq 1 (replaced), 4 and 5 (stale)

    # superseded seqs are never missing, also when progress is rebuilt from the store
    progress = store.progress()["s1"]
    assert progress.max_seq == 8 and progress.gaps == []  # 3 and 7 were duplicates
    assert progress.superseded == 3
    store.close()


def test_a_store_from_before_window_ids_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "core.db"
    store = SummaryStore(path, synchronous="NORMAL")
    store.add([envelope(1, 31)], 1.0)
    store.close()
    db = sqlite3.connect(path)  # as an older core wrote it: no window column
    db.execute("DROP INDEX summaries_window")
    db.execute("ALTER TABLE summaries DROP COLUMN window")
    db.commit()
    db.close()
    store = SummaryStore(path, synchronous="NORMAL")
    added = store.add([envelope(2, 33, revision=1)], 2.0)
    assert added.replaced == [("s1", 1)] and store.count() == 1
    store.close()


async def test_the_receiver_reports_superseded_beside_duplicates(
    core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    config = CoreConfig(
        broker=BrokerConfig(port=core_broker.port, reconnect_min_s=0.05),
        database=tmp_path / "core.db",
        http_port=0,
    )
    receiver = CoreReceiver(config)
    task = asyncio.create_task(receiver.run())
    try:
        await receiver.wait_started()
        assert receiver.link is not None
        await receiver.link.wait_connected()
        sent = [
            envelope(1, 31),
            envelope(2, 33, revision=1),  # re-emitted with the rest of its readings
            envelope(2, 33, revision=1).as_resent(),  # sent again: a duplicate
            envelope(3, 29, replayed=True),  # a replay of the same window: its own
        ]
        async with aiomqtt.Client("127.0.0.1", core_broker.port) as client:
            for env in sent:
                await client.publish("edge/s1/summaries", encode_envelopes([env], "json"), qos=1)
        async with asyncio.timeout(20):
            while receiver.counters["envelopes"] < len(sent):
                await asyncio.sleep(0.02)
        status = receiver.status()
        site = status["sites"]["s1"]
        assert status["stored"] == 2
        assert (site["superseded"], site["duplicates"], site["missing"]) == (1, 1, 0)
        assert status["counters"]["superseded"] == 1
        assert site["received"] == 2  # what is stored: the replaced row no longer counts
        assert receiver.ops is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", receiver.ops.port)
        writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
        await writer.drain()
        metrics = (await reader.read()).decode()
        writer.close()
        assert 'edge_core_site_superseded_total{site="s1"} 1.0' in metrics
        assert 'edge_core_site_duplicates_total{site="s1"} 1.0' in metrics
    finally:
        receiver.stop()
        await asyncio.wait_for(task, 10)
    again = CoreReceiver(config)
    assert again.sites["s1"].superseded == 1 and again.sites["s1"].missing == 0
    again.store.close()


def test_the_spool_gives_replayed_summaries_the_ids_the_core_expects() -> None:
    """The spool builds stored documents straight from summaries (``SiteWrap``): its ids must
    be those of :meth:`Envelope.wrap`, replay namespace included."""
    from edge_runtime.uplink.spool._encode import SiteWrap, encode_rows

    summary = Summary("p", "k", 0.0, 60.0, {"count": 3})
    for replayed in (False, True):
        wrap = SiteWrap("s1", 1.7e9, "t", "h", replayed=replayed)
        rows = encode_rows([summary], wrap, None, 1).rows
        assert rows[0][2] == wrap(summary, 1).id
    live = SiteWrap("s1", 1.7e9, "t", "h")(summary, 1)
    replay = SiteWrap("s1", 1.7e9, "t", "h", replayed=True)(summary, 2)
    assert live.id != replay.id and live.window_id != replay.window_id


def test_the_parts_of_a_window_are_stored_side_by_side(tmp_path: Path) -> None:
    """A site without checkpoints cuts a window at a stop and emits the rest after the
    restart: two parts, each flagged incomplete with the number of the run that emitted it.
    Neither replaces the other; a higher revision replaces within its own part only."""

    def part(seq: int, count: int, revision: int, run: int) -> Envelope:
        attrs = {"incomplete": True, "part": run}
        summary = Summary("p", "k", 0.0, 60.0, {"count": count}, revision=revision, attrs=attrs)
        return Envelope.wrap(
            summary, site="s1", seq=seq, created_at=1.7e9 + seq, version="t", config_hash="h"
        )

    store = SummaryStore(tmp_path / "core.db", synchronous="NORMAL")
    store.add([envelope(1, 5, window=60.0)], 1.0)  # another window, whole
    cut = part(2, 20, 0, 1)
    rest = part(3, 13, 2000, 2)
    assert cut.id != rest.id and cut.window_id == rest.window_id
    added = store.add([cut, rest], 2.0)
    assert [e.seq for e in added.stored] == [2, 3] and not added.stale and not added.replaced
    # a correction of the second part replaces that part only
    added = store.add([part(4, 14, 2001, 2)], 3.0)
    assert [e.seq for e in added.stored] == [4] and added.replaced == [("s1", 3)]
    counts = sorted(e.stats["count"] for e in store.envelopes() if e.window_start == 0.0)
    assert counts == [14, 20]  # together the window's 34 readings
    assert store.superseded("s1") == 1
    assert store.progress()["s1"].gaps == []
    store.close()
