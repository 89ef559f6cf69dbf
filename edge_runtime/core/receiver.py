"""The core receiver: envelopes in from the core broker, duplicates dropped, summaries kept.

It subscribes with a persistent session and QoS 1, decodes each uplink message (a list of
envelopes), stores the new ones in SQLite (the envelope id is the primary key, so a summary
sent twice is stored once), optionally forwards them to NATS JetStream (the envelope id is the
JetStream message id, so JetStream drops duplicates too), and tracks per-site sequence gaps and
lag. Malformed messages are counted and set aside.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge_runtime.core.config import CoreConfig
from edge_runtime.core.forward import NatsForwarder
from edge_runtime.core.store import SiteProgress, SummaryStore
from edge_runtime.errors import DecodeError, UplinkError
from edge_runtime.mqtt.link import MqttLink
from edge_runtime.ops.http import OpsServer
from edge_runtime.types import Envelope, RawMessage
from edge_runtime.uplink.envelope import decode_envelopes

__all__ = ["CoreReceiver"]

log = logging.getLogger(__name__)


class CoreReceiver:
    """Runs until :meth:`stop`; see the module docstring."""

    def __init__(self, config: CoreConfig) -> None:
        self.config = config
        self.store = SummaryStore(config.database)
        self.sites: dict[str, SiteProgress] = self.store.progress()
        self.counters: Counter[str] = Counter()
        self.link: MqttLink | None = None
        self.forwarder: NatsForwarder | None = None
        self.ops: OpsServer | None = None
        self._inbox: list[RawMessage] = []
        self._unforwarded: list[Envelope] = []
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._started = asyncio.Event()
        self._final: dict[str, Any] | None = None  # the status as the store closed
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_CoreCollector(self))

    def stop(self) -> None:
        self._stop.set()

    async def wait_started(self) -> None:
        await self._started.wait()

    def _on_message(self, message: RawMessage) -> None:
        self._inbox.append(message)
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """What ``/status`` shows; after :meth:`run` has returned, the status it ended with."""
        if self._final is not None:
            return self._final
        now = time.time()
        return {
            "stored": self.store.count(),
            "counters": dict(self.counters),
            "broker": self.link.state.value if self.link else "none",
            "nats": self.forwarder.stats() if self.forwarder else None,
            "sites": {site: p.as_dict(now) for site, p in sorted(self.sites.items())},
        }

    async def run(self) -> None:
        cfg = self.config
        async with AsyncExitStack() as stack:
            stack.callback(self.store.close)
            stack.callback(self._keep_final_status)  # runs first: callbacks unwind in reverse
            if cfg.nats is not None:
                self.forwarder = await stack.enter_async_context(NatsForwarder(cfg.nats))
            self.link = await stack.enter_async_context(
                MqttLink(
                    cfg.broker,
                    client_id=cfg.broker.client_id or "edge-core-receiver",
                    role="core-in",
                    subscriptions=cfg.topics,
                    qos=1,
                    sink=self._on_message,
                )
            )
            self.ops = await stack.enter_async_context(
                OpsServer(
                    cfg.http_host,
                    cfg.http_port,
                    self.registry,
                    ready=lambda: (self.link is not None and self.link.is_up, "core receiver"),
                    status=self.status,
                )
            )
            async with asyncio.TaskGroup() as tg:
                worker = tg.create_task(self._work(), name="core-store")
                self._started.set()
                await self._stop.wait()
                await self.link.close()
                self._wake.set()
                await worker

    def _keep_final_status(self) -> None:
        self._final = self.status()

    async def _work(self) -> None:
        while True:
            if not self._inbox:
                if self._stop.is_set():
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, self._inbox = self._inbox, []
            await self._handle(batch)

    async def _handle(self, batch: list[RawMessage]) -> None:
        envelopes: list[Envelope] = []
        for message in batch:
            try:
                envelopes.extend(decode_envelopes(message.payload))
            except DecodeError as exc:
                self.counters[f"rejected_{exc.reason}"] += 1
                log.warning("rejected a message on %s: %s", message.topic, exc)
        self.counters["messages"] += len(batch)
        if not envelopes:
            return
        now = time.time()
        fresh = await asyncio.to_thread(self.store.add, envelopes, now)
        self.counters["envelopes"] += len(envelopes)
        self.counters["stored"] += len(fresh)
        self.counters["duplicates"] += len(envelopes) - len(fresh)
        fresh_ids = {e.id for e in fresh}
        for env in envelopes:
            prog = self.sites.get(env.site)
            if prog is None:
                prog = self.sites[env.site] = SiteProgress(env.site)
            prog.last_received_at = now
            if env.id not in fresh_ids:
                prog.duplicates += 1
                continue
            prog.received += 1
            prog.backlog += int(env.backlog)
            if env.replayed:  # a recording's clock says nothing about this site's lag
                prog.replayed += 1
                prog.last_replayed_created_at = max(prog.last_replayed_created_at, env.created_at)
            else:
                prog.last_created_at = max(prog.last_created_at, env.created_at)
            prog.see(_covered_seqs(env))
        if self.forwarder is not None and fresh:
            await self._forward(fresh)

    async def _forward(self, fresh: list[Envelope]) -> None:
        """Forward to JetStream; on failure keep them (bounded) and retry with the next batch.
        They are in SQLite already, so a lost forward is recoverable from the store."""
        assert self.forwarder is not None
        self._unforwarded.extend(fresh)
        overflow = len(self._unforwarded) - 100_000
        if overflow > 0:
            del self._unforwarded[:overflow]
            self.counters["nats_dropped"] += overflow
        try:
            await self.forwarder.forward(self._unforwarded)
        except UplinkError as exc:
            self.counters["nats_failures"] += 1
            log.warning("JetStream forward failed, will retry: %s", exc)
        else:
            self._unforwarded = []


def _covered_seqs(env: Envelope) -> list[int]:
    """The sequence numbers an envelope stands for: its own, plus those a compaction merged."""
    merged = env.attrs.get("merged_seqs")
    if isinstance(merged, list) and merged:
        return [int(s) for s in merged]
    return [env.seq]


class _CoreCollector(Collector):
    def __init__(self, receiver: CoreReceiver) -> None:
        self.receiver = receiver

    def collect(self) -> list[Metric]:
        r = self.receiver
        c = CounterMetricFamily("edge_core_events", "Core receiver events.", labels=["event"])
        for name, n in r.counters.items():
            c.add_metric([name], n)
        lag = GaugeMetricFamily(
            "edge_core_site_lag_seconds", "Age of newest summary.", labels=["site"]
        )
        gaps = GaugeMetricFamily(
            "edge_core_site_missing", "Sequence numbers not seen.", labels=["site"]
        )
        now = time.time()
        for site, p in r.sites.items():
            if p.last_created_at:
                lag.add_metric([site], now - p.last_created_at)
            gaps.add_metric([site], p.missing)
        return [c, lag, gaps]
