"""Drift at the core: what a site should run (the bundle the core rolled out to it) against
what it says it runs (its newest signed heartbeat), and why the two differ.

Each cause is a code (a metric label: ``edge_fleet_drift{site,cause}``) and a sentence for
people:

===================  =========================================================================
code                 when
===================  =========================================================================
``never_heard``      a registered site the core has no heartbeat from
``stale``            the newest heartbeat is older than the staleness limit
``pending_wave``     the group's rollout has not reached this site yet
``halted``           the group's rollout halted before it reached this site
``not_applied``      the bundle was sent; no outcome yet (or ``applying``)
``refused``          the site refused the desired bundle (its reason)
``rolled_back``      the site applied it, was not healthy in time and rolled back (its reason)
``config_hash``      it runs the desired serial but its managed config hash differs
``runtime_version``  its runtime version is not the bundle's
``model_hash``       a model file's sha256 is not the bundle's
``serial``           it runs another bundle than the core gave it
``group``            its heartbeat names another group than the desired bundle's
``site_reported``    a cause the site reports itself (a local change under fleet management)
===================  =========================================================================

A site's state is ``never_heard``, ``stale``, ``unmanaged`` (no bundle for it and none
coming), ``in_sync``, ``pending`` (only pending_wave / not_applied) or ``drift``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_runtime.fleet.bundle import Bundle
from edge_runtime.fleet.heartbeat import Heartbeat

__all__ = ["CAUSES", "STATES", "Cause", "SiteDrift", "Target", "site_drift"]

CAUSES = (
    "never_heard",
    "stale",
    "pending_wave",
    "halted",
    "not_applied",
    "refused",
    "rolled_back",
    "config_hash",
    "runtime_version",
    "model_hash",
    "serial",
    "group",
    "site_reported",
)
STATES = ("in_sync", "pending", "drift", "stale", "never_heard", "unmanaged")
_PENDING = frozenset({"pending_wave", "not_applied"})


@dataclass(frozen=True, slots=True)
class Target:
    """What a bundle asks of a site, as the drift check compares it (parsed once)."""

    group: str
    serial: int
    managed_hash: str
    runtime_version: str
    models: dict[str, str]

    @classmethod
    def of(cls, bundle: Bundle) -> Target:
        """Raises :class:`~edge_runtime.errors.DecodeError` for a config a site would refuse."""
        return cls(
            bundle.group,
            bundle.serial,
            bundle.managed_hash,
            bundle.runtime_version,
            dict(bundle.models),
        )


@dataclass(frozen=True, slots=True)
class Cause:
    code: str
    text: str


@dataclass(frozen=True, slots=True)
class SiteDrift:
    state: str
    causes: tuple[Cause, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "drift": self.state not in ("in_sync", "unmanaged"),
            "causes": [{"code": c.code, "text": c.text} for c in self.causes],
        }


def site_drift(
    beat: Heartbeat | None,
    desired: Target | None,
    *,
    age_s: float | None,
    stale_after_s: float,
    pending: Cause | None = None,
) -> SiteDrift:
    """``desired``: the bundle the core rolled out to this site (None: none yet);
    ``pending``: why the group's newer bundle has not reached it (``pending_wave`` or
    ``halted``), else None; ``age_s``: age of ``beat``."""
    if beat is None:
        return SiteDrift("never_heard", (Cause("never_heard", "never heard from"),))
    causes: list[Cause] = []
    if age_s is not None and age_s > stale_after_s:
        causes.append(Cause("stale", f"heartbeat stale for {age_s:.0f} s"))
    if pending is not None:
        causes.append(pending)
    if desired is not None:
        causes += _against_bundle(beat, desired)
    causes += [Cause("site_reported", f"site reports: {d}") for d in beat.drift]
    if not causes:
        return SiteDrift("unmanaged" if desired is None else "in_sync", ())
    if causes[0].code == "stale":
        state = "stale"
    elif all(c.code in _PENDING for c in causes):
        state = "pending"
    else:
        state = "drift"
    return SiteDrift(state, tuple(causes))


def _against_bundle(beat: Heartbeat, desired: Target) -> list[Cause]:
    causes: list[Cause] = []
    if beat.group != desired.group:
        causes.append(
            Cause("group", f"heartbeat names group {beat.group!r}, the bundle {desired.group!r}")
        )
    if beat.running_serial != desired.serial:
        if beat.last_serial == desired.serial and beat.last_outcome == "refused":
            causes.append(Cause("refused", f"refused: {beat.last_reason or 'no reason given'}"))
        elif beat.last_serial == desired.serial and beat.last_outcome == "rolled_back":
            reason = beat.last_reason or "no reason given"
            causes.append(Cause("rolled_back", f"rolled back: {reason}"))
        elif beat.running_serial > desired.serial:
            causes.append(
                Cause(
                    "serial",
                    f"runs bundle {beat.running_serial}, newer than the {desired.serial} the "
                    "core sent",
                )
            )
        elif beat.last_serial == desired.serial and beat.last_outcome == "applying":
            causes.append(Cause("not_applied", f"applying bundle {desired.serial}"))
        else:
            causes.append(Cause("not_applied", f"bundle {desired.serial} sent, no outcome yet"))
        return causes
    if beat.managed_hash != desired.managed_hash:
        causes.append(
            Cause(
                "config_hash",
                f"managed config hash differs (desired {desired.managed_hash}, reported "
                f"{beat.managed_hash})",
            )
        )
    reported = beat.revision.runtime_version
    if desired.runtime_version and reported != desired.runtime_version:
        causes.append(
            Cause(
                "runtime_version",
                f"runtime version differs (desired {desired.runtime_version}, reported {reported})",
            )
        )
    for name, sha in sorted(desired.models.items()):
        got = beat.revision.models.get(name)
        if got != sha:
            causes.append(
                Cause(
                    "model_hash",
                    f"model {name} hash differs (desired {sha[:12]}, reported "
                    f"{got[:12] if got else 'none'})",
                )
            )
    return causes
