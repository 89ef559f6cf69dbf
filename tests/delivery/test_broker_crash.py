"""(a) The core broker is SIGKILLed twice for 20 s under load.

The core broker is a mosquitto with persistence on and its default autosave (every 30
minutes, and at a clean shutdown): killed, it comes back from a persistence file that holds
none of this run, so it has forgotten the core receiver's persistent session, the messages
queued for it and the site's session. Summaries the site sent in between went to a topic
nobody subscribed to, and the broker acknowledged them. With the core's acknowledgements the
site keeps each of them until the core has stored it, and sends again what the core never
acknowledged: nothing the site accepted is missing at the core.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edge_runtime.broker import MosquittoProcess
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


async def test_core_broker_sigkilled_twice_under_load(
    site_broker: MosquittoProcess, tmp_path: Path
) -> None:
    core_broker = MosquittoProcess(persistence=True, workdir=tmp_path / "core-broker")
    core_broker.start()
    files = site_config(tmp_path, site_broker=site_broker, core_broker=core_broker)
    db = tmp_path / "core.db"
    try:
        with Processes(tmp_path) as procs:
            core = procs.core(core_broker, db)
            await wait_ready(core)
            site = procs.site(files)
            await wait_ready(site)
            async with Feed(site_broker.port) as feed:
                await asyncio.sleep(6)
                for _ in range(2):
                    core_broker.stop(kill=True)  # SIGKILL: nothing of this run is saved
                    await asyncio.sleep(20)
                    core_broker.start()  # the same persistence file
                    await asyncio.sleep(6)
                await feed.stop()
            uplink = await wait_drained(site)
            site_view = status(site)
            core_view = status(core)
            assert site.terminate() == 0, site.tail()
            assert core.terminate() == 0, core.tail()
        accepted = spool_accepted(files.data_dir)
        stored = core_stored(db, SITE_ID, accepted)
        sites = core_view["sites"][SITE_ID]
        figures(
            "(a) core broker SIGKILLed twice for 20 s under load",
            readings_published=feed.sent,
            summaries_accepted_by_site=accepted,
            summaries_stored_at_core=stored.distinct_seqs,
            accepted_missing_at_core=len(stored.missing),
            stored_twice=len(stored.stored_twice),
            site_link_downs=uplink["link_downs"],
            site_resent=uplink["resent"],
            site_core_acked=uplink["core_acked"],
            site_ack_p50_ms=uplink["ack_p50_ms"],
            site_ack_p99_ms=uplink["ack_p99_ms"],
            core_duplicates_dropped=sites["duplicates"],
            core_resent_received=sites["resent_received"],
            core_missing_reported=sites["missing"],
            core_counters=core_view["counters"],
        )
        assert accepted > 1000
        assert stored.missing == [], stored.missing[:20]
        assert stored.stored_twice == []
        assert stored.distinct_seqs == accepted
        assert site_view["uplink"]["link_downs"] >= 2  # both kills counted
        assert sites["missing"] == 0
    finally:
        core_broker.close()
