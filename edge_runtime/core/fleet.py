"""The core's fleet manager: signed heartbeats in, bundles rolled out in waves, drift out.

It runs beside the receiver when the core has a site registry (``[fleet]`` in the core
config), on a connection of its own to the core broker (client id ``fleet.client_id``,
QoS 1), subscribed to

* ``edge/+/heartbeat``: each heartbeat is verified with its site's key from the registry
  (refused ones are counted by reason as ``heartbeat_rejected_<reason>``, never read); the
  newest per site (by signing time) is kept;
* ``edge/fleet/group/+/bundle``: an operator's bundle, verified with the registry's
  ``operator.pub`` (refused ones counted as ``bundle_rejected_<reason>``). A bundle with a
  serial above the group's starts a rollout (:mod:`edge_runtime.core.rollout`), which
  supersedes the one before; the same serial again (the retained copy after a reconnect) is
  ignored, an older one counted as ``bundle_old``;
* ``edge/fleet/group/+/rollback``: the operator's signed rollback request, which marks the
  bundle of that serial as a rollback (its remaining waves follow ``fleet.rollback_waves``).

A rollout publishes the operator's signed bytes, unchanged, retained at QoS 1, to each chosen
site's ``edge/fleet/site/<site>/desired``; a publish that fails is tried again each tick.
Drift (:mod:`edge_runtime.core.drift`) is computed when asked (``/status``, ``/metrics``,
``/fleet.json``). The view survives a restart in the core database
(:mod:`edge_runtime.core.fleet_store`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge_runtime.core.config import CoreConfig
from edge_runtime.core.drift import STATES, Cause, SiteDrift, Target, site_drift
from edge_runtime.core.fleet_store import FleetChanges, FleetStore
from edge_runtime.core.progress import SiteProgress
from edge_runtime.core.rollout import Rollout
from edge_runtime.errors import ConfigError, DecodeError, TransportError
from edge_runtime.fleet.bundle import Bundle, RollbackRequest, open_bundle, open_fleet_message
from edge_runtime.fleet.heartbeat import Heartbeat, open_heartbeat
from edge_runtime.fleet.topics import GROUP_BUNDLES, GROUP_ROLLBACKS, HEARTBEATS, desired_topic
from edge_runtime.identity import SiteRegistry, load_public_key
from edge_runtime.mqtt.link import MqttLink
from edge_runtime.types import RawMessage

__all__ = ["FleetCollector", "FleetManager"]

log = logging.getLogger(__name__)

_TICK_S = 0.5  # how often rollouts are stepped (wave deadlines) and failed publishes retried
_SAVE_S = 1.0  # how often the fleet view is written to the database
_PUBLISH_TIMEOUT_S = 10.0
_STALE_INTERVALS = 3.0


@dataclass
class _Desired:
    bundle: Bundle
    target: Target
    payload: bytes


@dataclass
class _Group:
    current: _Desired
    rollout: Rollout


class FleetManager:
    """See the module docstring. :meth:`run` until the ``stop`` event; :meth:`view` and
    :meth:`status` at any time."""

    def __init__(
        self,
        config: CoreConfig,
        registry: SiteRegistry,
        progress: Mapping[str, SiteProgress],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.fleet = config.fleet
        self.registry = registry
        self.operator = load_public_key(registry.directory / "operator.pub")
        self.progress = progress
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self.beats: dict[str, Heartbeat] = {}
        self.beat_at: dict[str, float] = {}  # site -> when the core received its newest beat
        self.desired: dict[str, _Desired] = {}
        self.groups: dict[str, _Group] = {}
        self.link: MqttLink | None = None
        self._rollback_serials: dict[str, int] = {}  # group -> serial a request marked
        self._unsent: dict[str, bytes] = {}  # site -> desired payload still to publish
        self._changes = FleetChanges()
        self._wake = asyncio.Event()
        self.store = FleetStore(config.database)
        self._load()

    # -- persistence ---------------------------------------------------------------------------

    def _load(self) -> None:
        saved = self.store.load()
        now = self.clock()
        for site, (payload, at) in saved.heartbeats.items():
            with contextlib.suppress(DecodeError):  # a key rotated since: wait for a new one
                self.beats[site] = open_heartbeat(payload, self.registry.public_key)
                self.beat_at[site] = at
        for site, (_, payload) in saved.desired.items():
            with contextlib.suppress(DecodeError):
                self.desired[site] = self._open_desired(payload)
        for group, (_, payload, doc) in saved.groups.items():
            with contextlib.suppress(DecodeError):
                current = self._open_desired(payload)
                if doc is not None:
                    self.groups[group] = _Group(current, Rollout.from_doc(doc, now))
        if self.beats or self.groups:
            log.info(
                "fleet view restored: %d site(s) heard, %d group rollout(s)",
                len(self.beats),
                len(self.groups),
            )

    def _open_desired(self, payload: bytes) -> _Desired:
        bundle = open_bundle(payload, self.operator)
        return _Desired(bundle, Target.of(bundle), payload)

    def _group_changed(self, group: str) -> None:
        g = self.groups[group]
        self._changes.groups[group] = (
            g.current.bundle.serial,
            g.current.payload,
            g.rollout.to_doc(),
        )

    async def _persist(self, stop: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _SAVE_S)
            changes, self._changes = self._changes, FleetChanges()
            if changes:
                await asyncio.to_thread(self.store.save, changes)
            if stop.is_set():
                return

    # -- running -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        broker = self.config.broker.model_copy(
            update={"client_id": self.fleet.client_id, "clean_start": True, "receive_maximum": None}
        )
        try:
            async with MqttLink(
                broker,
                client_id=self.fleet.client_id,
                role="core-fleet",
                subscriptions=[HEARTBEATS, GROUP_BUNDLES, GROUP_ROLLBACKS],
                qos=1,
                sink=self.on_message,
            ) as link:
                self.link = link
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._persist(stop), name="core-fleet-persist")
                    tg.create_task(self._roll(stop), name="core-fleet-rollout")
        finally:
            self.store.close()

    async def _roll(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()  # before stepping: a message taken meanwhile wakes us again
            self.step()
            await self._publish_unsent()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _TICK_S)

    def step(self) -> None:
        """Advance every rollout (waves, deadlines); queue the bundles to publish."""
        now = self.clock()
        for group, g in self.groups.items():
            before = (g.rollout.state, g.rollout.wave, len(g.rollout.results))
            give = g.rollout.step(self.members(group, now), now)
            for site in give:
                self.desired[site] = g.current
                self._changes.desired[site] = (g.current.bundle.serial, g.current.payload)
                self._unsent[site] = g.current.payload
                beat = self.beats.get(site)
                if beat is not None:
                    g.rollout.observe(beat)
            if give:
                log.info(
                    "fleet: group %s bundle %d wave %d/%d to %s",
                    group,
                    g.rollout.serial,
                    g.rollout.wave + 1,
                    len(g.rollout.waves),
                    ", ".join(give),
                )
            after = (g.rollout.state, g.rollout.wave, len(g.rollout.results))
            if give or after != before:
                self._group_changed(group)
                if after[0] != before[0]:
                    log.log(
                        logging.WARNING if g.rollout.state == "halted" else logging.INFO,
                        "fleet: rollout of bundle %d to group %s %s%s",
                        g.rollout.serial,
                        group,
                        g.rollout.state,
                        f": {g.rollout.reason}" if g.rollout.reason else "",
                    )

    async def _publish_unsent(self) -> None:
        link = self.link
        if link is None or not link.is_up:
            return
        for site, payload in list(self._unsent.items()):
            try:
                await link.publish(
                    desired_topic(site), payload, qos=1, retain=True, timeout=_PUBLISH_TIMEOUT_S
                )
            except TransportError as exc:
                self.counters["desired_publish_failed"] += 1
                log.warning("fleet: bundle for %s not published (%s); again soon", site, exc)
                return
            if self._unsent.get(site) is payload:
                del self._unsent[site]
            self.counters["desired_published"] += 1

    # -- receiving -----------------------------------------------------------------------------

    def on_message(self, message: RawMessage) -> None:
        """The link's sink: verify and take a heartbeat, a bundle or a rollback request."""
        parts = message.topic.split("/")
        if not message.payload:
            return  # a retained message cleared
        if len(parts) == 3 and parts[2] == "heartbeat":
            self._take_heartbeat(parts[1], message.payload)
        elif (
            len(parts) == 5
            and parts[:3] == ["edge", "fleet", "group"]
            and parts[4] in ("bundle", "rollback")
        ):
            self._take_fleet_message(parts[4], parts[3], message.payload)
        self._wake.set()

    def _take_heartbeat(self, topic_site: str, payload: bytes) -> None:
        try:
            beat = open_heartbeat(payload, self.registry.public_key)
            if beat.site != topic_site:
                raise DecodeError(
                    "wrong_topic", f"heartbeat of {beat.site!r} on {topic_site!r}'s topic"
                )
        except DecodeError as exc:
            self.counters[f"heartbeat_rejected_{exc.reason}"] += 1
            log.warning("fleet: heartbeat refused: %s", exc)
            return
        except ConfigError as exc:  # the site's public key in the registry is unreadable
            self.counters["heartbeat_rejected_unreadable_key"] += 1
            log.error("fleet: heartbeat not verified: %s", exc)
            return
        known = self.beats.get(beat.site)
        if known is not None and beat.ts <= known.ts:
            self.counters["heartbeat_old"] += 1
            return
        now = self.clock()
        self.counters["heartbeats"] += 1
        self.beats[beat.site] = beat
        self.beat_at[beat.site] = now
        self._changes.heartbeats[beat.site] = (payload, now)
        for group, g in self.groups.items():
            results = len(g.rollout.results)
            g.rollout.observe(beat)
            if len(g.rollout.results) != results:
                self._group_changed(group)

    def _take_fleet_message(self, kind: str, topic_group: str, payload: bytes) -> None:
        label = "rollback" if kind == "rollback" else "bundle"
        try:
            message = open_fleet_message(payload, self.operator)
            if message.group != topic_group:
                raise DecodeError(
                    "wrong_group", f"a message for group {message.group!r} on {topic_group!r}'s"
                )
            if isinstance(message, Bundle) != (kind == "bundle"):
                raise DecodeError("wrong_type", f"a {type(message).__name__} on the {kind} topic")
            desired = None
            if isinstance(message, Bundle):
                desired = _Desired(message, Target.of(message), payload)
        except DecodeError as exc:
            self.counters[f"{label}_rejected_{exc.reason}"] += 1
            log.warning("fleet: %s refused: %s", label, exc)
            return
        if isinstance(message, RollbackRequest):
            self._take_rollback(message)
        elif desired is not None:
            self._take_bundle(desired)

    def _take_bundle(self, desired: _Desired) -> None:
        bundle = desired.bundle
        known = self.groups.get(bundle.group)
        if known is not None and bundle.serial <= known.current.bundle.serial:
            if bundle.serial < known.current.bundle.serial:
                self.counters["bundle_old"] += 1
            return
        if known is not None and known.rollout.state in ("rolling", "halted"):
            known.rollout.state = "superseded"
        self.counters["bundles"] += 1
        rollout = Rollout(
            group=bundle.group,
            serial=bundle.serial,
            waves=list(self.fleet.waves),
            failure_threshold=self.fleet.failure_threshold,
            wave_timeout_s=self.fleet.wave_timeout_s,
            started_at=self.clock(),
        )
        if self._rollback_serials.get(bundle.group) == bundle.serial:
            rollout.switch_to_rollback(list(self.fleet.rollback_waves))
        self.groups[bundle.group] = _Group(desired, rollout)
        self._group_changed(bundle.group)
        log.info(
            "fleet: bundle %d for group %s (runtime %s, config %s)%s",
            bundle.serial,
            bundle.group,
            bundle.runtime_version,
            desired.target.managed_hash,
            " as a rollback" if rollout.rollback else "",
        )

    def _take_rollback(self, request: RollbackRequest) -> None:
        self.counters["rollback_requests"] += 1
        self._rollback_serials[request.group] = request.serial
        g = self.groups.get(request.group)
        if g is not None and g.rollout.serial == request.serial and not g.rollout.rollback:
            g.rollout.switch_to_rollback(list(self.fleet.rollback_waves))
            self._group_changed(request.group)

    # -- the view --------------------------------------------------------------------------------

    def stale_after_s(self, beat: Heartbeat) -> float:
        if self.fleet.heartbeat_stale_s is not None:
            return self.fleet.heartbeat_stale_s
        return _STALE_INTERVALS * beat.interval_s

    def members(self, group: str, now: float) -> list[str]:
        """The sites whose newest heartbeat names ``group``: fresh ones first (the canary
        should be a site that answers), then by name."""
        found = [site for site, beat in self.beats.items() if beat.group == group]

        def stale(site: str) -> bool:
            return now - self.beat_at[site] > self.stale_after_s(self.beats[site])

        return sorted(found, key=lambda s: (stale(s), s))

    def registered_sites(self) -> list[str]:
        return sorted(p.stem for p in (self.registry.directory / "sites").glob("*.pub"))

    def _pending(self, site: str, beat: Heartbeat | None) -> Cause | None:
        group = beat.group if beat is not None else None
        g = self.groups.get(group) if group is not None else None
        if g is None:
            return None
        r = g.rollout
        mine = self.desired.get(site)
        if mine is not None and mine.bundle.serial >= r.serial:
            return None
        if site in r.assigned:
            return None
        if r.state == "rolling":
            text = f"pending wave {r.wave + 2} of {len(r.waves)} (bundle {r.serial})"
            return Cause("pending_wave", text)
        if r.state == "halted":
            return Cause("halted", f"rollout of bundle {r.serial} halted before this site")
        if r.state == "done":
            text = f"bundle {r.serial} to be sent (joined the group after its rollout)"
            return Cause("pending_wave", text)
        return None

    def site_drift(self, site: str, now: float) -> SiteDrift:
        beat = self.beats.get(site)
        desired = self.desired.get(site)
        age = now - self.beat_at[site] if beat is not None else None
        return site_drift(
            beat,
            desired.target if desired is not None else None,
            age_s=age,
            stale_after_s=self.stale_after_s(beat) if beat is not None else 0.0,
            pending=self._pending(site, beat),
        )

    def view(self) -> dict[str, Any]:
        """The fleet table (``/fleet.json``, ``edge-runtime fleet status``, the page)."""
        now = self.clock()
        sites = sorted(set(self.registered_sites()) | set(self.beats) | set(self.desired))
        rows = [self._row(site, now) for site in sites]
        states = Counter(row["state"] for row in rows)
        return {
            "now": now,
            "sites": rows,
            "states": {state: states[state] for state in STATES},
            "groups": {
                group: {
                    "serial": g.current.bundle.serial,
                    "runtime_version": g.current.bundle.runtime_version,
                    "managed_hash": g.current.target.managed_hash,
                    "rollout": g.rollout.as_dict(now),
                }
                for group, g in sorted(self.groups.items())
            },
            "counters": dict(self.counters),
            "broker": self.link.state.value if self.link is not None else "none",
        }

    def _row(self, site: str, now: float) -> dict[str, Any]:
        beat = self.beats.get(site)
        desired = self.desired.get(site)
        drift = self.site_drift(site, now).as_dict()
        progress = self.progress.get(site)
        prog = progress.as_dict(now) if progress is not None else {}
        return {
            "site": site,
            "group": beat.group if beat is not None else None,
            **drift,
            "desired": None
            if desired is None
            else {
                "serial": desired.bundle.serial,
                "group": desired.bundle.group,
                "runtime_version": desired.bundle.runtime_version,
                "managed_hash": desired.target.managed_hash,
                "models": dict(desired.bundle.models),
            },
            "reported": None
            if beat is None
            else {
                "revision_id": beat.revision_id,
                "runtime_version": beat.revision.runtime_version,
                "config_hash": beat.revision.config_hash,
                "managed_hash": beat.managed_hash,
                "running_serial": beat.running_serial,
                "last_serial": beat.last_serial,
                "last_outcome": beat.last_outcome,
                "last_reason": beat.last_reason,
                "ready": beat.ready,
                "uptime_s": round(beat.uptime_s, 1),
            },
            "heartbeat_age_s": round(now - self.beat_at[site], 1) if beat is not None else None,
            "backlog": beat.backlog if beat is not None else None,
            "rejected": beat.rejected if beat is not None else None,
            "lag_s": prog.get("lag_s"),
            "missing": prog.get("missing"),
            "gaps": prog.get("gaps", []),
            "received": prog.get("received"),
        }

    def status(self) -> dict[str, Any]:
        """The part of the core's ``/status`` about the fleet."""
        view = self.view()
        return {
            "states": view["states"],
            "groups": view["groups"],
            "counters": view["counters"],
            "broker": view["broker"],
            "sites": {
                row["site"]: {
                    "state": row["state"],
                    "causes": [c["text"] for c in row["causes"]],
                    "running_serial": (row["reported"] or {}).get("running_serial"),
                    "desired_serial": (row["desired"] or {}).get("serial"),
                }
                for row in view["sites"]
            },
        }


