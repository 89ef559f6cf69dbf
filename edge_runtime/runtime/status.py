"""What a site says about itself: ``/readyz`` (:func:`readiness`), ``/status``
(:func:`status_document`) and the runtime's own gauges on ``/metrics`` (:func:`register_gauges`).

Each reads the running site at the moment it is asked, so a reload shows at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge_runtime import __version__
from edge_runtime.ops.image import image_info

if TYPE_CHECKING:  # the runtime calls these with itself; no import at run time
    from edge_runtime.runtime.site import SiteRuntime

__all__ = ["readiness", "register_gauges", "status_document"]


def register_gauges(runtime: SiteRuntime) -> None:
    """The ingest queue, the site broker link and the uptime, as gauges of the site's stats."""
    gauges = runtime.stats.gauges
    gauges["ingest_queue_depth"] = lambda: float(len(runtime.queue))
    gauges["ingest_queue_capacity"] = lambda: float(runtime.queue.capacity)
    gauges["site_broker_up"] = lambda: float(
        runtime.site_link is not None and runtime.site_link.is_up
    )
    gauges["uptime_seconds"] = lambda: runtime.clock.time() - runtime.stats.started_at


def readiness(runtime: SiteRuntime) -> tuple[bool, str]:
    """``/readyz``: the site broker connected, the uplink working (connected to the core
    broker; its spool taking summaries: no full disk, no error) and no pipeline isolated;
    the reason names every problem."""
    if runtime.replaying:
        return True, "replaying a recording"
    problems = []
    link = runtime.site_link
    if link is None or not link.is_up:
        why = f" ({link.last_error})" if link is not None and link.last_error else ""
        problems.append(f"site broker not connected{why}")
    uplink_ok, uplink_why = (False, "uplink not started")
    if runtime.uplink is not None:
        uplink_ok, uplink_why = runtime.uplink.ready()
    if not uplink_ok:
        problems.append(uplink_why)
    problems += [
        f"pipeline {slot.name} isolated: {slot.isolated}"
        for slot in runtime.slots
        if slot.isolated is not None
    ]
    if problems:
        return False, "; ".join(problems)
    return True, f"ok: site broker up, {uplink_why}"


def status_document(runtime: SiteRuntime) -> dict[str, Any]:
    """``/status``: the site's identity, revision, links, checkpoints and figures."""
    checkpointer = runtime.checkpointer
    return {
        "site_id": runtime.config.site_id,
        "version": __version__,
        "config_hash": runtime.loaded.config_hash,
        "image": image_info(),
        "revision": runtime.revision.id,
        "fleet": runtime.fleet.status(),
        "ready": runtime.ready()[0],
        "site_broker": runtime.site_link.state.value if runtime.site_link else "none",
        "uplink_broker": runtime.uplink_link.state.value if runtime.uplink_link else "none",
        "checkpoint": checkpointer.status() if checkpointer else {"enabled": False},
        **runtime.stats.snapshot(),
    }
