"""Durable store-and-forward spool: a site never loses a summary it has accepted.

:class:`Spool` (asyncio) and :class:`SyncSpool` (blocking, thread-safe) store envelopes in
SQLite (WAL, ``synchronous=FULL``) through one writer thread with group commit, assign the
per-site sequence numbers, keep the file under a size cap (compacting old summaries into
coarser windows before dropping anything) and rebuild a damaged file on open with SQLite's own
reads, counting what was lost against a small side ledger (``<path>.ledger``). The uplink's
sender drains it to the core broker.
"""

from edge_runtime.uplink.spool._encode import SiteWrap
from edge_runtime.uplink.spool.config import CompactionConfig, SpoolConfig
from edge_runtime.uplink.spool.errors import SpoolClosedError, SpoolError, SpoolFullError
from edge_runtime.uplink.spool.records import Lane, Priority, SpoolRecord
from edge_runtime.uplink.spool.spool import Spool
from edge_runtime.uplink.spool.stats import SpoolStats
from edge_runtime.uplink.spool.sync import SyncSpool, Wrap

__all__ = [
    "CompactionConfig",
    "Lane",
    "Priority",
    "SiteWrap",
    "Spool",
    "SpoolClosedError",
    "SpoolConfig",
    "SpoolError",
    "SpoolFullError",
    "SpoolRecord",
    "SpoolStats",
    "SyncSpool",
    "Wrap",
]
