"""A site's heartbeat: its revision and state, signed with the site's key.

Sent every ``fleet.heartbeat_interval_s`` and at once when a bundle's outcome changes, on
``edge/<site>/heartbeat`` (QoS 1). On the wire a sealed message of kind ``heartbeat`` whose
payload is the msgpack map of :meth:`Heartbeat.to_dict`. The core verifies it against the
site registry before it reads a field, and keeps the newest per site (by the sealed ``ts``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_runtime.errors import DecodeError
from edge_runtime.fleet.revision import Revision
from edge_runtime.identity.sealed import Sealer, open_sealed

__all__ = ["OUTCOMES", "Heartbeat", "Outcome", "open_heartbeat"]

Outcome = Literal["applying", "applied", "refused", "rolled_back"]
OUTCOMES: tuple[Outcome, ...] = ("applying", "applied", "refused", "rolled_back")


@dataclass(frozen=True, slots=True)
class Heartbeat:
    site: str
    group: str
    revision: Revision
    managed_hash: str
    """hash of the fleet-managed config tables the site runs (see fleet.bundle.managed_hash)"""
    running_serial: int
    """serial of the bundle the site runs; 0 while it runs its local config"""
    last_serial: int = 0
    """serial of the newest bundle the site has seen (applied or not)"""
    last_outcome: Outcome | None = None
    last_reason: str = ""
    drift: tuple[str, ...] = ()
    """causes the site sees itself, e.g. a local config change under fleet management"""
    ready: bool = False
    backlog: int = 0
    """summaries spooled, not yet acknowledged by the core"""
    rejected: int = 0
    """input messages set aside since start (malformed, oversized, forged)"""
    uptime_s: float = 0.0
    interval_s: float = 10.0
    ts: int = 0
    """signing time in microseconds (from the sealed body; 0 before sealing)"""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def revision_id(self) -> str:
        return self.revision.id

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "group": self.group,
            "revision": self.revision.to_dict(),
            "revision_id": self.revision.id,
            "managed_hash": self.managed_hash,
            "running_serial": self.running_serial,
            "last_serial": self.last_serial,
            "last_outcome": self.last_outcome,
            "last_reason": self.last_reason,
            "drift": list(self.drift),
            "ready": self.ready,
            "backlog": self.backlog,
            "rejected": self.rejected,
            "uptime_s": self.uptime_s,
            "interval_s": self.interval_s,
            "extra": dict(self.extra),
        }

    def seal(self, sealer: Sealer) -> bytes:
        return sealer.seal("heartbeat", msgpack.packb(self.to_dict(), use_bin_type=True))


def open_heartbeat(
    payload: bytes, public_key: Callable[[str], Ed25519PublicKey | None]
) -> Heartbeat:
    """Verify and parse a heartbeat; ``public_key`` looks a site's key up in the registry.
    Raises :class:`DecodeError`: ``malformed_sealed``, ``wrong_kind``, ``unknown_site``,
    ``bad_signature``, ``wrong_site``, ``malformed_heartbeat``."""
    sealed = open_sealed(payload, "heartbeat")
    key = public_key(sealed.site)
    if key is None:
        raise DecodeError("unknown_site", f"heartbeat from unregistered site {sealed.site!r}")
    sealed.verify(key)
    try:
        doc: Any = msgpack.unpackb(sealed.payload, raw=False)
        if not isinstance(doc, dict):
            raise TypeError("the payload is not a map")
        outcome = doc.get("last_outcome")
        extra = doc.get("extra")
        if outcome is not None and outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        beat = Heartbeat(
            site=str(doc["site"]),
            group=str(doc["group"]),
            revision=Revision.from_dict(doc["revision"]),
            managed_hash=str(doc["managed_hash"]),
            running_serial=int(doc["running_serial"]),
            last_serial=int(doc.get("last_serial", 0)),
            last_outcome=outcome,
            last_reason=str(doc.get("last_reason", "")),
            drift=tuple(str(d) for d in doc.get("drift", ())),
            ready=bool(doc.get("ready", False)),
            backlog=int(doc.get("backlog", 0)),
            rejected=int(doc.get("rejected", 0)),
            uptime_s=float(doc.get("uptime_s", 0.0)),
            interval_s=float(doc.get("interval_s", 10.0)),
            ts=sealed.ts,
            extra=extra if isinstance(extra, dict) else {},
        )
    except (KeyError, TypeError, ValueError, DecodeError, msgpack.UnpackException) as exc:
        raise DecodeError("malformed_heartbeat", str(exc)) from exc
    if beat.site != sealed.site:
        raise DecodeError("wrong_site", f"heartbeat names {beat.site!r}, signed by {sealed.site!r}")
    return beat
