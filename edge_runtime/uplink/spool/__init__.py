"""Durable store-and-forward spool: a site never loses a summary it has accepted.

:class:`Spool` (asyncio) and :class:`SyncSpool` (blocking, thread-safe) store envelopes in
SQLite (WAL, ``synchronous=FULL``) through one writer thread with group commit, assign the
per-site sequence numbers, keep the file under a size cap (compacting old summaries into
coarser windows before dropping anything) and rebuild a damaged file on open with SQLite's own
reads, counting what was lost against a small side ledger (``<path>.ledger``). The uplink's
sender drains it to the core broker.

Sequence numbers have no holes the core would have to report. The writer numbers each append
from the state row's ``next_seq``, and the transaction that commits a group's rows moves that
mark on, so a group lost in a crash loses its numbers together with its records and the next
group is given them again: after a kill -9 with the database intact, numbering continues from
the last committed number + 1 exactly. Only a damaged or lost database continues from the
ledger's reserved mark, far enough ahead never to hand a number out twice; that gap is honest
and its records are counted as ``corrupt_records``. The spool numbers appends, not windows: a
window emitted again (restored from a checkpoint after a crash) is a new append with a new
number; the core recognises it by its envelope id (a duplicate, or an earlier revision it
supersedes) and counts that number as received, never as missing.
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
