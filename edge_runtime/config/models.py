"""The site configuration model: one TOML file per site, validated by pydantic.

Every field carries a description; ``docs/config-reference.md`` is generated from them
(``edge-runtime config-reference``).  Secrets (broker passwords) are named by environment
variable or file here and resolved by the loader; they are never stored in the file or logged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge_runtime.checkpoint.config import CheckpointConfig
from edge_runtime.fleet.config import FleetConfig
from edge_runtime.identity.config import IdentityConfig
from edge_runtime.mqtt.config import BrokerConfig, TLSConfig
from edge_runtime.ops.config import OpsConfig
from edge_runtime.sources.config import IngestConfig, OverflowPolicy
from edge_runtime.uplink.config import UplinkConfig
from edge_runtime.uplink.spool.config import SpoolConfig

__all__ = [
    "BrokerConfig",
    "CheckpointConfig",
    "FleetConfig",
    "IngestConfig",
    "OpsConfig",
    "OverflowPolicy",
    "SiteConfig",
    "TLSConfig",
    "UplinkConfig",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteConfig(_Model):
    """One site: its identity, its brokers and its pipelines."""

    site_id: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Unique id of this site within the city; goes into every envelope.",
    )
    data_dir: Path = Field(
        default=Path("./var/edge-runtime"),
        description="Directory for the runtime's state (sequence numbers, the spool). Relative "
        "paths are resolved against the config file's folder.",
    )
    site_broker: BrokerConfig = Field(
        default_factory=BrokerConfig, description="The site's own broker that sensors publish to."
    )
    uplink: UplinkConfig = Field(
        default_factory=UplinkConfig, description="The uplink to the core."
    )
    identity: IdentityConfig | None = Field(
        default=None,
        description="The site's identity (see 'edge-runtime provision'): signed uplink, signed "
        "acknowledgements. Unset: unsigned, as a core without a registry expects.",
    )
    fleet: FleetConfig | None = Field(
        default=None,
        description="Fleet management (needs [identity]): the site takes signed revision "
        "bundles for its group from the core broker, applies them without a restart, rolls "
        "back what fails health and reports its revision in signed heartbeats. Unset: the site "
        "runs its local config only (SIGHUP still reloads it).",
    )
    ingest: IngestConfig = Field(default_factory=IngestConfig, description="Ingest settings.")
    ops: OpsConfig = Field(default_factory=OpsConfig, description="Metrics, health and logs.")
    spool: SpoolConfig = Field(
        default_factory=SpoolConfig,
        description="The durable store-and-forward spool (used when uplink.store_and_forward).",
    )
    checkpoint: CheckpointConfig = Field(
        default_factory=CheckpointConfig,
        description="Checkpoints of pipeline state (open windows) in data_dir/checkpoint, for "
        "restarts and crashes.",
    )
    plugin_paths: list[Path] = Field(
        default_factory=list,
        description="Extra folders whose *.py modules define pipeline plugins (relative to the "
        "config file). Plugins installed as packages are found through the "
        "'edge_runtime.pipelines' entry-point group without this.",
    )
    pipelines: list[dict[str, Any]] = Field(
        min_length=1,
        description="The pipelines ([[pipelines]] tables). Each has a 'type' naming its plugin; "
        "the plugin's own config model validates the rest (see the per-plugin sections).",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> SiteConfig:
        names = [p.get("name") for p in self.pipelines]
        dupes = sorted({str(n) for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"pipeline names must be unique; repeated: {dupes}")
        if self.ops.shutdown_timeout_s <= self.uplink.drain_timeout_s:
            raise ValueError(
                f"ops.shutdown_timeout_s ({self.ops.shutdown_timeout_s:g}) must exceed "
                f"uplink.drain_timeout_s ({self.uplink.drain_timeout_s:g}): the drain is part "
                "of the shutdown"
            )
        return self
