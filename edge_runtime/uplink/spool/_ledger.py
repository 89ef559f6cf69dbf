"""The spool's side ledger: what the spool must still know when its database file is damaged.

``<spool file>.ledger`` sits next to the database and holds three numbers, as JSON:

``reserved``
    Every sequence number the spool has committed, or may commit before the ledger is written
    again, is below it. The writer raises it, in blocks of :data:`BLOCK` numbers, *before* the
    commit that would pass it: one extra write per block, not per group commit.
``committed``
    The database's next sequence number when the ledger was written (every number below it
    was committed).
``live``
    The pending records when the ledger was written.

The writer writes it on open, before a commit that passes ``reserved``, at most once per
maintenance round (``maintenance_interval_s``, and on ``maintain()``) when ``committed`` or
``live`` changed, and on a clean close. Each write is atomic: a temporary file is written and
fsynced, renamed over the ledger, and the folder is fsynced.

What is exact and what can be off:

* The next sequence number never goes back. On a healthy open the spool continues from the
  database's own state; after damage it continues from the larger of ``reserved`` and the
  highest recovered number + 1. Both are exact lower bounds, so numbers are never handed out
  twice; after damage about one block of numbers is skipped (the core sees a gap).
* Damage found while the spool runs (a read or a commit fails) is counted against the running
  spool's own figures: pending records before minus records recovered, exact.
* Damage found on open is counted as the pending records before the damage minus the records
  recovered. "Before" is whichever saw the later commit: the damaged file's own state row, when
  SQLite can still read it (exact as of that commit), or the ledger's ``live``. The ledger is
  exact when current: after a clean close, after ``maintain()``, or when nothing was appended,
  acknowledged or dropped since the last maintenance round. After a crash it can be off by what
  changed in the last maintenance round before the crash (between a commit and the next ledger
  update): records appended then and lost are not counted, records acknowledged then are
  counted as lost.
* A database that lost commits without looking damaged (its WAL overwritten, an old copy
  restored) is noticed when its next sequence number is below ``committed``; the records
  between the two are counted as lost (an upper bound: some of them may have been sent).
* A missing ledger (a new spool) knows nothing: the spool continues from the database. An
  unreadable one is damage of its own: when the database's numbers are lost too, the spool
  continues from a floor derived from the wall clock (microseconds since 1970), far above any
  number it can have used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.uplink.spool.errors import SpoolError

__all__ = ["BLOCK", "Ledger", "LedgerEntry", "clock_floor", "ledger_path"]

log = logging.getLogger(__name__)

BLOCK = 10_000
"""Sequence numbers reserved per write of the ledger."""

_FORMAT = 1


def ledger_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".ledger")


def clock_floor() -> int:
    """A sequence number above any a spool can have used: microseconds since 1970."""
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    reserved: int
    committed: int
    live: int


class Ledger:
    """The ledger file of one spool (only the writer thread uses it)."""

    def __init__(self, path: Path, block: int = BLOCK) -> None:
        self.path = path
        self.block = block
        self.entry: LedgerEntry | None = None  # as last read or written
        self.unreadable = False  # the file exists but could not be read

    def load(self) -> LedgerEntry | None:
        """Read the ledger; None when it is missing or unreadable (``unreadable`` says which)."""
        self.entry, self.unreadable = None, False
        try:
            doc = json.loads(self.path.read_bytes())
            entry = LedgerEntry(int(doc["reserved"]), int(doc["committed"]), int(doc["live"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error(
                "spool ledger %s is unreadable (%s); its numbers are lost with it", self.path, exc
            )
            self.unreadable = True
            return None
        self.entry = entry
        return entry

    @property
    def reserved(self) -> int:
        return 0 if self.entry is None else self.entry.reserved

    def write(self, entry: LedgerEntry) -> None:
        """Replace the ledger atomically and durably; SpoolError when the disk refuses."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = json.dumps(
            {
                "format": _FORMAT,
                "reserved": entry.reserved,
                "committed": entry.committed,
                "live": entry.live,
            }
        ).encode()
        try:
            with tmp.open("wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            folder = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise SpoolError(f"cannot write the ledger: {exc}", path=str(self.path)) from exc
        self.entry = entry
        self.unreadable = False

    def start(self, committed: int, live: int) -> None:
        """On open (or after a rebuild): the database's figures, and the next block reserved."""
        self.write(LedgerEntry(max(self.reserved, committed + self.block), committed, live))

    def cover(self, end_seq: int, committed: int, live: int) -> None:
        """Make sure numbers below ``end_seq`` are reserved: before a commit that uses them."""
        if end_seq > self.reserved:
            self.write(LedgerEntry(end_seq + self.block, committed, live))

    def note(self, committed: int, live: int) -> bool:
        """Record the committed mark and the pending records if they changed; whether it wrote."""
        entry = self.entry
        if entry is not None and (entry.committed, entry.live) == (committed, live):
            return False
        reserved = max(self.reserved, committed)
        self.write(LedgerEntry(reserved, committed, live))
        return True
