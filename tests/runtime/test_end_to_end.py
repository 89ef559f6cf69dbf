"""End to end against real brokers: readings in over MQTT, summaries out on the core broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import msgpack
import numpy as np
import orjson
import pytest

from edge_runtime.broker import MosquittoProcess
from tests.support import Collector, load, running_site, site_toml

WINDOW = 10.0
T0 = 1_700_000_000.0  # a window boundary (multiple of 10 s)

PIPELINE = f"""
[[pipelines]]
type = "windows"
name = "air"
topics = ["city/air/+/pm25"]
decode = {{ format = "json", key = "topic:2", value = "field:value", time = "field:ts" }}
window = {{ kind = "tumbling", size_s = {WINDOW}, allowed_lateness_s = 0 }}
"""


def expected_stats(values: np.ndarray) -> dict[str, float]:
    v = values[~np.isnan(values)]
    return {
        "count": float(v.size),
        "missing": float(np.isnan(values).sum()),
        "sum": float(v.sum()),
        "min": float(v.min()),
        "max": float(v.max()),
        "mean": float(v.mean()),
        "stddev": float(v.std()),
        "p50": float(np.percentile(v, 50)),
        "p95": float(np.percentile(v, 95)),
        "p99": float(np.percentile(v, 99)),
    }


def make_readings(
    rng: np.random.Generator, n: int, keys: list[str]
) -> list[tuple[str, float, float]]:
    times = T0 + np.sort(rng.uniform(0, 6 * WINDOW, n))
    values = rng.gamma(2.0, 8.0, n).round(2)
    values[rng.random(n) < 0.05] = np.nan  # real feeds have gaps
    return [
        (keys[i % len(keys)], float(t), float(v))
        for i, (t, v) in enumerate(zip(times, values, strict=True))
    ]


async def publish(port: int, readings: list[tuple[str, float, float]]) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        for key, ts, value in readings:
            doc = {"value": None if np.isnan(value) else value, "ts": ts}
            await client.publish(f"city/air/{key}/pm25", orjson.dumps(doc), qos=1)


def check_against_numpy(readings: list[tuple[str, float, float]], envelopes: list) -> int:
    by_window: dict[tuple[str, float], list[float]] = {}
    for key, ts, value in readings:
        start = np.floor(ts / WINDOW) * WINDOW
        by_window.setdefault((key, start), []).append(value)
    got = {(e.key, e.window_start): e for e in envelopes if e.kind == "summary"}
    assert set(got) == set(by_window)
    for ident, values in by_window.items():
        env = got[ident]
        assert env.window_end == ident[1] + WINDOW
        want = expected_stats(np.array(values))
        for name, value in want.items():
            assert env.stats[name] == pytest.approx(value, rel=1e-12, abs=1e-9), (ident, name)
    return len(by_window)


async def test_readings_become_exact_summaries_on_the_core(
    site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    rng = np.random.default_rng(7)
    readings = make_readings(rng, 600, ["s1", "s2", "s3"])
    loaded = load(site_toml(site_broker, core_broker, tmp_path, PIPELINE))
    async with Collector(core_broker) as collector, running_site(loaded) as site:
        await publish(site_broker.port, readings)
        await _wait_ingested(site.runtime, len(readings))
        await site.stop()
        n_windows = len({(k, np.floor(t / WINDOW)) for k, t, _ in readings})
        await collector.wait_for(lambda envs: len(envs) >= n_windows)
    assert check_against_numpy(readings, collector.envelopes) == n_windows
    env = collector.envelopes[0]
    assert env.site == "test-site"
    assert env.pipeline == "air"
    assert env.config_hash == loaded.config_hash
    assert env.version
    seqs = [e.seq for e in collector.envelopes]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    assert len({e.id for e in collector.envelopes}) == len(collector.envelopes)


async def test_site_broker_restart_mid_stream(
    site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    rng = np.random.default_rng(11)
    readings = make_readings(rng, 400, ["a", "b"])
    first, second = readings[:200], readings[200:]
    loaded = load(site_toml(site_broker, core_broker, tmp_path, PIPELINE))
    async with Collector(core_broker) as collector, running_site(loaded) as site:
        link = site.runtime.site_link
        assert link is not None
        await publish(site_broker.port, first)
        await _wait_ingested(site.runtime, len(first))
        connects = link.connects
        site_broker.stop()
        await asyncio.sleep(0.5)
        assert not link.is_up
        site_broker.start()
        async with asyncio.timeout(15):
            while link.connects == connects or not link.is_up:
                await asyncio.sleep(0.05)
        await publish(site_broker.port, second)
        await _wait_ingested(site.runtime, len(readings))
        await site.stop()
        n_windows = len({(k, np.floor(t / WINDOW)) for k, t, _ in readings})
        await collector.wait_for(lambda envs: len(envs) >= n_windows)
    assert check_against_numpy(readings, collector.envelopes) == n_windows


async def _wait_ingested(runtime, n: int, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while runtime.stats.messages_in < n:
            await asyncio.sleep(0.02)


BAD_PIPELINES = """
[[pipelines]]
type = "windows"
name = "json"
topics = ["in/json/+"]
decode = { format = "json", key = "topic:2", allowed_fields = ["value", "ts"] }
window = { kind = "tumbling", size_s = 60 }

