"""Durable store-and-forward spool: a site never loses a summary it has accepted.

:class:`Spool` stores envelopes in SQLite (WAL, ``synchronous=FULL``) through one writer
thread with group commit, assigns the per-site sequence numbers, keeps the file under a size
cap (compacting old summaries into coarser windows before dropping anything) and repairs a
damaged file on open. The uplink's sender drains it to the core broker.
"""

from edge_runtime.uplink.spool._encode import SiteWrap
from edge_runtime.uplink.spool.config import CompactionConfig, SpoolConfig
from edge_runtime.uplink.spool.core import SpoolCore, Wrap
from edge_runtime.uplink.spool.errors import SpoolClosedError, SpoolError, SpoolFullError
from edge_runtime.uplink.spool.records import Lane, Priority, SpoolRecord
from edge_runtime.uplink.spool.spool import Spool
from edge_runtime.uplink.spool.stats import SpoolStats

__all__ = [
    "CompactionConfig",
    "Lane",
    "Priority",
    "SiteWrap",
    "Spool",
    "SpoolClosedError",
    "SpoolConfig",
    "SpoolCore",
    "SpoolError",
    "SpoolFullError",
    "SpoolRecord",
    "SpoolStats",
    "Wrap",
]
