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
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from edge_runtime.core.config import CoreConfig
from edge_runtime.core.drift import Cause, SiteDrift, Target, site_drift
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

__all__ = ["Desired", "FleetManager", "GroupState"]

log = logging.getLogger(__name__)

_TICK_S = 0.5  # how often rollouts are stepped (wave deadlines) and failed publishes retried
_SAVE_S = 1.0  # how often the fleet view is written to the database
_PUBLISH_TIMEOUT_S = 10.0
_STALE_INTERVALS = 3.0


@dataclass
class Desired:
    """A verified bundle: the operator's sealed bytes and what the drift check compares."""

    bundle: Bundle
    target: Target
    payload: bytes


@dataclass
class GroupState:
    """A group's newest bundle and its rollout."""

    current: Desired
    rollout: Rollout


def _merged(older: FleetChanges, newer: FleetChanges) -> FleetChanges:
    return FleetChanges(
        heartbeats={**older.heartbeats, **newer.heartbeats},
        desired={**older.desired, **newer.desired},
        groups={**older.groups, **newer.groups},
    )


class FleetManager:
    """See the module docstring: :meth:`run` until the ``stop`` event; the fleet's view
    (:mod:`edge_runtime.core.fleet_view`) reads its state at any time."""

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
        self.desired: dict[str, Desired] = {}
        self.groups: dict[str, GroupState] = {}
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
                    self.groups[group] = GroupState(current, Rollout.from_doc(doc, now))
        if self.beats or self.groups:
            log.info(
                "fleet view restored: %d site(s) heard, %d group rollout(s)",
                len(self.beats),
                len(self.groups),
            )

    def _open_desired(self, payload: bytes) -> Desired:
        bundle = open_bundle(payload, self.operator)
        return Desired(bundle, Target.of(bundle), payload)

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
                try:
                    await asyncio.to_thread(self.store.save, changes)
                except (sqlite3.Error, OSError) as exc:
                    # the view is not data of record: keep it in memory, write it next time
                    self.counters["view_save_failed"] += 1
                    log.error("fleet: the fleet view was not saved (%s); trying again", exc)
                    self._changes = _merged(changes, self._changes)
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
                desired = Desired(message, Target.of(message), payload)
        except DecodeError as exc:
            self.counters[f"{label}_rejected_{exc.reason}"] += 1
            log.warning("fleet: %s refused: %s", label, exc)
            return
        if isinstance(message, RollbackRequest):
            self._take_rollback(message)
        elif desired is not None:
            self._take_bundle(desired)

    def _take_bundle(self, desired: Desired) -> None:
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
        self.groups[bundle.group] = GroupState(desired, rollout)
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
