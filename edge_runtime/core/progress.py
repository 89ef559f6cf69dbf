"""What the core knows of each site's sequence numbers: missing, duplicate and late, apart.

A site numbers the summaries it accepts from 1 on, without holes (its spool's sequence), so
every number from 1 to the highest seen that the core has not stored is *missing*, whatever
came first. A summary the core already had (same envelope id) is a *duplicate*: counted, never
missing, never stored again. A summary that fills a hole (it arrived after a higher number) is
*late*; one the site flagged as backlog (it waited out an outage) is counted as backlog
received. A summary of a window whose higher revision the core keeps is *superseded*
(replaced, or stale on arrival): counted, never missing. Sequence number 0 (older in-memory
uplinks) is taken but never expected.

Each hole keeps the time it was first seen, so the age of the oldest missing number says how
long the core has been waiting for something (``oldest_missing_age_s``).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["SiteProgress"]


@dataclass
class SiteProgress:
    """Per-site accounting; feed it with :meth:`see` (see the module docstring)."""

    site: str
    received: int = 0
    """Summaries stored (new)."""
    duplicates: int = 0
    superseded: int = 0
    """Summaries a higher revision of their window replaced, or that arrived after it."""
    late: int = 0
    backlog: int = 0
    resent: int = 0
    """Summaries the site flagged as sent again (the core had not acknowledged them)."""
    max_seq: int = 0
    gaps: list[tuple[int, int]] = field(default_factory=list)
    """Inclusive ranges of missing sequence numbers, ascending."""
    gap_since: list[float] = field(default_factory=list)
    """When each gap was first seen (wall clock), parallel to ``gaps``."""
    last_created_at: float = 0.0
    last_received_at: float = 0.0
    replayed: int = 0  # summaries made from a replayed recording (not in the lag)
    last_replayed_created_at: float = 0.0

    def see(self, seqs: Iterable[int], now: float) -> int:
        """Take the sequence numbers of a stored summary; returns how many filled a gap."""
        filled = 0
        for seq in sorted(seqs):
            if seq > self.max_seq:
                if seq > self.max_seq + 1:
                    self.gaps.append((self.max_seq + 1, seq - 1))
                    self.gap_since.append(now)
                self.max_seq = seq
            elif seq >= 1 and self._fill(seq):
                filled += 1
        return filled

    def _fill(self, seq: int) -> bool:
        gaps = self.gaps
        i = bisect.bisect_right(gaps, (seq, float("inf"))) - 1
        if i < 0:
            return False
        lo, hi = gaps[i]
        if not lo <= seq <= hi:
            return False
        pieces = [(lo, seq - 1)] if lo <= seq - 1 else []
        if seq + 1 <= hi:
            pieces.append((seq + 1, hi))
        since = self.gap_since[i]
        gaps[i : i + 1] = pieces
        self.gap_since[i : i + 1] = [since] * len(pieces)
        return True

    @property
    def missing(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.gaps)

    def oldest_missing_age_s(self, now: float) -> float | None:
        return max(0.0, now - min(self.gap_since)) if self.gap_since else None

    def lag_s(self, now: float) -> float | None:
        """Age of the newest live summary (replayed ones are on a recording's clock)."""
        return now - self.last_created_at if self.last_created_at else None

    def as_dict(self, now: float) -> dict[str, object]:
        oldest = self.oldest_missing_age_s(now)
        lag = self.lag_s(now)
        return {
            "received": self.received,
            "duplicates": self.duplicates,
            "superseded": self.superseded,
            "late": self.late,
            "backlog_received": self.backlog,
            "resent_received": self.resent,
            "max_seq": self.max_seq,
            "missing": self.missing,
            "gaps": self.gaps[:20],
            "oldest_missing_age_s": None if oldest is None else round(oldest, 3),
            # lag: age of the newest live summary; replayed ones are reported apart, on the
            # recording's own clock (the newest window they cover)
            "lag_s": None if lag is None else round(lag, 3),
            "replayed_received": self.replayed,
            "replayed_newest_created_at": self.last_replayed_created_at or None,
            "last_received_s_ago": round(now - self.last_received_at, 3)
            if self.last_received_at
            else None,
        }