[[pipelines]]
type = "windows"
name = "mp"
topics = ["in/mp/+"]
decode = { format = "msgpack", key = "topic:2" }
window = { kind = "tumbling", size_s = 60 }

[[pipelines]]
type = "windows"
name = "senml"
topics = ["in/senml/+"]
decode = { format = "senml", key = "senml" }
window = { kind = "tumbling", size_s = 60 }
"""


async def test_bad_input_is_counted_and_good_input_survives(
    site_broker: MosquittoProcess, core_broker: MosquittoProcess, tmp_path: Path
) -> None:
    t = T0 + 5
    good_json = [orjson.dumps({"value": v, "ts": t}) for v in (1.0, 2.0, 3.0)]
    good_mp = [msgpack.packb({"value": v, "ts": t}) for v in (10.0, 20.0)]
    good_senml = orjson.dumps(
        [{"bn": "dev7/", "bt": t, "n": "temp", "v": 20.5}, {"n": "temp", "v": 21.5, "t": 1}]
    )
    sends: list[tuple[str, bytes]] = [
        ("in/json/k", good_json[0]),
        ("in/json/k", b'{"value": 1, "ts": '),  # malformed_json
        ("in/json/k", b"[1, 2, 3]"),  # not_an_object
        ("in/json/k", orjson.dumps({"value": "high", "ts": t})),  # wrong_type
        ("in/json/k", orjson.dumps({"ts": t})),  # missing_field
        ("in/json/k", orjson.dumps({"value": 1, "ts": t, "extra": 1})),  # unknown_field
        ("in/json/k", good_json[1]),
        ("in/json/k", b"x" * 300_000),  # oversized
        ("in/mp/k", good_mp[0]),
        ("in/mp/k", b"\xc1\x00\x01"),  # malformed_msgpack
        ("in/mp/k", good_mp[1]),
        ("in/senml/x", good_senml),
        ("in/senml/x", b'{"bn": "x"}'),  # malformed_senml (not an array)
        ("in/senml/x", orjson.dumps([{"n": "a", "v": 1, "bad_": 2}])),  # unknown_field
        ("in/senml/x", orjson.dumps([{"n": 5, "v": 1}])),  # wrong_type
        ("in/other/x", good_json[0]),  # unexpected_topic
        ("in/json/k", good_json[2]),
    ]
    loaded = load(
        site_toml(
            site_broker,
            core_broker,
            tmp_path,
            BAD_PIPELINES,
            ingest='extra_subscriptions = ["in/#"]',
        )
    )
    async with Collector(core_broker) as collector, running_site(loaded) as site:
        async with aiomqtt.Client("127.0.0.1", site_broker.port) as client:
            for topic, payload in sends:
                await client.publish(topic, payload, qos=1)
        await _wait_ingested(site.runtime, len(sends))
        stats = site.runtime.stats
        await site.stop()
        await collector.wait_for(lambda envs: len(envs) >= 3)
    errors = {f"{p}:{r}": n for (p, r), n in stats.decode_errors.items()}
    assert errors == {
        "json:malformed_json": 1,
        "json:not_an_object": 1,
        "json:wrong_type": 1,
        "json:missing_field": 1,
        "json:unknown_field": 1,
        "mp:malformed_msgpack": 1,
        "senml:malformed_senml": 1,
        "senml:unknown_field": 1,
        "senml:wrong_type": 1,
    }
    assert stats.ingest_dropped["oversized"] == 1
    assert stats.ingest_dropped["unexpected_topic"] == 1
    by_pipeline = {e.pipeline: e for e in collector.envelopes}
    assert by_pipeline["json"].stats["count"] == 3
    assert by_pipeline["json"].stats["sum"] == 6.0
    assert by_pipeline["mp"].stats["count"] == 2
    assert by_pipeline["mp"].stats["mean"] == 15.0
    assert by_pipeline["senml"].key == "dev7/temp"
    assert by_pipeline["senml"].stats["count"] == 2
    assert by_pipeline["senml"].stats["mean"] == 21.0
