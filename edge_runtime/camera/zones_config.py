"""Pydantic configuration of the per-camera analytics: windows, zones, lines and alert rules."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge_runtime.camera.tracking import TrackerConfig

__all__ = [
    "AlertRuleConfig",
    "CameraAnalyticsConfig",
    "Coords",
    "LineConfig",
    "ZoneConfig",
]

_FROZEN = ConfigDict(extra="forbid", frozen=True)
_NAME = r"^[A-Za-z0-9_-]{1,64}$"

Coords = Literal["pixel", "normalized"]
Point = tuple[float, float]


class ZoneConfig(BaseModel):
    """A polygon; an object is inside when its anchor point (see ``anchor``) is."""

    model_config = _FROZEN

    name: str = Field(pattern=_NAME, description="Zone name, used in stat keys and alerts.")
    polygon: tuple[Point, ...] = Field(
        min_length=3, description="Corner points (x, y) in order, at least three."
    )
    coords: Coords = Field(
        default="pixel",
        description='"pixel" for frame pixels, "normalized" for fractions (0-1) of the frame '
        "width and height.",
    )
    classes: tuple[str, ...] | None = Field(
        default=None,
        description="Classes whose occupancy is reported; all analytics classes when omitted.",
    )


class LineConfig(BaseModel):
    """A counting line from ``start`` to ``end``.

    Walking from ``start`` to ``end`` in the image (y pointing down), side A is on the left and
    side B on the right.  A track whose anchor point crosses the segment from A to B counts as
    ``in`` (a_to_b); from B to A as ``out`` (b_to_a).
    """

    model_config = _FROZEN

    name: str = Field(pattern=_NAME, description="Line name, used in stat keys.")
    start: Point = Field(description="First end point (x, y).")
    end: Point = Field(description="Second end point (x, y).")
    coords: Coords = Field(
        default="pixel", description='"pixel" or "normalized" (fractions of the frame size).'
    )
    classes: tuple[str, ...] | None = Field(
        default=None,
        description="Classes whose crossings are counted; all analytics classes when omitted.",
    )

    @model_validator(mode="after")
    def _check_length(self) -> LineConfig:
        if self.start == self.end:
            raise ValueError(f"line {self.name!r}: start and end are the same point")
        return self


class AlertRuleConfig(BaseModel):
    """Raise an alert when a per-frame value crosses a threshold.

    The rule fires once when its condition has held for ``min_duration_s``; it re-arms when the
    condition stops holding, and never fires twice within ``cooldown_s``.
    """

    model_config = _FROZEN

    name: str = Field(pattern=_NAME, description="Rule name, carried by its alerts.")
    metric: Literal["zone_occupancy", "class_count"] = Field(
        description='"zone_occupancy": objects of class_name inside zone; "class_count": '
        "objects of class_name in the whole frame."
    )
    class_name: str = Field(default="person", description="Class the rule counts.")
    zone: str | None = Field(
        default=None, description="Zone name; required for zone_occupancy, unused otherwise."
    )
    op: Literal[">=", ">", "<=", "<"] = Field(
        default=">=", description="Comparison of the value against threshold."
    )
    threshold: float = Field(description="Value the metric is compared with.")
    min_duration_s: float = Field(
        default=0.0, ge=0, description="How long the condition must hold before firing."
    )
    cooldown_s: float = Field(
        default=60.0, ge=0, description="Least time between two alerts of this rule."
    )

    @model_validator(mode="after")
    def _check_zone(self) -> AlertRuleConfig:
        if self.metric == "zone_occupancy" and self.zone is None:
            raise ValueError(f"alert {self.name!r}: metric zone_occupancy needs a zone")
        return self


class CameraAnalyticsConfig(BaseModel):
    """What one camera's analytics compute."""

    model_config = _FROZEN

    window_s: float = Field(
        default=60.0, gt=0, description="Length of the tumbling statistics window, in seconds."
    )
    classes: tuple[str, ...] = Field(
        default=("person", "bicycle", "car", "motorcycle", "bus", "truck"),
        min_length=1,
        description="Class names that are counted; others are ignored.",
    )
    anchor: Literal["bottom_center", "center"] = Field(
        default="bottom_center",
        description="Point of a box tested against zones and lines (bottom centre = feet).",
    )
    tracker: TrackerConfig = Field(
        default_factory=TrackerConfig, description="Multi-object tracker settings."
    )
    zones: tuple[ZoneConfig, ...] = Field(default=(), description="Occupancy zones.")
    lines: tuple[LineConfig, ...] = Field(default=(), description="Counting lines.")
    alerts: tuple[AlertRuleConfig, ...] = Field(default=(), description="Threshold alerts.")

    @model_validator(mode="after")
    def _check_references(self) -> CameraAnalyticsConfig:
        for kind, names in (
            ("zone", [z.name for z in self.zones]),
            ("line", [ln.name for ln in self.lines]),
            ("alert", [a.name for a in self.alerts]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind} names must be unique, repeated: {dupes}")
        known = set(self.classes)
        zone_names = {z.name for z in self.zones}
        used = [(z.name, z.classes) for z in self.zones] + [
            (ln.name, ln.classes) for ln in self.lines
        ]
        for name, classes in used:
            extra = sorted(set(classes or ()) - known)
            if extra:
                raise ValueError(f"{name!r} uses classes {extra} not listed in classes")
        for rule in self.alerts:
            if rule.class_name not in known:
                raise ValueError(
                    f"alert {rule.name!r}: class {rule.class_name!r} is not listed in classes"
                )
            if rule.metric == "zone_occupancy" and rule.zone not in zone_names:
                raise ValueError(
                    f"alert {rule.name!r}: zone {rule.zone!r} is not defined "
                    f"(zones: {sorted(zone_names)})"
                )
        return self
