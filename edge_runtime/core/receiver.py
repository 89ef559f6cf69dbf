"""The core receiver: envelopes in from the core broker, stored durably, acknowledged to sites.

It subscribes with a persistent session and QoS 1 (``$share/<group>/...`` when receivers
share the traffic) over gmqtt with manual acknowledgements. Each round takes what the inbox
holds, decodes it (a malformed message is counted and set aside), drops duplicates by
envelope id, keeps the highest revision of each window (the others are counted superseded,
see :mod:`edge_runtime.core.store`) and writes the rest to the store of record in one
durable step: one SQLite transaction committed with ``synchronous=FULL``, or, with
``store = "nats"``, JetStream's publish acknowledgements (then this receiver's SQLite index).
Only then does it

1. release the held PUBACKs of the round's messages (:meth:`MqttLink.ack_through`), so that
   the broker delivers again whatever a core that crashed before the commit never stored;
2. acknowledge every sequence number of the round, new or duplicate, to its site on
   ``edge/{site_id}/acks`` (compact ranges, see :mod:`edge_runtime.uplink.acks`); the site
   deletes a spooled summary only on that acknowledgement.

The inbox is bounded (``inbox_messages``; the broker is told so with MQTT 5's receive
maximum): should a broker send more (mosquitto 2.0 keeps to it only for its first burst),
the rest of that connection's messages are refused, held without PUBACK; once the inbox is
stored and acknowledged, the core reconnects and the broker delivers them again (counted as
``inbox_overflow`` and ``inbox_refused``). A store that fails (disk, JetStream
away) is retried with backoff; nothing of the round is acknowledged meanwhile.

Per-site gap accounting (:class:`~edge_runtime.core.progress.SiteProgress`) counts missing,
duplicate, superseded, late and backlog summaries apart, from sequence number 1.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import sqlite3
import time
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge_runtime.backoff import Backoff
from edge_runtime.core.config import CoreConfig
from edge_runtime.core.fleet import FleetManager
from edge_runtime.core.fleet_page import PAGE_PATH, add_fleet_routes
from edge_runtime.core.fleet_view import FleetCollector, fleet_status
from edge_runtime.core.forward import NatsForwarder
from edge_runtime.core.progress import SiteProgress
from edge_runtime.core.store import Added, SummaryStore, covered_seqs
from edge_runtime.core.verify import REJECT_REASONS, UplinkVerifier
from edge_runtime.errors import DecodeError, TransportError, UplinkError
from edge_runtime.identity import SiteRegistry
from edge_runtime.mqtt.link import MqttLink
from edge_runtime.ops.auth import resolve_token
from edge_runtime.ops.http import OpsServer
from edge_runtime.ops.image import image_info
from edge_runtime.types import Envelope, RawMessage
from edge_runtime.uplink.acks import encode_ack, seq_ranges

__all__ = ["CRASH_AFTER_ENV", "CoreReceiver"]

log = logging.getLogger(__name__)

CRASH_AFTER_ENV = "EDGE_RUNTIME_TEST_CORE_CRASH_AFTER"
"""Test hook (read by ``edge-runtime core``): SIGKILL the receiver once it has received this
many messages, after decoding a round and before storing it."""

_ROUND_MESSAGES = 512  # most messages stored in one round (one commit)
_ACK_TIMEOUT_S = 10.0  # a site acknowledgement without PUBACK after this long is dropped
_RETRY_MIN_S = 0.1
_RETRY_MAX_S = 5.0


class CoreReceiver:
    """Runs until :meth:`stop`; see the module docstring.

    ``crash_after`` is the test hook of :data:`CRASH_AFTER_ENV`.
    """

    def __init__(self, config: CoreConfig, *, crash_after: int | None = None) -> None:
        self.config = config
        self.store = SummaryStore(
            config.database, synchronous="FULL" if config.store == "sqlite" else "NORMAL"
        )
        self.sites: dict[str, SiteProgress] = self.store.progress()
        self.counters: Counter[str] = Counter()
        self.link: MqttLink | None = None
        self.forwarder: NatsForwarder | None = None
        self.ops: OpsServer | None = None
        self._crash_after = crash_after
        self._inbox: collections.deque[RawMessage] = collections.deque()
        self._refuse_connection = -1  # the link connection whose messages are refused
        self._unforwarded: list[Envelope] = []
        self._acks: dict[str, list[int]] = {}  # site -> sequence numbers to acknowledge
        self._accepting = True
        self._stored_all = False  # the worker has stored the last round (stopping)
        self._wake = asyncio.Event()
        self._ack_wake = asyncio.Event()
        self._acks_idle = asyncio.Event()  # nothing to acknowledge, nothing in flight
        self._stop = asyncio.Event()
        self._started = asyncio.Event()
        self._final: dict[str, Any] | None = None  # the status as the store closed
        self.sites_registry = SiteRegistry(config.registry) if config.registry else None
        self.verifier = UplinkVerifier(config, self.sites_registry)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_CoreCollector(self))
        self.fleet: FleetManager | None = None
        if self.sites_registry is not None and config.fleet.enabled:
            self.fleet = FleetManager(config, self.sites_registry, self.sites)
            self.registry.register(FleetCollector(self.fleet))

    def stop(self) -> None:
        self._stop.set()

    async def wait_started(self) -> None:
        await self._started.wait()

    # -- receiving -----------------------------------------------------------------------------

    def _on_message(self, message: RawMessage) -> None:
        link = self.link
        assert link is not None
        if not self._accepting:
            self.counters["refused_stopping"] += 1
            return  # held without PUBACK: delivered again to the next run
        if link.attempt == self._refuse_connection:
            self.counters["inbox_refused"] += 1
            return  # held without PUBACK: the broker delivers it again after the reconnect
        if len(self._inbox) >= self.config.inbox_messages:
            # refuse the rest of this connection (their PUBACKs would otherwise go out with
            # those of later messages); once the inbox is stored, _work reconnects
            self.counters["inbox_overflow"] += 1
            self.counters["inbox_refused"] += 1
            self._refuse_connection = link.attempt
            log.warning(
                "inbox full (%d messages): the rest of this connection's messages wait with "
                "the broker until the inbox is stored",
                len(self._inbox),
            )
            return
        self._inbox.append(message)
        if message.dup:
            self.counters["redelivered"] += 1
        self._wake.set()

    @property
    def inbox_depth(self) -> int:
        return len(self._inbox)

    def status(self) -> dict[str, Any]:
        """What ``/status`` shows; after :meth:`run` has returned, the status it ended with."""
        if self._final is not None:
            return self._final
        now = time.time()
        return {
            "stored": self.store.count(),
            "store": self.config.store,
            "image": image_info(),
            "counters": dict(self.counters),
            "broker": self.link.state.value if self.link else "none",
            "inbox": len(self._inbox),
            "held": self.link.held if self.link else 0,
            "nats": self.forwarder.stats() if self.forwarder else None,
            "sites": {site: p.as_dict(now) for site, p in sorted(self.sites.items())},
            "security": {
                "registry": str(self.config.registry) if self.config.registry else None,
                "require_signed": self.config.signatures_required,
                "signed_messages": self.counters["signed_messages"],
                "rejected": {
                    reason: self.counters[f"rejected_{reason}"] for reason in REJECT_REASONS
                },
            },
            "fleet": fleet_status(self.fleet) if self.fleet is not None else None,
        }

    def ready(self) -> tuple[bool, str]:
        if self.link is None or not self.link.is_up:
            return False, "core broker not connected"
        return True, "core receiver"

    async def run(self) -> None:
        cfg = self.config
        broker = cfg.broker
        if broker.protocol == "5" and broker.receive_maximum is None:
            broker = broker.model_copy(update={"receive_maximum": cfg.inbox_messages})
        async with AsyncExitStack() as stack:
            stack.callback(self.store.close)
            stack.callback(self._keep_final_status)  # runs first: callbacks unwind in reverse
            jetstream = cfg.jetstream
            if jetstream is not None:
                self.forwarder = await stack.enter_async_context(NatsForwarder(jetstream))
            self.link = await stack.enter_async_context(
                MqttLink(
                    broker,
                    client_id=broker.client_id or "edge-core-receiver",
                    role="core-in",
                    subscriptions=cfg.subscriptions(),
                    qos=1,
                    sink=self._on_message,
                    manual_ack=True,
                )
            )
            ops = OpsServer(
                cfg.http_host,
                cfg.http_port,
                self.registry,
                ready=self.ready,
                status=self.status,
                token=resolve_token(cfg.http_token_env, cfg.http_token_file),
                public_paths=frozenset({PAGE_PATH}) if self.fleet is not None else frozenset(),
            )
            if self.fleet is not None:
                add_fleet_routes(ops.app, self.fleet)
            self.ops = await stack.enter_async_context(ops)
            fleet_stop = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                worker = tg.create_task(self._work(), name="core-store")
                acker = tg.create_task(self._send_acks(), name="core-acks")
                fleet = None
                if self.fleet is not None:
                    fleet = tg.create_task(self.fleet.run(fleet_stop), name="core-fleet")
                self._started.set()
                await self._stop.wait()
                self._accepting = False  # what comes now stays with the broker
                self._wake.set()
                await worker  # stores what the inbox holds, then returns
                self._stored_all = True
                self._ack_wake.set()
                await acker  # sends the last acknowledgements, then returns
                fleet_stop.set()
                if fleet is not None:
                    await fleet  # writes the fleet view, then closes its connection
                await self.link.close()

    def _keep_final_status(self) -> None:
        self._final = self.status()

    # -- storing -------------------------------------------------------------------------------

    async def _work(self) -> None:
        backoff = Backoff(_RETRY_MIN_S, _RETRY_MAX_S)
        inbox = self._inbox
        while True:
            if not inbox:
                if self._stop.is_set():
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [inbox.popleft() for _ in range(min(len(inbox), _ROUND_MESSAGES))]
            envelopes = self._decode(batch)  # once: a replay check must not see a retry
            while True:
                try:
                    await self._handle(batch, envelopes)
                except (UplinkError, OSError, sqlite3.Error) as exc:
                    self.counters["store_failures"] += 1
                    if self._stop.is_set():
                        log.error(
                            "stopping with %d message(s) unstored (%s); the broker delivers "
                            "them again",
                            len(batch),
                            exc,
                        )
                        return
                    delay = backoff.next_delay()
                    log.error("storing failed (%s); trying again in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
                    continue
                backoff.reset()
                break
            link = self.link
            assert link is not None
            if not inbox and link.attempt == self._refuse_connection:
                # let the sites' acknowledgements out first: a site whose ack is lost sends
                # again, which costs a duplicate
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_ACK_TIMEOUT_S):
                        await self._acks_idle.wait()
                link.reconnect("to have the messages refused by the full inbox delivered again")

    def _decode(self, batch: list[RawMessage]) -> list[Envelope]:
        """The envelopes of the messages that pass :class:`UplinkVerifier`; the others are
        counted by reason, never stored and never acknowledged (their PUBACK goes out with
        the round's, so the broker does not deliver them again)."""
        envelopes: list[Envelope] = []
        now = time.time()
        for message in batch:
            try:
                found, signer = self.verifier.envelopes(message.payload, self.sites, now)
            except DecodeError as exc:
                self.counters[f"rejected_{exc.reason}"] += 1
                log.warning("rejected a message on %s: %s", message.topic, exc)
                continue
            if signer is not None:
                self.counters["signed_messages"] += 1
            envelopes.extend(found)
        return envelopes

    async def _handle(self, batch: list[RawMessage], envelopes: list[Envelope]) -> None:
        if self._crash_after is not None:
            received = self.counters["messages"] + len(batch)
            if received >= self._crash_after:
                log.error("test hook: SIGKILL after %d messages received, before storing", received)
                os.kill(os.getpid(), signal.SIGKILL)
        now = time.time()
        fresh: list[Envelope] = []
        if envelopes:
            added = await self._store(envelopes, now)
            fresh = added.stored
            self._account(envelopes, added, now)
        self.counters["messages"] += len(batch)
        assert self.link is not None
        # durable: the broker may forget these, and the sites may delete them
        self.link.ack_through(batch[-1])
        for env in envelopes:
            self._acks.setdefault(env.site, []).append(env.seq)
        if envelopes:
            self._acks_idle.clear()
            self._ack_wake.set()
        if self.forwarder is not None and self.config.store == "sqlite" and fresh:
            await self._forward(fresh)

    async def _store(self, envelopes: list[Envelope], now: float) -> Added:
        """Make ``envelopes`` durable in the store of record; says what was new."""
        if self.config.store == "nats":
            assert self.forwarder is not None
            known = await asyncio.to_thread(self.store.known, (e.id for e in envelopes))
            first: dict[str, Envelope] = {}
            for env in envelopes:
                if env.id not in known:
                    first.setdefault(env.id, env)
            duplicates = await self.forwarder.forward(list(first.values()))
            self.counters["jetstream_duplicates"] += sum(duplicates)
        return await asyncio.to_thread(self.store.add, envelopes, now)

    def _account(self, envelopes: list[Envelope], added: Added, now: float) -> None:
        fresh = added.stored
        self.counters["envelopes"] += len(envelopes)
        self.counters["stored"] += len(fresh)
        superseded = len(added.stale) + len(added.replaced)
        self.counters["superseded"] += superseded
        self.counters["duplicates"] += len(envelopes) - len(fresh) - len(added.stale)
        fresh_ids = {e.id for e in fresh}
        stale_ids = {e.id for e in added.stale}
        for site, _seq in added.replaced:
            prog = self.sites.get(site)
            if prog is not None:
                prog.superseded += 1
                prog.received -= 1  # ``received``: what is stored; its successor counts
        for env in envelopes:
            prog = self.sites.get(env.site)
            if prog is None:
                prog = self.sites[env.site] = SiteProgress(env.site)
            prog.last_received_at = now
            prog.resent += int(env.resent)
            self.counters["resent"] += int(env.resent)
            if env.id in stale_ids:
                stale_ids.discard(env.id)
                prog.superseded += 1
                prog.late += prog.see(covered_seqs(env), now)
                continue
            if env.id not in fresh_ids:
                prog.duplicates += 1
                prog.see(covered_seqs(env), now)  # stored before: never missing
                continue
            fresh_ids.discard(env.id)  # the same id twice in one round: the second is a dup
            prog.received += 1
            prog.backlog += int(env.backlog)
            if env.replayed:  # a recording's clock says nothing about this site's lag
                prog.replayed += 1
                prog.last_replayed_created_at = max(prog.last_replayed_created_at, env.created_at)
            else:
                prog.last_created_at = max(prog.last_created_at, env.created_at)
            prog.late += prog.see(covered_seqs(env), now)

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

    # -- acknowledging to the sites ------------------------------------------------------------

    async def _send_acks(self) -> None:
        """Publish the acknowledgements of each round, per site; one that fails is dropped (the
        site sends the summaries again, and they are acknowledged as duplicates)."""
        while True:
            if not self._acks:
                if self._stored_all:
                    return
                self._ack_wake.clear()
                self._acks_idle.set()
                await self._ack_wake.wait()
                continue
            self._acks_idle.clear()
            acks, self._acks = self._acks, {}
            await asyncio.gather(*(self._ack_site(site, seqs) for site, seqs in acks.items()))

    async def _ack_site(self, site: str, seqs: list[int]) -> None:
        assert self.link is not None
        topic = self.config.ack_topic.format(site_id=site)
        payload = encode_ack(site, seq_ranges(seqs))
        if self.sites_registry is not None:
            payload = self.sites_registry.sealer.seal("ack", payload, site=site)
        try:
            await self.link.publish(topic, payload, qos=1, timeout=_ACK_TIMEOUT_S)
        except TransportError as exc:
            self.counters["acks_failed"] += 1
            log.warning("acknowledgement to site %s not sent (%s); it sends again", site, exc)
        else:
            self.counters["acks_sent"] += 1


class _CoreCollector(Collector):
    def __init__(self, receiver: CoreReceiver) -> None:
        self.receiver = receiver

    def collect(self) -> list[Metric]:
        r = self.receiver
        c = CounterMetricFamily("edge_core_events", "Core receiver events.", labels=["event"])
        for name, n in r.counters.items():
            c.add_metric([name], n)
        inbox = GaugeMetricFamily("edge_core_inbox", "Uplink messages received, not stored.")
        inbox.add_metric([], r.inbox_depth)
        site_metrics = {
            "lag": GaugeMetricFamily(
                "edge_core_site_lag_seconds", "Age of the newest live summary.", labels=["site"]
            ),
            "missing": GaugeMetricFamily(
                "edge_core_site_missing",
                "Sequence numbers from 1 to the highest seen that are not stored.",
                labels=["site"],
            ),
            "oldest": GaugeMetricFamily(
                "edge_core_site_oldest_missing_seconds",
                "How long the oldest missing sequence number has been missing.",
                labels=["site"],
            ),
            "max_seq": GaugeMetricFamily(
                "edge_core_site_max_seq", "Highest sequence number seen.", labels=["site"]
            ),
        }
        counts = {
            name: CounterMetricFamily(
                f"edge_core_site_{name}", f"Summaries {what}.", labels=["site"]
            )
            for name, what in (
                ("received", "stored"),
                ("duplicates", "received again (by envelope id) and dropped"),
                (
                    "superseded",
                    "replaced by a higher revision of their window, or older than the one stored",
                ),
                ("late", "that filled a gap"),
                ("backlog", "flagged backlog by the site"),
                ("resent", "flagged resent by the site"),
            )
        }
        now = time.time()
        for site, p in r.sites.items():
            lag = p.lag_s(now)
            if lag is not None:
                site_metrics["lag"].add_metric([site], lag)
            site_metrics["missing"].add_metric([site], p.missing)
            site_metrics["oldest"].add_metric([site], p.oldest_missing_age_s(now) or 0.0)
            site_metrics["max_seq"].add_metric([site], p.max_seq)
            for name, family in counts.items():
                family.add_metric([site], getattr(p, name))
        return [c, inbox, *site_metrics.values(), *counts.values()]
