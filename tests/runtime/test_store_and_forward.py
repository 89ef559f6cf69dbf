"""Store and forward with real processes: the core broker goes away, the runtime is killed.

Readings are published with event time = now into 1 s windows, so summaries flow all the
time. Order is checked per stream within each priority lane: live summaries may overtake
their own stream's backlog by design (a drain must not starve live data); the core orders a
stream by ``seq``.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import aiomqtt
import orjson

from edge_runtime.broker import MosquittoProcess
from edge_runtime.runtime import SiteRuntime
from edge_runtime.runtime.wiring import spool_config
from edge_runtime.uplink import Envelope
from tests.support import Collector, load, running_site, site_toml

PIPELINE = """
[[pipelines]]
type = "windows"
name = "flow"
topics = ["city/flow/+"]
decode = { format = "json", key = "topic:2" }
window = { kind = "tumbling", size_s = 1, allowed_lateness_s = 0, idle_timeout_s = 0.5 }
"""
KEYS = [f"s{i}" for i in range(5)]


async def feed(port: int, stop: asyncio.Event, rate: float = 200.0) -> int:
    """Publish readings (QoS 1, event time now) until ``stop``; survive the broker's absence."""
    sent = 0
    async with aiomqtt.Client("127.0.0.1", port, identifier="test-feed") as client:
        while not stop.is_set():
            key = KEYS[sent % len(KEYS)]
            doc = {"value": float(sent % 100), "ts": time.time()}
            await client.publish(f"city/flow/{key}", orjson.dumps(doc), qos=1)
            sent += 1
            await asyncio.sleep(1 / rate)
    return sent


def check_order(envelopes: list[Envelope]) -> dict[str, Envelope]:
    """Dedupe by id; within a stream and lane, first arrivals are in window order."""
    unique: dict[str, Envelope] = {}
    lanes: dict[tuple[str, bool], list[float]] = defaultdict(list)
    for env in envelopes:
        if env.id in unique:
            continue
        unique[env.id] = env
        lanes[(env.stream, env.backlog)].append(env.window_start)
    for (stream, backlog), starts in lanes.items():
        assert starts == sorted(starts), f"{stream} (backlog={backlog}) out of order"
    return unique


async def test_core_outage_under_load_loses_nothing(
    site_broker: MosquittoProcess, tmp_path: Path
) -> None:
    """The core broker goes down for 4 s under load and comes back: every summary the site
    produced arrives, exactly once after dedupe. The core broker keeps a persistent session for
    the collector and is stopped with SIGTERM, so it saves what it acknowledged; a broker
    killed with SIGKILL would lose messages it had already acknowledged, which no sender can
    detect."""
    core = MosquittoProcess(persistence=True)
    core.start()
    loaded = load(
        site_toml(site_broker, core, tmp_path, PIPELINE).replace(
            "drain_timeout_s = 5", "drain_timeout_s = 20\nlive_window_s = 2"
        )
    )
    stop = asyncio.Event()
    try:
        async with (
            Collector(core, client_id="core-collector") as collector,
            running_site(loaded) as site,
        ):
            feeder = asyncio.create_task(feed(site_broker.port, stop))
            await asyncio.sleep(2.0)
            core.stop()
            await asyncio.sleep(4.0)
            uplink = site.runtime.uplink
            assert uplink is not None
            assert uplink.stats()["up"] == 0
            assert uplink.stats()["pending"] > 0  # summaries wait on disk
            core.start()
            await asyncio.sleep(2.0)
            stop.set()
            await feeder
            await site.stop()
            produced = sum(site.runtime.stats.summaries_out.values())
            assert uplink.stats()["pending"] == 0
            await collector.wait_for(lambda envs: len({e.id for e in envs}) >= produced)
    finally:
        core.close()
    unique = check_order(collector.envelopes)
    assert sorted(e.seq for e in unique.values()) == list(range(1, produced + 1))
    assert any(e.backlog for e in unique.values())
    assert len(collector.envelopes) >= len(unique)  # duplicates, if any, were dropped above


def spool_high_water(data_dir: Path) -> int:
    db = sqlite3.connect(data_dir / "spool" / "spool.db")
    try:
        (next_seq,) = db.execute("SELECT next_seq FROM state").fetchone()
    finally:
        db.close()
    return int(next_seq) - 1


async def test_sigkill_twenty_times_with_the_core_down(
    site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    cfg = tmp_path / "site.toml"
    cfg.write_text(site_toml(site_broker, core_broker, data, PIPELINE))
    core_broker.stop(kill=True)  # the core is down for the whole crash loop
    stop = asyncio.Event()
    feeder = asyncio.create_task(feed(site_broker.port, stop))
    rng = random.Random(5)
    argv = [sys.executable, "-m", "edge_runtime", "run", "-c", str(cfg), "--quiet"]
    high_water = []
    procs: list[subprocess.Popen[bytes]] = []  # killed in the finally, whatever happens
    try:
        for _ in range(20):
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(proc)
            await asyncio.sleep(rng.uniform(1.2, 2.5))
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
            if (data / "spool" / "spool.db").exists():
                high_water.append(spool_high_water(data))
        stop.set()
        await feeder
        accepted = spool_high_water(data)
        assert accepted > 0
        assert high_water == sorted(high_water)  # numbers only grow across crashes
        core_broker.start()
        async with Collector(core_broker) as collector:
            final = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            procs.append(final)
            try:
                await collector.wait_for(
                    lambda envs: {e.seq for e in envs} >= set(range(1, accepted + 1)), timeout=60
                )
            finally:
                final.send_signal(signal.SIGTERM)
                _, err = await asyncio.to_thread(final.communicate, timeout=30)
        assert final.returncode == 0, err.decode()[-2000:]
    finally:
        stop.set()
        if not feeder.done():
            await feeder
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    unique = check_order(collector.envelopes)
    assert {e.seq for e in unique.values()} >= set(range(1, accepted + 1))


def test_compaction_waits_out_the_longest_correction_horizon(
    site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    """A correction must never meet its window already compacted into a coarser one (the
    core would count that window's data twice): the site holds compaction off for as long as
    any pipeline may still correct a window."""
    correcting = PIPELINE.replace(
        "allowed_lateness_s = 0,",
        'allowed_lateness_s = 30, late_policy = "correct", correction_horizon_s = 7200,',
    )
    dropping = PIPELINE.replace('name = "flow"', 'name = "other"')
    extra = "[spool.compaction]\nmin_age_s = 600"
    for pipelines, want in ((correcting + dropping, 7230.0), (dropping, 600.0)):
        loaded = load(site_toml(site_broker, core_broker, tmp_path, pipelines, extra=extra))
        assert loaded.site.spool.compaction.min_age_s == 600.0
        assert spool_config(SiteRuntime(loaded)).compaction.min_age_s == want
