"""The site's signed heartbeats to the core broker: what one says, and the loop that sends them.

A heartbeat (:class:`~edge_runtime.fleet.Heartbeat`, sealed with the site's key) carries the
site's revision and the fleet agent's report (:class:`AgentReport`: serials, last outcome,
drift, last reload) with its readiness, uplink backlog and rejected input. One is published
(QoS 1) on ``edge/<site>/heartbeat`` every ``heartbeat_interval_s`` and at once when
the agent has news (:meth:`Heartbeats.nudge`); one due while the link to the core broker is
down is tried again shortly, so the first one after a reconnect is not a whole interval late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Protocol

from edge_runtime.errors import TransportError
from edge_runtime.fleet import Heartbeat, Outcome, heartbeat_topic
from edge_runtime.fleet.bundle import managed_hash
from edge_runtime.fleet.config import FleetConfig
from edge_runtime.identity import Sealer

if TYPE_CHECKING:  # the runtime makes its agent (and so these) with itself
    from edge_runtime.runtime.site import SiteRuntime

__all__ = ["AgentReport", "Heartbeats"]

log = logging.getLogger(__name__)

_LINK_DOWN_RETRY_S = 0.5  # a heartbeat due while the core broker link is down waits this long
_IGNORED_REASONS = frozenset({"plugin_error", "pipeline_isolated"})  # not input set aside


class AgentReport(Protocol):
    """What the fleet agent reports in each heartbeat."""

    @property
    def running_serial(self) -> int: ...
    @property
    def last_serial(self) -> int: ...
    @property
    def last_outcome(self) -> Outcome | None: ...
    @property
    def last_reason(self) -> str: ...
    @property
    def drift(self) -> tuple[str, ...]: ...
    @property
    def last_reload(self) -> dict[str, Any]: ...


class Heartbeats:
    """Builds and sends the site's heartbeats; :meth:`run` is one of the agent's tasks.
    ``counts`` holds the results (``sent``, ``failed``)."""

    def __init__(
        self,
        runtime: SiteRuntime,
        report: AgentReport,
        site_id: str,
        fleet: FleetConfig | None,
        sealer: Sealer | None,
    ) -> None:
        self.runtime = runtime
        self.report = report
        self.site_id = site_id
        self.fleet = fleet  # the one the site started with; a reload's wins
        self.sealer = sealer
        self.counts: Counter[str] = Counter()
        self._beat = asyncio.Event()
        self._started = time.monotonic()

    def nudge(self) -> None:
        """Send one now (the agent has news), or end the loop when the runtime stops."""
        self._beat.set()

    async def run(self) -> None:
        while not self.runtime.stopping:
            self._beat.clear()
            interval = self.interval()  # a reload may change it
            if not await self.send():  # the link is down: the first once it is up
                interval = min(interval, _LINK_DOWN_RETRY_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat.wait(), interval)

    def interval(self) -> float:
        fleet = self.runtime.config.fleet or self.fleet
        assert fleet is not None
        return fleet.heartbeat_interval_s

    async def send(self) -> bool:
        """Publish one heartbeat (QoS 1); False when the link to the core broker is down."""
        link = self.runtime.uplink_link
        assert self.sealer is not None
        if link is None or not link.is_up:
            return False
        payload = self.heartbeat().seal(self.sealer)
        try:
            await link.publish(heartbeat_topic(self.site_id), payload, qos=1, timeout=10.0)
        except TransportError as exc:
            self.counts["failed"] += 1
            log.debug("heartbeat not sent: %s", exc)
            return False
        self.counts["sent"] += 1
        return True

    def heartbeat(self) -> Heartbeat:
        runtime, stats, report = self.runtime, self.runtime.stats, self.report
        fleet = runtime.config.fleet or self.fleet
        assert fleet is not None
        backlog = 0
        if runtime.uplink is not None:
            backlog = int(runtime.uplink.stats().get("pending", 0))
        rejected = sum(stats.ingest_dropped.values()) + sum(
            n for (_, reason), n in stats.decode_errors.items() if reason not in _IGNORED_REASONS
        )
        return Heartbeat(
            site=self.site_id,
            group=fleet.group,
            revision=runtime.revision,
            managed_hash=managed_hash(runtime.loaded.raw),
            running_serial=report.running_serial,
            last_serial=report.last_serial,
            last_outcome=report.last_outcome,
            last_reason=report.last_reason,
            drift=report.drift,
            ready=runtime.ready()[0],
            backlog=backlog,
            rejected=rejected,
            uptime_s=round(time.monotonic() - self._started, 3),
            interval_s=fleet.heartbeat_interval_s,
            extra={"last_reload": dict(report.last_reload)},
        )
