"""The site's side of the fleet: desired bundles in, signed heartbeats out, local reloads.

With ``[fleet]`` the site subscribes (QoS 1, on its uplink connection to the core broker) to
its retained desired topic ``edge/fleet/site/<site>/desired``. A bundle that arrives is

1. verified with the operator key pinned at provisioning (``operator.pub``);
2. checked: the site's group, a serial above every one seen (an older signed bundle replayed
   cannot downgrade the site; a bundle seen before, e.g. the retained copy again after a
   reconnect, is ignored), the exact runtime version, the sha256 of every model file it names;
3. laid over the local config (its managed tables replace the local ones) and validated by
   the normal loader; a change only a restart can apply is refused too (steps 1 to 3 are the
   pure functions of :mod:`edge_runtime.runtime.fleet_checks`);
4. applied without a restart (:mod:`edge_runtime.runtime.reload`), then given
   ``health_timeout_s`` to be healthy, or rolled back to what ran before.

Every step that fails refuses the bundle with a reason (``last_outcome`` = ``refused``,
``last_reason`` = ``<code>: <detail>``): ``bad_signature``, ``malformed_sealed``,
``wrong_kind``, ``malformed_bundle``, ``wrong_group``, ``stale_serial``, ``runtime_version``,
``model_missing``, ``model_hash``, ``bad_config``, ``needs_restart``. An applied bundle is kept
in ``<data_dir>/fleet/bundle.sealed`` (the operator's sealed bytes) and verified again at
every start, so a restarted site runs the bundle's config and serial;
``<data_dir>/fleet/state.json`` keeps the last serial and outcome.

SIGHUP reloads the local config file the same way (a bundle's tables still win over it). Under
fleet management a local change of the managed tables after a bundle was applied is reported
as drift. Reloads run one at a time, in this agent's loop. The agent's report goes out in
signed heartbeats (:mod:`edge_runtime.runtime.fleet_heartbeats`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge_runtime.config.loader import LoadedConfig, load_config
from edge_runtime.errors import ConfigError
from edge_runtime.fleet import Bundle, Outcome, desired_topic
from edge_runtime.fleet.bundle import MANAGED_KEYS, managed_hash
from edge_runtime.identity import Sealer, load_identity, load_public_key
from edge_runtime.runtime.fleet_checks import (
    BundleRefused,
    check_bundle,
    check_restart,
    check_serial,
    open_checked,
    overlay,
)
from edge_runtime.runtime.fleet_heartbeats import Heartbeats
from edge_runtime.runtime.fleet_store import FleetStore
from edge_runtime.runtime.reload import Handover, apply_config, wait_healthy
from edge_runtime.types import RawMessage

if TYPE_CHECKING:  # the runtime makes its agent with itself; no import at run time
    from edge_runtime.runtime.site import SiteRuntime

__all__ = ["FleetAgent"]

log = logging.getLogger(__name__)

_LOCAL_HEALTH_TIMEOUT_S = 30.0  # SIGHUP without [fleet]


class FleetAgent:
    """See the module docstring. Made by the runtime before anything else (so that a
    persisted bundle's config is the one the runtime starts with); :meth:`run` is one of the
    runtime's tasks."""

    def __init__(self, runtime: SiteRuntime, local: LoadedConfig) -> None:
        self.runtime = runtime
        self.local = local
        self.fleet = local.site.fleet
        self.site_id = local.site.site_id
        self.store = FleetStore(local.site.data_dir)
        self.operator: Ed25519PublicKey | None = None
        sealer: Sealer | None = None
        identity = local.site.identity
        if self.fleet is not None and identity is not None:
            self.operator = load_public_key(identity.dir / "operator.pub")
            sealer = load_identity(identity.dir, self.site_id).sealer
        self.bundle: Bundle | None = None
        self.last_serial = 0
        self.last_outcome: Outcome | None = None
        self.last_reason = ""
        self.local_hash_at_bundle: str | None = None
        self.drift: tuple[str, ...] = ()
        self.last_reload: dict[str, Any] = {}
        self.reloads: Counter[tuple[str, str]] = Counter()
        self.heartbeats = Heartbeats(runtime, self, self.site_id, self.fleet, sealer)
        self._pending: bytes | None = None
        self._hup = False
        self._wake = asyncio.Event()

    # -- start -------------------------------------------------------------------------------

    @property
    def running_serial(self) -> int:
        return self.bundle.serial if self.bundle is not None else 0

    def startup_config(self) -> LoadedConfig:
        """The config to start with: the local one, or a persisted bundle's over it."""
        if self.fleet is None:
            return self.local
        self._read_state()
        path = self.store.bundle_path
        try:
            payload = self.store.read_bundle()
        except OSError as exc:
            self._note("refused", f"persisted bundle: {path} cannot be read: {exc.strerror}")
            return self.local
        if payload is None:
            return self.local
        try:
            bundle = self._open(payload)
            loaded = check_bundle(bundle, self.local, self.fleet.group)
        except BundleRefused as exc:
            log.error(
                "the persisted bundle %s is refused (%s); running the local config", path, exc
            )
            self._note("refused", f"persisted bundle: {exc}")
            self.reloads[("startup", "refused")] += 1
            return self.local
        self.bundle = bundle
        if self.local_hash_at_bundle is None:
            self.local_hash_at_bundle = managed_hash(self.local.raw)
        self._update_drift()
        log.info(
            "running bundle %d for group %s (persisted in %s)", bundle.serial, bundle.group, path
        )
        self.reloads[("startup", "applied")] += 1
        return loaded

    def _read_state(self) -> None:
        doc = self.store.read_state()
        serial, outcome, local_hash = (
            doc.get("last_serial"),
            doc.get("last_outcome"),
            doc.get("local_hash_at_bundle"),
        )
        self.last_serial = serial if isinstance(serial, int) else 0
        self.last_outcome = outcome if outcome in ("applied", "refused", "rolled_back") else None
        self.last_reason = str(doc.get("last_reason", ""))
        self.local_hash_at_bundle = local_hash if isinstance(local_hash, str) else None

    async def _save_state(self, bundle_payload: bytes | None = None) -> None:
        state = {
            "last_serial": self.last_serial,
            "last_outcome": self.last_outcome,
            "last_reason": self.last_reason,
            "running_serial": self.running_serial,
            "local_hash_at_bundle": self.local_hash_at_bundle,
        }
        try:
            await asyncio.to_thread(self.store.write, state, bundle_payload)
        except OSError as exc:
            log.error("fleet state could not be written to %s: %s", self.store.dir, exc)

    # -- inputs ------------------------------------------------------------------------------

    def subscriptions(self) -> list[str]:
        """What the uplink link subscribes to for the agent (QoS 1)."""
        return [desired_topic(self.site_id)] if self.fleet is not None else []

    def receive(self, message: RawMessage) -> bool:
        """A message on the uplink link: True when it was the site's desired bundle."""
        if self.fleet is None or message.topic != desired_topic(self.site_id):
            return False
        if message.payload:  # an empty retained message clears the topic: nothing to do
            self._pending = message.payload  # only the newest counts
            self._wake.set()
        return True

    def request_reload(self) -> None:
        """SIGHUP: reload the local config file (in the agent's loop)."""
        self._hup = True
        self._wake.set()

    def wake(self) -> None:
        """The runtime is stopping: end the loops."""
        self._wake.set()
        self.heartbeats.nudge()

    # -- the loops ---------------------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            if self.fleet is not None and self.heartbeats.sealer is not None:
                tg.create_task(self.heartbeats.run(), name="fleet-heartbeats")
            while not self.runtime.stopping:
                await self._wake.wait()
                self._wake.clear()
                if self.runtime.stopping:
                    break
                if self._hup:
                    self._hup = False
                    await self._reload_local()
                payload, self._pending = self._pending, None
                if payload is not None and not self.runtime.stopping:
                    await self._take_bundle(payload)

    # -- bundles -----------------------------------------------------------------------------

    def _open(self, payload: bytes) -> Bundle:
        assert self.operator is not None
        return open_checked(payload, self.operator)

    async def _take_bundle(self, payload: bytes) -> None:
        try:
            bundle = self._open(payload)
            unseen = check_serial(bundle.serial, self.running_serial, self.last_serial)
        except BundleRefused as exc:
            await self._refused("bundle", None, exc)
            return
        if not unseen:
            log.debug("bundle %d seen before; ignored", bundle.serial)
            return
        assert self.fleet is not None
        self.last_serial = bundle.serial
        self._note("applying", f"bundle {bundle.serial}")
        try:
            new = await asyncio.to_thread(check_bundle, bundle, self.local, self.fleet.group)
            check_restart(self.runtime.loaded, new)
        except BundleRefused as exc:
            await self._refused("bundle", bundle, exc)
            return
        outcome = await self._switch(
            "bundle", new, bundle.health_timeout_s, f"bundle {bundle.serial}"
        )
        if outcome == "applied":
            self.bundle = bundle
            self.local_hash_at_bundle = managed_hash(self.local.raw)
            self._update_drift()
            await self._save_state(payload)
        elif outcome == "rolled_back":
            await self._save_state()
        # "applying": the site stopped during the health wait; nothing is kept, so the next
        # start runs what ran before and takes the (retained) bundle again

    async def _refused(self, source: str, bundle: Bundle | None, exc: BundleRefused) -> None:
        what = f"bundle {bundle.serial}" if bundle is not None else "a bundle"
        if source == "sighup":
            what = f"the config file {self.local.source}"
        log.error(
            "%s refused; the site keeps running revision %s: %s",
            what,
            self.runtime.revision.id,
            exc,
        )
        self.reloads[(source, "refused")] += 1
        self.last_reload = {"source": source, "outcome": "refused", "reason": str(exc)}
        if source == "bundle":
            self._note("refused", str(exc))
            await self._save_state()

    async def _switch(self, source: str, new: LoadedConfig, timeout: float, what: str) -> Outcome:
        """Apply ``new``, wait for health, roll back if it does not come; the outcome."""
        runtime = self.runtime
        previous = runtime.loaded
        handover = await apply_config(runtime, new)
        log.info(
            "%s applied without a restart (revision %s): %s; waiting up to %g s for health",
            what,
            runtime.revision.id,
            handover.summary(),
            timeout,
        )
        healthy, why = await wait_healthy(runtime, handover.watched, timeout)
        if healthy is None:
            self._record(source, "applying", f"{what}: {why}", handover)
            return "applying"
        if healthy:
            self._record(source, "applied", f"{what}: {why}", handover)
            return "applied"
        back = await apply_config(runtime, previous)
        reason = f"{what}: {why}; rolled back to revision {runtime.revision.id}"
        log.error("%s rolled back: %s (%s)", what, why, back.summary())
        self._record(source, "rolled_back", reason, handover, back)
        return "rolled_back"

    def _record(
        self,
        source: str,
        outcome: Outcome,
        reason: str,
        handover: Handover,
        back: Handover | None = None,
    ) -> None:
        self.reloads[(source, outcome)] += 1
        self.last_reload = {
            "source": source,
            "outcome": outcome,
            "reason": reason,
            "handover": handover.to_dict(),
            **({"rollback": back.to_dict()} if back is not None else {}),
        }
        if outcome == "applied":
            log.info("%s", reason)
        if source == "bundle":
            self._note(outcome, reason)
        else:
            self.heartbeats.nudge()

    def _note(self, outcome: Outcome, reason: str) -> None:
        changed = (outcome, reason) != (self.last_outcome, self.last_reason)
        self.last_outcome, self.last_reason = outcome, reason
        if changed:
            self.heartbeats.nudge()

    # -- SIGHUP ------------------------------------------------------------------------------

    async def _reload_local(self) -> None:
        source = self.local.source
        log.info("SIGHUP: reloading %s", source)
        try:
            fresh = await asyncio.to_thread(load_config, source, self.local.registry)
            new = fresh
            if self.bundle is not None:
                new = overlay(fresh, self.bundle, self.bundle.document())
            check_restart(self.runtime.loaded, new)
        except (ConfigError, BundleRefused) as exc:
            refusal = (
                exc if isinstance(exc, BundleRefused) else BundleRefused("bad_config", str(exc))
            )
            await self._refused("sighup", None, refusal)
            return
        previous_local = self.local
        self.local = fresh
        self._update_drift()
        if new.config_hash == self.runtime.loaded.config_hash:
            why = "nothing to change in the running config"
            if self.drift:
                why += f"; drift: {'; '.join(self.drift)}"
            log.info("SIGHUP: %s", why)
            self.reloads[("sighup", "unchanged")] += 1
            self.last_reload = {"source": "sighup", "outcome": "unchanged", "reason": why}
            self.heartbeats.nudge()
            return
        fleet = new.site.fleet or self.fleet
        health = fleet.health_timeout_s if fleet is not None else _LOCAL_HEALTH_TIMEOUT_S
        outcome = await self._switch("sighup", new, health, f"config file {source}")
        if outcome == "rolled_back":
            self.local = previous_local
            self._update_drift()

    # -- drift and reports -------------------------------------------------------------------

    def _update_drift(self) -> None:
        causes: list[str] = []
        bundle = self.bundle
        local_hash = managed_hash(self.local.raw)
        if bundle is not None and local_hash != (self.local_hash_at_bundle or local_hash):
            doc = bundle.document()
            keys = [k for k in MANAGED_KEYS if self.local.raw.get(k) != doc.get(k)]
            causes.append(
                f"local_config: {self.local.source} changed its managed tables "
                f"({', '.join(keys) or 'none differ from the bundle'}) after bundle "
                f"{bundle.serial}; the bundle's tables run"
            )
        if tuple(causes) != self.drift:
            self.drift = tuple(causes)
            for cause in causes:
                log.warning("drift: %s", cause)
            self.heartbeats.nudge()

    def status(self) -> dict[str, Any]:
        runtime = self.runtime
        return {
            "enabled": self.fleet is not None,
            "group": self.fleet.group if self.fleet is not None else None,
            "revision": {"id": runtime.revision.id, **runtime.revision.to_dict()},
            "managed_hash": managed_hash(runtime.loaded.raw),
            "running_serial": self.running_serial,
            "last_serial": self.last_serial,
            "last_outcome": self.last_outcome,
            "last_reason": self.last_reason,
            "drift": list(self.drift),
            "last_reload": self.last_reload,
            "reloads": {f"{s}:{o}": n for (s, o), n in sorted(self.reloads.items())},
            "heartbeats": dict(self.heartbeats.counts),
        }

    def collector(self) -> Collector:
        return _FleetCollector(self)


class _FleetCollector(Collector):
    def __init__(self, agent: FleetAgent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        agent = self.agent
        c = CounterMetricFamily(
            "edge_reloads",
            "Config reloads by source (bundle, sighup, startup) and outcome (applied, refused, "
            "rolled_back, unchanged).",
            labels=["source", "outcome"],
        )
        for (source, outcome), n in sorted(agent.reloads.items()):
            c.add_metric([source, outcome], n)
        yield c
        g = GaugeMetricFamily("edge_fleet_running_serial", "Serial of the bundle the site runs.")
        g.add_metric([], float(agent.running_serial))
        yield g
        g = GaugeMetricFamily("edge_fleet_drift", "Drift causes the site sees itself.")
        g.add_metric([], float(len(agent.drift)))
        yield g
        c = CounterMetricFamily(
            "edge_fleet_heartbeats",
            "Heartbeats by result (sent, failed).",
            labels=["result"],
        )
        for result, n in sorted(agent.heartbeats.counts.items()):
            c.add_metric([result], n)
        yield c
