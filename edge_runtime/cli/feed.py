"""Helpers for the main job: feed real readings into a site and show what reaches the core."""

from __future__ import annotations

import asyncio
import logging
from datetime import date

import aiomqtt
import orjson

from edge_runtime.datasets.akl import ATTRIBUTION, iter_readings
from edge_runtime.uplink.envelope import decode_envelopes

__all__ = ["feed_akl", "tap_summaries"]

log = logging.getLogger(__name__)


async def feed_akl(host: str, port: int, start: date, end: date, rate: float) -> int:
    """Publish the Auckland hourly counts from ``start`` to ``end`` at ``rate`` readings/s."""
    log.info("feeding real readings: %s", ATTRIBUTION)
    sent = 0
    async with aiomqtt.Client(host, port, identifier="edge-runtime-feed") as client:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for reading in iter_readings(start, end):
            payload = orjson.dumps({"value": reading.value, "ts": reading.ts})
            await client.publish(f"akl/ped/{reading.sensor}/count", payload, qos=1)
            sent += 1
            ahead = sent / rate - (loop.time() - t0)
            if ahead > 0:
                await asyncio.sleep(ahead)
    log.info("feed done: %d readings published", sent)
    return sent


async def tap_summaries(host: str, port: int, topic: str) -> None:
    """Print each summary arriving on the core broker, one line each."""
    try:
        await _tap(host, port, topic)
    except aiomqtt.MqttError as exc:
        # The main job's embedded broker goes away when the site stops: that ends the tap.
        log.debug("summary tap closed: %s", exc)


async def _tap(host: str, port: int, topic: str) -> None:
    async with aiomqtt.Client(host, port, identifier="edge-runtime-tap") as client:
        await client.subscribe(topic, qos=1)
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            for env in decode_envelopes(message.payload):
                s = env.stats
                print(
                    f"summary seq={env.seq:<5} {env.pipeline}/{env.key:<40} "
                    f"[{env.window_start:.0f}, {env.window_end:.0f}) count={s.get('count')} "
                    f"missing={s.get('missing')} mean={_fmt(s.get('mean'))} "
                    f"p95={_fmt(s.get('p95'))} {env.kind} r{env.revision}",
                    flush=True,
                )


def _fmt(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)
