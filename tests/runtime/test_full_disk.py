"""A site whose data disk fills, as real processes: the site runtime (``edge-runtime run``), a
site broker and a core broker (mosquitto), the data dir on a small tmpfs that really fills.

The core broker is down from the start (the outage) and keeps a persistent session for the
collector, so every summary the site sends once it is back reaches the collector. Readings
flow until the disk is full; then the core comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from edge_runtime.broker import MosquittoProcess, free_port
from tests.runtime.site_process import SiteProcess, feed
from tests.support import Collector, fill_disk, free_bytes, site_toml, small_disk

KEYS = 400  # one reading per key every 0.25 s, 1 s windows: about 400 summaries a second
DISK_KIB = 2048
RESERVE = 256 * 1024
PIPELINE = """
[[pipelines]]
type = "windows"
name = "flow"
topics = ["city/flow/+"]
decode = { format = "json", key = "topic:2" }
window = { kind = "tumbling", size_s = 1, allowed_lateness_s = 0, idle_timeout_s = 0.5 }
"""
TOPICS = [f"city/flow/k{i}" for i in range(KEYS)]


def _config(tmp_path: Path, site: MosquittoProcess, core: MosquittoProcess, data: Path) -> Path:
    port = free_port()
    text = site_toml(
        site,
        core,
        data,
        PIPELINE,
        extra=f"[spool]\nreserve_bytes = {RESERVE}\nmaintenance_interval_s = 0.2\n",
    ).replace("http_port = 0", f"http_port = {port}")
    cfg = tmp_path / "site.toml"
    cfg.write_text(text)
    return cfg


def _port(cfg: Path) -> int:
    found = re.search(r"http_port = (\d+)", cfg.read_text())
    assert found
    return int(found.group(1))


def accepted_in(data: Path) -> int:
    """Summaries the spool accepted in all: its sequence numbers are 1..this."""
    db = sqlite3.connect(f"file:{data / 'spool' / 'spool.db'}?mode=ro", uri=True)
    try:
        (next_seq,) = db.execute("SELECT next_seq FROM state").fetchone()
    finally:
        db.close()
    return int(next_seq) - 1


@contextlib.asynccontextmanager
async def outage(tmp_path: Path) -> AsyncIterator[tuple[MosquittoProcess, Collector]]:
    """A core broker with a persistent session for a collector, stopped: the outage."""
    core = MosquittoProcess(persistence=True, workdir=tmp_path / "core-broker")
    core.start()
    try:
        async with Collector(core, client_id="core-collector") as collector:
            core.stop()
            yield core, collector
    finally:
        core.close()


async def fill_until_refused(site: SiteProcess) -> dict[str, Any]:
    """Wait until the site refuses summaries for a full disk; its /status then."""

    async def refused() -> tuple[bool, dict[str, Any]]:
        status = await site.status()
        return bool(status["uplink"]["refused"].get("disk_full")), status

    status: dict[str, Any] = await site.until("a disk_full refusal", refused)
    return status


async def not_ready_for_the_disk(site: SiteProcess) -> str:
    code, body = await site.get("/readyz")
    assert code == 503, body
    assert (await site.get("/healthz"))[0] == 200
    return body.decode()


async def test_a_full_disk_refuses_counts_drains_and_recovers(
    site_broker: MosquittoProcess, tmp_path: Path
) -> None:
    async with outage(tmp_path) as (core, collector):
        with small_disk(tmp_path / "data", DISK_KIB) as data:
            cfg = _config(tmp_path, site_broker, core, data)
            site = SiteProcess(cfg, _port(cfg), tmp_path / "site.log")
            site.start()
            stop = asyncio.Event()
            try:
                await site.wait_serving()
                feeder = asyncio.create_task(feed(site_broker.port, TOPICS, stop))
                at_full = await fill_until_refused(site)
                await asyncio.sleep(2.0)  # readings keep coming: more refusals, site still up
                why = await not_ready_for_the_disk(site)
                full = await site.status()
                code, metrics = await site.get("/metrics")
                refused_metric = re.search(
                    rb'edge_summaries_refused_total\{pipeline="flow",reason="disk_full"\} (\d+)',
                    metrics,
                )
                in_flight = int(at_full["uplink"]["leased"])

                core.start()  # the outage ends
                await site.until("/readyz 200 after the drain", site.ready)
                after = await site.status()
                await asyncio.sleep(1.0)  # summaries are accepted again
                stop.set()
                published = await feeder

                async def drained() -> tuple[bool, dict[str, Any]]:
                    uplink = (await site.status())["uplink"]
                    return uplink["pending"] == 0, uplink

                await site.until("an empty spool", drained)
                last = await site.status()
                rc = await site.stop()
            finally:
                stop.set()
                site.kill()
            accepted = accepted_in(data)
            await collector.wait_for(
                lambda envs: {e.seq for e in envs} >= set(range(1, accepted + 1)), timeout=60
            )
            await asyncio.sleep(0.5)  # anything sent twice arrives by now
    sends = len(collector.envelopes)
    unique = {e.id for e in collector.envelopes}
    refused = full["summaries_refused"]["flow:disk_full"]
    print(
        f"\nfull disk: {published} readings published; at the first refusal "
        f"{at_full['uplink']['appended']} summaries accepted, {in_flight} in flight; "
        f"/readyz then: {why.strip()!r}\n"
        f"refused {refused} summaries (metric {refused_metric and refused_metric.group(1)}); "
        f"disk full {full['uplink']['disk_full_events']} time(s), acks deferred "
        f"{last['uplink']['acks_deferred']}; ready again with {after['uplink']['pending']} "
        f"pending\n"
        f"accepted {accepted}, sends at the core {sends} (<= accepted + in flight = "
        f"{accepted + in_flight}), unique envelopes {len(unique)}, site sent "
        f"{last['uplink']['sent']}, exit code {rc}"
    )
    assert rc == 0, site.tail()
    assert code == 200 and refused_metric is not None and int(refused_metric.group(1)) > 0
    assert "disk full" in why
    assert refused > 0 and full["uplink"]["refused"]["disk_full"] >= refused
    assert last["uplink"]["pending"] == 0  # acknowledged records were deleted
    assert last["uplink"]["disk_full"] == 0
    assert after["uplink"]["appended"] < last["uplink"]["appended"]  # taken again
    assert sends <= accepted + in_flight  # no resend loop
    assert {e.seq for e in collector.envelopes} == set(range(1, accepted + 1))
    assert len(unique) == accepted


async def test_a_site_restarted_on_a_full_disk_starts_drains_and_recovers(
    site_broker: MosquittoProcess, tmp_path: Path
) -> None:
    async with outage(tmp_path) as (core, collector):
        with small_disk(tmp_path / "data", DISK_KIB) as data:
            cfg = _config(tmp_path, site_broker, core, data)
            site = SiteProcess(cfg, _port(cfg), tmp_path / "site.log")
            stop = asyncio.Event()
            try:
                site.start()
                await site.wait_serving()
                feeder = asyncio.create_task(feed(site_broker.port, TOPICS, stop))
                await fill_until_refused(site)
                first_rc = await site.stop()
                stop.set()
                await feeder
                first = accepted_in(data)
                filler = fill_disk(data / "filler")  # and whatever was left, someone else took
                left = free_bytes(data)

                site.start()  # the disk is still full
                await site.wait_serving()
                why = await not_ready_for_the_disk(site)
                reopened = await site.status()
                core.start()

                async def recovered() -> tuple[bool, Any]:
                    ready, why = await site.ready()
                    pending = (await site.status())["uplink"]["pending"]
                    return ready and pending == 0, (why, pending)

                await site.until("the drain and /readyz 200", recovered)
                stop.clear()
                feeder = asyncio.create_task(feed(site_broker.port, TOPICS, stop))

                async def taking() -> tuple[bool, int]:
                    appended = (await site.status())["uplink"]["appended"]
                    return appended > 0, appended

                await site.until("new summaries accepted", taking)
                stop.set()
                await feeder
                rc = await site.stop()
            finally:
                stop.set()
                site.kill()
            accepted = accepted_in(data)
            await collector.wait_for(
                lambda envs: {e.seq for e in envs} >= set(range(1, accepted + 1)), timeout=60
            )
    print(
        f"\nrestart on a full disk: first run accepted {first} and exited {first_rc}; filler "
        f"{filler} bytes, {left} bytes free at the restart; restarted with "
        f"{reopened['uplink']['pending']} pending, disk_full={reopened['uplink']['disk_full']}, "
        f"/readyz {why.strip()!r}; accepted {accepted} in all, "
        f"{len({e.id for e in collector.envelopes})} unique at the core, exit code {rc}"
    )
    assert first_rc == 0 and rc == 0, site.tail()
    assert left == 0
    assert reopened["uplink"]["disk_full"] == 1 and reopened["uplink"]["pending"] == first
    assert "disk full" in why
    assert accepted > first
    assert {e.seq for e in collector.envelopes} == set(range(1, accepted + 1))
