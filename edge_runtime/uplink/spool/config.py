"""Configuration models of the spool (pydantic v2, ``extra="forbid"``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["CompactionConfig", "SpoolConfig"]

_MIB = 1024 * 1024


class CompactionConfig(BaseModel):
    """How old summaries are merged into coarser windows when the spool reaches its cap."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=True,
        description=(
            "Merge old summaries of a stream into coarser windows before dropping anything "
            "when the spool reaches max_bytes."
        ),
    )
    compact_to_s: float = Field(
        default=3600.0,
        gt=0,
        description=(
            "Width in seconds of the coarse windows: consecutive pending summaries of one "
            "stream whose window_start falls in the same compact_to_s bucket become one summary."
        ),
    )
    min_age_s: float = Field(
        default=300.0,
        ge=0,
        description=(
            "Only summaries created at least this many seconds ago are compacted, so fresh "
            "data keeps its full resolution. A site raises it to its pipelines' longest "
            "correction horizon (windows with late_policy 'correct': allowed_lateness_s + "
            "correction_horizon_s), so that no correction meets its window already compacted."
        ),
    )


class SpoolConfig(BaseModel):
    """The durable store-and-forward spool of a site."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(
        default="spool/spool.db",
        min_length=1,
        description=(
            "SQLite file of the spool, relative to the runtime's data_dir (an absolute path "
            "is used as is). Its folder is created when missing. A small ledger file "
            "<path>.ledger beside it keeps the sequence high-water mark and the pending "
            "record count, so that numbers never go back and losses to damage are counted."
        ),
    )
    max_bytes: int = Field(
        default=1024 * _MIB,
        ge=64 * 1024,
        description=(
            "Size cap in bytes of the database pages in use. At the cap, old summaries are "
            "compacted first, then records are dropped (or refused) per drop_policy."
        ),
    )
    low_water: float = Field(
        default=0.9,
        gt=0.1,
        lt=1.0,
        description=(
            "Once the cap is hit, compaction and drops go on until the database uses at most "
            "this fraction of max_bytes, so the cap is not hit again on the next commit."
        ),
    )
    ttl_s: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="Records older than this (by envelope created_at) are dropped as expired_ttl.",
    )
    commit_interval_ms: float = Field(
        default=10.0,
        ge=0,
        le=50,
        description=(
            "Group commit: the longest an append waits for other appends to share its "
            "transaction and fsync. 0 commits as soon as the writer thread is free. A group "
            "that already holds 1,000 records commits once no more work arrived for 0.25 ms."
        ),
    )
    max_batch: int = Field(
        default=20_000,
        ge=1,
        description="Most records written in one transaction (one fsync).",
    )
    compaction: CompactionConfig = Field(
        default_factory=CompactionConfig,
        description="Compaction of old summaries into coarser windows when the cap is reached.",
    )
    drop_policy: Literal["drop_oldest", "reject_new"] = Field(
        default="drop_oldest",
        description=(
            "What happens when compaction cannot bring the spool under its cap: drop_oldest "
            "drops the oldest records (backlog class first, alerts last); reject_new refuses "
            "new appends with SpoolFullError until the sender has drained enough."
        ),
    )
    check_on_open: Literal["always", "after_crash", "never"] = Field(
        default="after_crash",
        description=(
            "When to run SQLite's quick_check on open: always, only when the spool was not "
            "closed cleanly (kill, power cut), or never. quick_check reads the whole file "
            "(about 0.5 s per 500 MB). Damage it misses is found when the pages are read, "
            "and the file is rebuilt then."
        ),
    )
    verify_tail_records: int = Field(
        default=1000,
        ge=0,
        description=(
            "Checksums of this many newest records of each priority class are verified on "
            "open; records that fail are cut and counted as corrupt_records."
        ),
    )
    verify_all_on_open: bool = Field(
        default=False,
        description="Verify the checksum of every pending record on open (a full scan).",
    )
    keep_corrupt_files: int = Field(
        default=2,
        ge=0,
        description=(
            "A damaged database is moved aside as <path>.corrupt-<timestamp> and every record "
            "SQLite can still read from it is copied into a fresh one; this many moved-aside "
            "files are kept."
        ),
    )
    maintenance_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="How often the writer thread checks the TTL and refreshes backlog figures.",
    )
    reserve_bytes: int = Field(
        default=32 * _MIB,
        ge=0,
        description=(
            "Disk space held in a reserve file <path>.reserve beside the spool, so that the "
            "spool can go on deleting the records the core acknowledged, and a site can start, "
            "when the disk is full. When the disk fills, new summaries are refused (counted as "
            "disk_full) and half of the reserve is released (the rest at a start on a full "
            "disk); it is made again once the disk has room for it, for the WAL and a quarter "
            "more, and then summaries are taken again. The WAL is checkpointed every "
            "reserve_bytes / 8 (at most every 1000 pages), so that a checkpoint fits in the "
            "released half. 0: no reserve (deletes on a full disk are then kept in memory until "
            "there is room)."
        ),
    )

    @model_validator(mode="after")
    def _check_ages(self) -> SpoolConfig:
        if self.compaction.enabled and self.compaction.min_age_s >= self.ttl_s:
            raise ValueError(
                f"compaction.min_age_s ({self.compaction.min_age_s}) must be below ttl_s "
                f"({self.ttl_s}); otherwise records expire before they can be compacted"
            )
        return self

    def resolve_path(self, data_dir: str | Path) -> Path:
        """The database file for a runtime whose data directory is ``data_dir``."""
        path = Path(self.path)
        return path if path.is_absolute() else Path(data_dir) / path
