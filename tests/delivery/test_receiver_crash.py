"""(b), (c) and (d): the core receiver comes late, is killed mid-stream, crashes before
storing; the core broker drops what passes its queue bound while the receiver is away.

(b) The site starts 10 s before the core receiver has ever connected: the core broker drops
what the site sends meanwhile (no session subscribes to it) and acknowledges it. Then the
receiver is SIGKILLed mid-stream and restarted.

(c) The receiver "crashes" between receiving and storing: a test hook makes it SIGKILL
itself after it has received N messages, before the commit. It has released no PUBACK for
them, so the broker delivers them again to the restarted receiver, which stores each once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edge_runtime.broker import MosquittoProcess
from edge_runtime.core.receiver import CRASH_AFTER_ENV
from tests.delivery.harness import (
    SITE_ID,
    Feed,
    Processes,
    core_stored,
    figures,
    site_config,
    spool_accepted,
    status,
    wait_drained,
    wait_ready,
)

pytestmark = pytest.mark.slow


async def test_site_before_the_core_and_the_receiver_killed_mid_stream(
    site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    files = site_config(tmp_path, site_broker=site_broker, core_broker=core_broker)
    db = tmp_path / "core.db"
    with Processes(tmp_path) as procs:
        site = procs.site(files)
        await wait_ready(site)
        async with Feed(site_broker.port) as feed:
            await asyncio.sleep(10)  # no receiver yet: the broker drops all of it
            sent_before_core = status(site)["uplink"]["sent"]
            core = procs.core(core_broker, db)
            await wait_ready(core)
            await asyncio.sleep(10)
            core.kill()  # SIGKILL mid-stream
            await asyncio.sleep(5)
            core = procs.core(core_broker, db)
            await wait_ready(core)
            await asyncio.sleep(8)
            await feed.stop()
        uplink = await wait_drained(site)
        core_view = status(core)
        assert site.terminate() == 0, site.tail()
        assert core.terminate() == 0, core.tail()
    accepted = spool_accepted(files.data_dir)
    stored = core_stored(db, SITE_ID, accepted)
    sites = core_view["sites"][SITE_ID]
    figures(
        "(b) site 10 s before the receiver; receiver SIGKILLed and restarted mid-stream",
        readings_published=feed.sent,
        summaries_sent_before_the_core_came=sent_before_core,
        summaries_accepted_by_site=accepted,
        summaries_stored_at_core=stored.distinct_seqs,
        accepted_missing_at_core=len(stored.missing),
        stored_twice=len(stored.stored_twice),
        site_resent=uplink["resent"],
        site_link_downs=uplink["link_downs"],
        site_ack_p50_ms=uplink["ack_p50_ms"],
        core_duplicates_dropped=sites["duplicates"],
        core_missing_reported=sites["missing"],
        core_counters=core_view["counters"],
    )
    assert sent_before_core > 0
    assert stored.missing == [], stored.missing[:20]
    assert stored.stored_twice == []
    assert stored.distinct_seqs == accepted
    assert sites["missing"] == 0


async def test_receiver_crashes_between_receiving_and_storing(
    site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    files = site_config(
        tmp_path, site_broker=site_broker, core_broker=core_broker, ack_timeout_s=30.0
    )
    db = tmp_path / "core.db"
    crashes = []
    with Processes(tmp_path) as procs:
        # the receiver's session exists before the site sends (its first run subscribes)
        core = procs.core(core_broker, db, env={CRASH_AFTER_ENV: "15"})
        await wait_ready(core)
        site = procs.site(files)
        await wait_ready(site)
        async with Feed(site_broker.port) as feed:
            # it crashes twice, each time with messages in hand; summaries queue for its
            # session while it is away
            code = await asyncio.to_thread(core.popen.wait, 60)
            crashes.append(code)
            await asyncio.sleep(3)
            core = procs.core(core_broker, db, env={CRASH_AFTER_ENV: "15"})
            await wait_ready(core)
            code = await asyncio.to_thread(core.popen.wait, 60)
            crashes.append(code)
            stored_by_crashed_runs = core_stored(db, SITE_ID, 0).rows
            await asyncio.sleep(3)
            core = procs.core(core_broker, db)  # no hook: it stays up
            await wait_ready(core)
            await asyncio.sleep(5)
            await feed.stop()
        uplink = await wait_drained(site)
        core_view = status(core)
        assert site.terminate() == 0, site.tail()
        assert core.terminate() == 0, core.tail()
    accepted = spool_accepted(files.data_dir)
    stored = core_stored(db, SITE_ID, accepted)
    sites = core_view["sites"][SITE_ID]
    figures(
        "(c) receiver SIGKILLs itself after receiving 15 messages, before storing (twice)",
        exit_codes_of_the_crashes=crashes,
        rows_stored_by_the_crashed_runs=stored_by_crashed_runs,
        summaries_accepted_by_site=accepted,
        summaries_stored_at_core=stored.distinct_seqs,
        accepted_missing_at_core=len(stored.missing),
        stored_twice=len(stored.stored_twice),
        site_resent=uplink["resent"],
        core_redelivered_messages=core_view["counters"].get("redelivered", 0),
        core_duplicates_dropped=sites["duplicates"],
        core_counters=core_view["counters"],
    )
    assert crashes == [-9, -9]
    assert stored.missing == [], stored.missing[:20]
    assert stored.stored_twice == []
    assert stored.distinct_seqs == accepted
    # with a 30 s ack timeout nothing was resent in time: the broker's redelivery did it, of
    # the messages the second run had in hand (flagged DUP)
    assert uplink["resent"] == 0
    assert core_view["counters"].get("redelivered", 0) >= 1
    assert sites["missing"] == 0


async def test_a_core_broker_that_drops_beyond_its_queue_bound_loses_nothing(
    site_broker: MosquittoProcess, tmp_path: Path
) -> None:
    """(d) The core broker bounds what it queues for the away receiver (``max_queued_bytes``,
    as containers/compose/core/mosquitto.conf does, so that a long outage cannot take its
    memory past its limit): beyond the bound it acknowledges a site's message and drops it.
    The site keeps every summary in its spool until the core acknowledges it and sends it
    again, so nothing is lost at the core's store."""
    bound = 16 * 1024
    with MosquittoProcess(
        persistence=True,
        workdir=tmp_path / "core-broker",
        extra_conf=f"max_queued_bytes {bound}\nlog_type notice\n",
    ) as core_broker:
        files = site_config(tmp_path, site_broker=site_broker, core_broker=core_broker)
        db = tmp_path / "core.db"
        with Processes(tmp_path) as procs:
            core = procs.core(core_broker, db)  # its session exists from now on
            await wait_ready(core)
            site = procs.site(files)
            await wait_ready(site)
            async with Feed(site_broker.port) as feed:
                await asyncio.sleep(2)
                core.kill()
                await asyncio.sleep(8)  # the broker queues 16 KiB for it, drops the rest
                sent_while_away = status(site)["uplink"]["sent"]
                core = procs.core(core_broker, db)
                await wait_ready(core)
                await asyncio.sleep(3)
                await feed.stop()
            uplink = await wait_drained(site)
            core_view = status(core)
            assert site.terminate() == 0, site.tail()
            assert core.terminate() == 0, core.tail()
        broker_log = (tmp_path / "core-broker" / "mosquitto.log").read_text(errors="replace")
    accepted = spool_accepted(files.data_dir)
    stored = core_stored(db, SITE_ID, accepted)
    sites = core_view["sites"][SITE_ID]
    dropped_notes = broker_log.count("being dropped")
    figures(
        f"(d) core broker with max_queued_bytes {bound}, receiver SIGKILLed for 8 s",
        readings_published=feed.sent,
        summaries_sent_by_the_end_of_the_outage=sent_while_away,
        broker_notes_of_dropped_messages=dropped_notes,
        summaries_accepted_by_site=accepted,
        summaries_stored_at_core=stored.distinct_seqs,
        accepted_missing_at_core=len(stored.missing),
        stored_twice=len(stored.stored_twice),
        site_resent=uplink["resent"],
        core_duplicates_dropped=sites["duplicates"],
    )
    assert dropped_notes > 0, broker_log[-2000:]  # the bound was reached: the broker dropped
    assert uplink["resent"] > 0
    assert stored.missing == [], stored.missing[:20]
    assert stored.stored_twice == []
    assert stored.distinct_seqs == accepted
    assert sites["missing"] == 0
