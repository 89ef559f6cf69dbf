"""Per-unit costs measured on one machine by ``edge-runtime size --calibrate``.

Stored as JSON (default ``$XDG_DATA_HOME/edge-runtime/calibration.json``, i.e.
``~/.local/share/edge-runtime/calibration.json``; ``--calibration PATH`` for another file). Each
figure is what the real site runtime (``edge-runtime run``, a real mosquitto, the real model and
video) used in a short stress test; see :mod:`edge_runtime.sizing.calibrate` for how each is
derived.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_runtime.errors import ConfigError
from edge_runtime.sizing.profile import ModelVariant

__all__ = ["CALIBRATION_VERSION", "Calibration", "CameraCost", "default_calibration_path"]

CALIBRATION_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraCost(_Model):
    """One camera stress test: a resolution and model variant."""

    width: int = Field(description="Frame width of the test, pixels.")
    height: int = Field(description="Frame height of the test, pixels.")
    model: ModelVariant = Field(description="Detector variant of the test.")
    cpu_s_per_frame: float = Field(ge=0, description="Runtime CPU-seconds per analysed frame.")
    rss_mb_per_camera: float = Field(
        description="Resident memory per camera beyond the camera pipeline's fixed share, MiB."
    )
    fps_measured: float = Field(ge=0, description="Frames analysed per second during the test.")


class Calibration(_Model):
    """Per-unit costs of the site runtime on one machine."""

    version: int = Field(default=CALIBRATION_VERSION, description="File format version.")
    created_at: float = Field(description="Unix time of the calibration.")
    host: str = Field(description="Host name of the machine measured.")
    cpus: int = Field(description="CPUs the machine had.")
    quick: bool = Field(description="True for a quick (short, less accurate) calibration.")
    idle_cores: float = Field(ge=0, description="CPU of an idle runtime (ticks, sender), cores.")
    base_rss_mb: float = Field(description="Resident memory of a runtime with no load, MiB.")
    cpu_s_per_msg: float = Field(
        ge=0, description="CPU-s per one-reading JSON message through one windows pipeline."
    )
    cpu_s_per_extra_reading: float = Field(
        ge=0, description="CPU-s per reading beyond the first in a SenML pack."
    )
    cpu_s_per_extra_pipeline_msg: float = Field(
        ge=0, description="CPU-s per message for each further windows pipeline it goes to."
    )
    cpu_s_per_summary: float = Field(
        ge=0,
        description="CPU-s per summary: window close, durable spool append (group commit), "
        "sending to the core.",
    )
    broker_cpu_s_per_msg: float = Field(
        ge=0, description="Site broker (mosquitto) CPU-s per sensor message delivered."
    )
    broker_cpu_s_per_frame: float = Field(
        ge=0, description="Site broker (mosquitto) CPU-s per camera frame delivered (JPEG)."
    )
    rss_mb_per_key: float = Field(
        description="Resident memory per window key (series) with its open window, MiB."
    )
    bytes_per_buffered_reading: float = Field(
        description="Memory per reading held in an open window until it closes, bytes."
    )
    camera_fixed_rss_mb: dict[str, float] = Field(
        default_factory=dict,
        description="Resident memory of a camera pipeline with its model loaded, before any "
        "camera, per model variant, MiB.",
    )
    cameras: list[CameraCost] = Field(default_factory=list, description="Camera stress tests.")
    spool_bytes_per_summary: float = Field(
        description="Spool disk bytes per pending summary (SQLite file and WAL)."
    )
    spool_bytes_per_compacted_summary: float = Field(
        description="Spool disk bytes per summary after compaction into coarse windows."
    )
    uplink_bytes_per_summary: float = Field(
        description="Bytes on the wire per summary sent to the core (envelope, msgpack, MQTT)."
    )

    @classmethod
    def load(cls, path: Path) -> Calibration:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ConfigError(
                "no calibration here: run 'edge-runtime size --calibrate' on the machine to "
                "size for (or pass --calibration PATH)",
                source=str(path),
            ) from exc
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise ConfigError(
                f"not a valid calibration file ({exc.errors()[0]['msg']}); run "
                "'edge-runtime size --calibrate' again",
                source=str(path),
            ) from exc

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def default_calibration_path() -> Path:
    """``$XDG_DATA_HOME/edge-runtime/calibration.json`` (``~/.local/share`` when unset)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "edge-runtime" / "calibration.json"
