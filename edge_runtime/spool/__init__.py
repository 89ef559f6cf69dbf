"""Durable store-and-forward spool: a site never loses a summary it has accepted.

:class:`Spool` stores envelopes in SQLite (WAL, ``synchronous=FULL``) through one writer
thread with group commit, assigns the per-site sequence numbers, keeps the file under a size
cap (compacting old summaries into coarser windows before dropping anything) and repairs a
damaged file on open. :class:`Sender` drains it to the core broker with QoS 1, marking records
sent only after the PUBACK.
"""

from edge_runtime.spool._encode import SiteWrap
from edge_runtime.spool.config import CompactionConfig, SenderConfig, SpoolConfig
from edge_runtime.spool.core import SpoolCore, Wrap
from edge_runtime.spool.errors import SpoolClosedError, SpoolError, SpoolFullError
from edge_runtime.spool.records import Lane, Priority, SpoolRecord
from edge_runtime.spool.sender import Publisher, Sender, SenderStats
from edge_runtime.spool.spool import Spool
from edge_runtime.spool.stats import SpoolStats

__all__ = [
    "CompactionConfig",
    "Lane",
    "Priority",
    "Publisher",
    "Sender",
    "SenderConfig",
    "SenderStats",
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
