"""The summary tap of ``edge-runtime run``: off unless asked, never fatal, any pipeline's stats."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from edge_runtime.broker import MosquittoProcess
from edge_runtime.cli.feed import SummaryTap, format_summary
from edge_runtime.cli.main import build_parser
from edge_runtime.config import BrokerConfig
from edge_runtime.pipelines import Summary
from edge_runtime.uplink import Envelope, encode_envelopes


def _envelope(stats: dict[str, float | int | None], pipeline: str = "cams") -> Envelope:
    summary = Summary(pipeline, "cam1", 0.0, 60.0, stats)
    return Envelope.wrap(summary, site="s1", seq=7, created_at=1.7e9, version="t", config_hash="h")


def test_the_tap_is_off_unless_asked_for_a_site_config() -> None:
    parser = build_parser()
    assert parser.parse_args(["run", "-c", "site.toml"]).tap is None  # off for a config
    assert parser.parse_args(["run", "-c", "site.toml", "--tap"]).tap is True
    assert parser.parse_args(["run", "--no-tap"]).tap is False


def test_a_camera_summary_prints_its_own_statistics() -> None:
    line = format_summary(_envelope({"person": 3, "car": 2, "zone.crossing.in": 1}))
    assert "person=3 car=2 zone.crossing.in=1" in line
    assert "None" not in line


async def test_bad_and_retained_messages_on_the_tap_are_counted_not_fatal(
    core_broker: MosquittoProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = "edge/s1/summaries"
    async with aiomqtt.Client("127.0.0.1", core_broker.port) as client:
        await client.publish(topic, b"\x93not an uplink message", qos=1, retain=True)
    tap = SummaryTap(BrokerConfig(port=core_broker.port), "s1", topic)
    other = SummaryTap(BrokerConfig(port=core_broker.port), "s1", topic)
    assert tap.client_id != other.client_id  # two taps never kick each other off the broker
    task = asyncio.create_task(tap.run())
    try:
        async with asyncio.timeout(10):
            while not tap.rejected:
                await asyncio.sleep(0.05)
        async with aiomqtt.Client("127.0.0.1", core_broker.port) as client:
            await client.publish(topic, b"{not json", qos=1)
            await client.publish(topic, encode_envelopes([_envelope({"count": 4})], "json"), qos=1)
        async with asyncio.timeout(10):
            while tap.printed < 1:
                await asyncio.sleep(0.05)
        assert not task.done()
        assert sum(tap.rejected.values()) == 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert "count=4" in capsys.readouterr().out
