"""A site's ``[fleet]`` table: the group it belongs to and how it reports to the core."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["FleetConfig"]


class FleetConfig(BaseModel):
    """Fleet management: signed revision bundles from the operator, signed heartbeats."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="The group of sites this site belongs to. A bundle names the group it is "
        "for; a bundle for another group is refused. Needs [identity]: bundles are verified "
        "with its operator.pub and heartbeats signed with its site.key.",
    )
    heartbeat_interval_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Seconds between two signed heartbeats on edge/<site_id>/heartbeat (QoS 1, "
        "core broker). A heartbeat also goes out at once when a bundle's outcome changes.",
    )
    health_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="After a local reload (SIGHUP), how long the site waits to be healthy "
        "(ready, no pipeline isolated, every new or changed pipeline processing input) before "
        "it rolls back to the config it ran before. A bundle brings its own health_timeout_s.",
    )
