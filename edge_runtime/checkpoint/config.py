"""The ``[checkpoint]`` table of a site config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CheckpointConfig"]


class CheckpointConfig(BaseModel):
    """How pipeline state survives restarts and crashes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=True,
        description="Checkpoint the state of pipelines that support it (their snapshot()) and "
        "acknowledge QoS 1 input to the site broker only once a checkpoint covering it is on "
        "disk. A clean stop (SIGTERM) then checkpoints open windows instead of flushing them, "
        "and the next start carries on with them; a crash loses nothing the broker still "
        "holds. Exactly-once results after a crash need site_broker.transport = 'gmqtt' and a "
        "persistent session (clean_start = false), the defaults; with another transport the "
        "checkpoint still carries open windows over clean restarts. Pipelines without the "
        "state API flush on a clean stop either way. false: a clean stop flushes open windows "
        "as partial summaries and a crash loses them; what a stop flushed and what the next "
        "run emits of the same windows are then separate parts, each flagged incomplete with "
        "attrs.part (the run's start number, counted in data_dir/checkpoint/starts) and its "
        "own revision, which the core stores side by side. Switched from true to false "
        "between runs, the next start restores the open windows of the last checkpoint once "
        "and removes the file.",
    )
    interval_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Longest time between two checkpoints while input flows (seconds). Input "
        "waits this long at most for its PUBACK; a crash replays at most this much from the "
        "broker.",
    )
