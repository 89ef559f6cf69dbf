"""What the fleet manager knows, for people and scrapers: the fleet table (``/fleet.json``,
the ``/fleet`` page, ``edge-runtime fleet status``), the ``fleet`` part of the core's
``/status``, and the fleet's metrics."""

from __future__ import annotations

from collections import Counter
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge_runtime.core.drift import STATES
from edge_runtime.core.fleet import FleetManager

__all__ = ["FleetCollector", "fleet_status", "fleet_view"]


def fleet_view(m: FleetManager) -> dict[str, Any]:
    """The fleet table (``/fleet.json``, ``edge-runtime fleet status``, the page)."""
    now = m.clock()
    sites = sorted(set(m.registered_sites()) | set(m.beats) | set(m.desired))
    rows = [_row(m, site, now) for site in sites]
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
            for group, g in sorted(m.groups.items())
        },
        "counters": dict(m.counters),
        "broker": m.link.state.value if m.link is not None else "none",
    }


def _row(m: FleetManager, site: str, now: float) -> dict[str, Any]:
    beat = m.beats.get(site)
    desired = m.desired.get(site)
    drift = m.site_drift(site, now).as_dict()
    progress = m.progress.get(site)
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
        "heartbeat_age_s": round(now - m.beat_at[site], 1) if beat is not None else None,
        "backlog": beat.backlog if beat is not None else None,
        "rejected": beat.rejected if beat is not None else None,
        "lag_s": prog.get("lag_s"),
        "missing": prog.get("missing"),
        "gaps": prog.get("gaps", []),
        "received": prog.get("received"),
    }


def fleet_status(m: FleetManager) -> dict[str, Any]:
    """The part of the core's ``/status`` about the fleet."""
    view = fleet_view(m)
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