class FleetCollector(Collector):
    """The fleet's metrics: sites per state, drift per site and cause, heartbeat ages,
    rollout wave and state per group, fleet events."""

    def __init__(self, manager: FleetManager) -> None:
        self.manager = manager

    def collect(self) -> list[Metric]:
        m = self.manager
        now = m.clock()
        sites = GaugeMetricFamily("edge_fleet_sites", "Sites per fleet state.", labels=["state"])
        drift = GaugeMetricFamily(
            "edge_fleet_drift", "1 per site and drift cause.", labels=["site", "cause"]
        )
        age = GaugeMetricFamily(
            "edge_fleet_heartbeat_age_seconds", "Age of the newest heartbeat.", labels=["site"]
        )
        wave = GaugeMetricFamily(
            "edge_fleet_rollout_wave", "Wave of the group's rollout (1-based).", labels=["group"]
        )
        state = GaugeMetricFamily(
            "edge_fleet_rollout_state",
            "1 for the state the group's rollout is in.",
            labels=["group", "state"],
        )
        events = CounterMetricFamily("edge_fleet_events", "Fleet manager events.", labels=["event"])
        counts: Counter[str] = Counter()
        for site in sorted(set(m.registered_sites()) | set(m.beats) | set(m.desired)):
            d = m.site_drift(site, now)
            counts[d.state] += 1
            for code in sorted({c.code for c in d.causes}):
                drift.add_metric([site, code], 1.0)
            if site in m.beat_at:
                age.add_metric([site], now - m.beat_at[site])
        for s in STATES:
            sites.add_metric([s], counts[s])
        for group, g in sorted(m.groups.items()):
            wave.add_metric([group], g.rollout.wave + 1)
            for s in ("rolling", "halted", "done", "superseded"):
                state.add_metric([group, s], 1.0 if g.rollout.state == s else 0.0)
        for name, n in sorted(m.counters.items()):
            events.add_metric([name], n)
        return [sites, drift, age, wave, state, events]
