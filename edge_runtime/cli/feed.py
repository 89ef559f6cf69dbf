"""Helpers for ``edge-runtime run``: feed real readings into a site and show what reaches the
core."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter
from datetime import date

import aiomqtt
import orjson

from edge_runtime.datasets.akl import ATTRIBUTION, iter_readings
from edge_runtime.errors import DecodeError
from edge_runtime.mqtt import BrokerConfig, MqttLink
from edge_runtime.types import Envelope, RawMessage
from edge_runtime.uplink.envelope import decode_envelopes

__all__ = ["SummaryTap", "feed_akl", "format_summary"]

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


class SummaryTap:
    """Prints each summary that reaches the core broker, one line each (``edge-runtime run
    --tap``). A second client on the core broker, with the uplink's TLS and credentials, a
    unique client id and a clean session; what it cannot decode is counted, never fatal."""

    def __init__(self, broker: BrokerConfig, site_id: str, topic: str) -> None:
        self.client_id = f"edge-{site_id}-tap-{secrets.token_hex(3)}"
        self.broker = broker.model_copy(update={"clean_start": True, "client_id": None})
        self.topic = topic
        self.printed = 0
        self.rejected: Counter[str] = Counter()

    async def run(self) -> None:
        link = MqttLink(
            self.broker,
            client_id=self.client_id,
            role="tap",
            subscriptions=[self.topic],
            qos=0,
            sink=self._on_message,
        )
        async with link:
            await asyncio.Event().wait()  # until cancelled with the site

    def _on_message(self, message: RawMessage) -> None:
        try:
            envelopes = decode_envelopes(message.payload)
        except DecodeError as exc:
            self.rejected[exc.reason] += 1
            if self.rejected[exc.reason] == 1:
                log.warning(
                    "summary tap: a message on %s is not an uplink message: %s", message.topic, exc
                )
            return
        for env in envelopes:
            print(format_summary(env), flush=True)
            self.printed += 1


def format_summary(env: Envelope) -> str:
    """One line: where the summary comes from, its window, and the statistics it carries."""
    stats = " ".join(f"{name}={_fmt(value)}" for name, value in list(env.stats.items())[:8])
    more = f" (+{len(env.stats) - 8} more)" if len(env.stats) > 8 else ""
    return (
        f"summary seq={env.seq:<5} {env.pipeline}/{env.key:<40} "
        f"[{env.window_start:.0f}, {env.window_end:.0f}) {env.kind} r{env.revision}: "
        f"{stats}{more}"
    )


def _fmt(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)
