"""A site profile: what a site will carry, for ``edge-runtime size PROFILE.toml``.

Example (see ``examples/sizing/mixed-sensors.toml``)::

    name = "queen-st"
    headroom = 0.3
    outage_h = 24

    [[sensors]]
    name = "air"
    count = 2000
    msg_per_s = 1.0
    window_s = 60

    [[cameras]]
    name = "corners"
    count = 2
    width = 768
    height = 576
    fps = 5
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_runtime.errors import ConfigError

__all__ = ["CameraGroup", "ModelVariant", "SensorGroup", "SiteProfile", "load_profile"]

ModelVariant = Literal["fp32", "int8"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SensorGroup(_Model):
    """Sensors of one kind: how many, how often they publish and what a message holds."""

    name: str = Field(description="A name for this group, used in the answer's breakdown.")
    count: int = Field(ge=1, description="Number of sensors (devices) in the group.")
    msg_per_s: float = Field(gt=0, description="Messages per second each sensor publishes.")
    format: Literal["json", "senml"] = Field(
        default="json",
        description="Payload: 'json' (one reading per message, key from the topic) or 'senml' "
        "(a SenML pack of readings_per_msg readings).",
    )
    readings_per_msg: int = Field(
        default=1, ge=1, description="Readings in one message (SenML packs carry several)."
    )
    keys_per_sensor: int = Field(
        default=1,
        ge=1,
        description="Distinct series (window keys) per sensor, e.g. the SenML names of a pack.",
    )
    window_s: float = Field(default=60.0, gt=0, description="Tumbling window size in seconds.")
    pipelines: int = Field(
        default=1,
        ge=1,
        description="Windows pipelines that each message goes through (each keeps its own "
        "windows and emits its own summaries).",
    )

    @model_validator(mode="after")
    def _shape(self) -> SensorGroup:
        if self.format == "json" and (self.readings_per_msg != 1 or self.keys_per_sensor != 1):
            raise ValueError(
                "a 'json' sensor message carries one reading of one key: set format = 'senml' "
                "for several readings (readings_per_msg) or keys (keys_per_sensor) per message"
            )
        if self.keys_per_sensor > self.readings_per_msg:
            raise ValueError("keys_per_sensor cannot exceed readings_per_msg (one pack names them)")
        return self

    @property
    def msgs_per_s(self) -> float:
        return self.count * self.msg_per_s

    @property
    def readings_per_s(self) -> float:
        return self.msgs_per_s * self.readings_per_msg

    @property
    def keys(self) -> int:
        return self.count * self.keys_per_sensor

    @property
    def summaries_per_s(self) -> float:
        """Summaries per second over all pipelines: one per key, window and pipeline, for the
        windows that hold at least one reading."""
        per_key_rate = self.readings_per_s / self.keys
        share = min(1.0, per_key_rate * self.window_s)
        return self.keys * share / self.window_s * self.pipelines


class CameraGroup(_Model):
    """Cameras of one kind: resolution, frame rate and detector model variant."""

    name: str = Field(description="A name for this group, used in the answer's breakdown.")
    count: int = Field(ge=1, description="Number of cameras.")
    width: int = Field(ge=16, description="Frame width in pixels.")
    height: int = Field(ge=16, description="Frame height in pixels.")
    fps: float = Field(gt=0, description="Frames per second analysed per camera.")
    model: ModelVariant = Field(
        default="fp32", description="Detector variant: 'fp32' or 'int8' (NanoDet-m)."
    )
    window_s: float = Field(default=60.0, gt=0, description="Summary window in seconds.")

    @property
    def frames_per_s(self) -> float:
        return self.count * self.fps

    @property
    def pixels(self) -> int:
        return self.width * self.height


class SiteProfile(_Model):
    """What a site carries, and what it must ride out."""

    name: str = Field(default="site", description="Name of the site or profile.")
    headroom: float = Field(
        default=0.3,
        ge=0,
        description="Spare capacity added to CPU, memory, disk and bandwidth (0.3 = 30%).",
    )
    outage_h: float = Field(
        default=24.0, ge=0, description="Longest uplink outage to ride out, in hours."
    )
    drain_h: float = Field(
        default=1.0,
        gt=0,
        description="Time allowed to send the outage's backlog once the uplink is back, in "
        "hours, while live summaries keep flowing.",
    )
    sensors: list[SensorGroup] = Field(default_factory=list, description="Sensor groups.")
    cameras: list[CameraGroup] = Field(default_factory=list, description="Camera groups.")

    @model_validator(mode="after")
    def _names(self) -> SiteProfile:
        names = [g.name for g in self.sensors] + [g.name for g in self.cameras]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"group names {doubled} are used twice; give each group its own")
        if not names:
            raise ValueError("a profile needs at least one [[sensors]] or [[cameras]] group")
        return self


def load_profile(path: str | Path) -> SiteProfile:
    """Read and validate a profile TOML file; errors name the file and the field."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the profile: {exc}", source=str(path)) from exc
    try:
        return SiteProfile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(first["msg"], source=str(path), field=where) from exc
