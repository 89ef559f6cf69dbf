"""The size cap: compaction into coarser windows first, then drops (or refusal) per policy.

The writer thread calls :meth:`Cap.check` after each commit and maintenance round; the work
runs in transactions of its own (see :mod:`edge_runtime.uplink.spool._maintenance`).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Collection
from functools import partial
from pathlib import Path
from typing import Protocol, TypeVar

from edge_runtime.uplink.spool._maintenance import Delta, MergeFn, compact, drop_oldest, load_merge
from edge_runtime.uplink.spool.config import SpoolConfig
from edge_runtime.uplink.spool.records import PRIORITY_SHIFT, Priority
from edge_runtime.uplink.spool.stats import Figures

__all__ = ["Cap", "Transact"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_COMPACT_CHUNK = 5000
_BUDGET_S = 0.25


class Transact(Protocol):
    """Runs ``work`` in a transaction of its own and applies its delta to the figures."""

    def __call__(self, work: Callable[[sqlite3.Connection, Delta], T]) -> T: ...


class Cap:
    """Keeps the file under ``max_bytes``; ``full`` while ``reject_new`` refuses appends."""

    def __init__(self, config: SpoolConfig, path: Path, merge: MergeFn | None) -> None:
        self.config = config
        self.path = path
        self.full = False
        self._merge = merge
        self._merge_loaded = merge is not None
        self._cursor = Priority.LIVE << PRIORITY_SHIFT
        self._exhausted = False
        self._enforcing = False

    def low_water(self) -> int:
        return int(self.config.max_bytes * self.config.low_water)

    def check(
        self, figures: Figures, leased: Collection[int], transact: Transact, now: float
    ) -> None:
        """Enforce the cap when the file is past it (or still full); ``now``: wall clock."""
        if self._enforcing:  # the transactions below call back here
            return
        used = figures.used_bytes
        if used <= self.low_water():
            self.full = False
            self._cursor = Priority.LIVE << PRIORITY_SHIFT  # next time from the start
            self._exhausted = False
            return
        if used <= self.config.max_bytes and not self.full:
            return
        self._enforcing = True
        try:
            self._enforce(figures, leased, transact, now)
        finally:
            self._enforcing = False

    def _enforce(
        self, figures: Figures, leased: Collection[int], transact: Transact, now: float
    ) -> None:
        """Bring the file under the low-water mark: compaction first, then drops or refusal.

        Works for at most ``_BUDGET_S`` at a time; the next commit or maintenance round goes
        on where it stopped.
        """
        target = self.low_water()
        deadline = time.perf_counter() + _BUDGET_S
        compaction = self.config.compaction
        merge = self._merge_fn() if compaction.enabled else None
        while merge is not None and not self._exhausted and figures.used_bytes > target:
            if time.perf_counter() > deadline:
                return
            outcome = transact(
                partial(
                    compact,
                    leased=leased,
                    cursor=self._cursor,
                    cutoff=now - compaction.min_age_s,
                    compact_to_s=compaction.compact_to_s,
                    merge=merge,
                    chunk=_COMPACT_CHUNK,
                )
            )
            self._cursor = outcome.cursor
            self._exhausted = outcome.exhausted
        if figures.used_bytes <= target:
            return
        if self.config.drop_policy == "reject_new":
            if not self.full:
                cap = self.config.max_bytes
                log.error("spool %s is full (%d bytes); refusing appends", self.path, cap)
            self.full = True
            return
        while figures.used_bytes > target and time.perf_counter() < deadline:
            dropped = transact(
                partial(drop_oldest, leased=leased, need_bytes=figures.used_bytes - target)
            )
            if not dropped:
                break
            log.warning("spool %s at its cap: dropped the %d oldest records", self.path, dropped)

    def _merge_fn(self) -> MergeFn | None:
        if not self._merge_loaded:
            self._merge_loaded = True
            self._merge = load_merge()
            if self._merge is None:
                log.warning(
                    "spool: edge_runtime.aggregation.stats.merge_stats is not available; "
                    "compaction is skipped and the cap is enforced by drop_policy alone"
                )
        return self._merge
