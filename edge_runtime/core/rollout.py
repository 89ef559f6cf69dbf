"""A bundle's rollout to one group of sites, in waves: a small state machine, fed heartbeats
and the clock by the fleet manager (:mod:`edge_runtime.core.fleet`), tested without a broker.

The waves are cumulative shares of the group's members (the sites whose newest heartbeat
names the group), e.g. ``[0.2, 1.0]``: wave 1 takes a fifth of them (at least one site, the
canary), wave 2 the rest. Each wave starts by handing its sites to the manager, which
publishes the operator's signed bundle, unchanged, to their desired topics. A site's outcome
is the first heartbeat that runs the bundle (``applied``) or reports it ``refused`` or
``rolled_back``; a site with no outcome when the wave's deadline passes counts as ``timeout``.
Failures (refused, rolled back, timeout) beyond ``failure_threshold`` in one wave halt the
rollout at once, with the reason; the sites of later waves are not touched. Otherwise, once
every site of the wave has its outcome, the next wave starts; after the last the rollout is
``done``. Members are counted again at the start of each wave, so sites that joined the group
meanwhile are included; a site that joins after the rollout is done gets the bundle at once
(``late``), without holding anything up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from edge_runtime.fleet.heartbeat import Heartbeat

__all__ = ["FAILED", "Rollout", "RolloutState", "SiteOutcome"]

RolloutState = Literal["rolling", "halted", "done", "superseded"]
SiteOutcome = Literal["applied", "refused", "rolled_back", "timeout"]
FAILED: frozenset[str] = frozenset({"refused", "rolled_back", "timeout"})


@dataclass
class Rollout:
    """One bundle (``serial``) rolling out to ``group``; see the module docstring."""

    group: str
    serial: int
    waves: list[float]
    failure_threshold: int
    wave_timeout_s: float
    rollback: bool = False
    """a rollback: the operator re-signed an earlier bundle's content ('fleet rollback')"""
    state: RolloutState = "rolling"
    wave: int = -1
    """index of the wave under way (-1 before the first)"""
    deadline: float = 0.0
    reason: str = ""
    started_at: float = 0.0
    finished_at: float | None = None
    assigned: dict[str, int] = field(default_factory=dict)
    """site -> the wave that gave it the bundle (len(waves) for late joiners)"""
    results: dict[str, tuple[SiteOutcome, str]] = field(default_factory=dict)

    # -- the manager's calls --------------------------------------------------------------------

    def observe(self, beat: Heartbeat) -> None:
        """Take a site's heartbeat: its outcome, if the bundle was given to it and it has one."""
        if beat.site not in self.assigned or beat.site in self.results:
            return
        if beat.running_serial == self.serial:
            self.results[beat.site] = ("applied", "")
        elif beat.last_serial == self.serial and beat.last_outcome in ("refused", "rolled_back"):
            self.results[beat.site] = (beat.last_outcome, beat.last_reason)

    def step(self, members: list[str], now: float) -> list[str]:
        """Advance: halt, time a wave out, or start the next one. Returns the sites that are
        to get the bundle now (``members`` in the order waves take them)."""
        if self.state == "done":
            late = [m for m in members if m not in self.assigned]
            for site in late:
                self.assigned[site] = len(self.waves)
            return late
        if self.state != "rolling":
            return []
        if self.wave >= 0:
            current = self._wave_sites(self.wave)
            if self._halt_if_failed(current, now):
                return []
            pending = [s for s in current if s not in self.results]
            if pending and now < self.deadline:
                return []
            for site in pending:
                self.results[site] = ("timeout", f"no outcome within {self.wave_timeout_s:g} s")
            if self._halt_if_failed(current, now):
                return []
        return self._next_wave(members, now)

    def switch_to_rollback(self, waves: list[float]) -> None:
        """The operator said this bundle is a rollback: the waves still to come follow
        ``waves`` (by default all at once)."""
        self.rollback = True
        done = self.waves[: self.wave + 1]
        rest = [w for w in waves if not done or w > done[-1]]
        self.waves = done + (rest or [1.0])

    # -- inside ---------------------------------------------------------------------------------

    def _wave_sites(self, wave: int) -> list[str]:
        return [s for s, w in self.assigned.items() if w == wave]

    def failures(self, wave: int) -> list[str]:
        return [s for s in self._wave_sites(wave) if self.results.get(s, ("", ""))[0] in FAILED]

    def _halt_if_failed(self, sites: list[str], now: float) -> bool:
        failed = [s for s in sites if self.results.get(s, ("", ""))[0] in FAILED]
        if len(failed) <= self.failure_threshold:
            return False
        said = "; ".join(
            f"{s}: {outcome}" + (f" ({why})" if why else "")
            for s in failed
            for outcome, why in (self.results[s],)
        )
        self.state = "halted"
        self.finished_at = now
        self.reason = (
            f"wave {self.wave + 1}: {len(failed)} failure(s), more than the "
            f"{self.failure_threshold} allowed ({said})"
        )
        return True

    def _next_wave(self, members: list[str], now: float) -> list[str]:
        while True:
            self.wave += 1
            if self.wave >= len(self.waves):
                self.wave = len(self.waves) - 1
                self.state = "done"
                self.finished_at = now
                return []
            want = max(1, math.ceil(self.waves[self.wave] * len(members) - 1e-9))
            fresh = [m for m in members if m not in self.assigned]
            take = fresh[: max(0, want - len(self.assigned))]
            if take:
                for site in take:
                    self.assigned[site] = self.wave
                self.deadline = now + self.wave_timeout_s
                return take

    # -- reporting and persistence --------------------------------------------------------------

    def pending_wave(self, site: str) -> int | None:
        """The 1-based wave still to give ``site`` the bundle (None: it has it, or never will)."""
        if site in self.assigned or self.state != "rolling":
            return None
        return self.wave + 2

    def as_dict(self, now: float) -> dict[str, Any]:
        outcomes: dict[str, int] = {}
        for outcome, _ in self.results.values():
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        return {
            "group": self.group,
            "serial": self.serial,
            "rollback": self.rollback,
            "state": self.state,
            "wave": self.wave + 1,
            "waves": list(self.waves),
            "reason": self.reason,
            "sites_given": len(self.assigned),
            "given": {site: wave + 1 for site, wave in sorted(self.assigned.items())},
            "outcomes": outcomes,
            "waiting_for": sorted(
                s for s in self.assigned if s not in self.results and self.state == "rolling"
            ),
            "wave_deadline_in_s": round(max(0.0, self.deadline - now), 1)
            if self.state == "rolling" and self.wave >= 0
            else None,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }

    def to_doc(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "serial": self.serial,
            "waves": self.waves,
            "failure_threshold": self.failure_threshold,
            "wave_timeout_s": self.wave_timeout_s,
            "rollback": self.rollback,
            "state": self.state,
            "wave": self.wave,
            "reason": self.reason,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "assigned": self.assigned,
            "results": {s: list(r) for s, r in self.results.items()},
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any], now: float) -> Rollout:
        """A rollout as :meth:`to_doc` kept it; a wave under way gets a fresh deadline."""
        rollout = cls(
            group=str(doc["group"]),
            serial=int(doc["serial"]),
            waves=[float(w) for w in doc["waves"]],
            failure_threshold=int(doc["failure_threshold"]),
            wave_timeout_s=float(doc["wave_timeout_s"]),
            rollback=bool(doc["rollback"]),
            state=doc["state"],
            wave=int(doc["wave"]),
            reason=str(doc["reason"]),
            started_at=float(doc["started_at"]),
            finished_at=doc["finished_at"],
            assigned={str(s): int(w) for s, w in doc["assigned"].items()},
            results={str(s): (r[0], str(r[1])) for s, r in doc["results"].items()},
        )
        rollout.deadline = now + rollout.wave_timeout_s
        return rollout
