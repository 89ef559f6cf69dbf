"""The core's summary store: SQLite, one row per envelope id (duplicates are dropped)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from edge_runtime.types import Envelope

__all__ = ["SiteProgress", "SummaryStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS summaries (
    id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    seq INTEGER NOT NULL,
    pipeline TEXT NOT NULL,
    key TEXT NOT NULL,
    window_start REAL NOT NULL,
    window_end REAL NOT NULL,
    kind TEXT NOT NULL,
    revision INTEGER NOT NULL,
    backlog INTEGER NOT NULL,
    replayed INTEGER NOT NULL,
    created_at REAL NOT NULL,
    received_at REAL NOT NULL,
    doc BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS summaries_site_seq ON summaries (site, seq);
CREATE INDEX IF NOT EXISTS summaries_stream ON summaries (site, pipeline, key, window_start);
"""


@dataclass
class SiteProgress:
    """What the core knows of one site: highest sequence number, gaps, lag."""

    site: str
    received: int = 0
    duplicates: int = 0
    max_seq: int = -1
    gaps: list[tuple[int, int]] = field(default_factory=list)  # inclusive ranges not yet seen
    last_created_at: float = 0.0
    last_received_at: float = 0.0
    backlog: int = 0
    replayed: int = 0  # summaries made from a replayed recording (not in the lag)
    last_replayed_created_at: float = 0.0

    def see(self, seqs: Sequence[int]) -> None:
        for seq in sorted(seqs):
            if seq > self.max_seq:
                if seq > self.max_seq + 1 and self.max_seq >= 0:
                    self.gaps.append((self.max_seq + 1, seq - 1))
                self.max_seq = seq
            else:
                self._fill(seq)

    def _fill(self, seq: int) -> None:
        for i, (lo, hi) in enumerate(self.gaps):
            if lo <= seq <= hi:
                pieces = [(lo, seq - 1)] if lo <= seq - 1 else []
                if seq + 1 <= hi:
                    pieces.append((seq + 1, hi))
                self.gaps[i : i + 1] = pieces
                return

    @property
    def missing(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.gaps)

    def as_dict(self, now: float) -> dict[str, object]:
        return {
            "received": self.received,
            "duplicates": self.duplicates,
            "max_seq": self.max_seq,
            "missing": self.missing,
            "gaps": self.gaps[:20],
            "backlog_received": self.backlog,
            # lag: age of the newest live summary; replayed ones are reported apart, on the
            # recording's own clock (the newest window they cover)
            "lag_s": round(now - self.last_created_at, 3) if self.last_created_at else None,
            "replayed_received": self.replayed,
            "replayed_newest_created_at": self.last_replayed_created_at or None,
            "last_received_s_ago": round(now - self.last_received_at, 3)
            if self.last_received_at
            else None,
        }


class SummaryStore:
    """SQLite store; ``add`` returns the envelopes that were new (not duplicates)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def add(self, envelopes: Sequence[Envelope], received_at: float) -> list[Envelope]:
        fresh: list[Envelope] = []
        self.db.execute("BEGIN")
        try:
            for env in envelopes:
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO summaries VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        env.id,
                        env.site,
                        env.seq,
                        env.pipeline,
                        env.key,
                        env.window_start,
                        env.window_end,
                        env.kind,
                        env.revision,
                        int(env.backlog),
                        int(env.replayed),
                        env.created_at,
                        received_at,
                        orjson.dumps(env.to_dict()),
                    ),
                )
                if cur.rowcount:
                    fresh.append(env)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return fresh

    def count(self, site: str | None = None) -> int:
        if site is None:
            row = self.db.execute("SELECT COUNT(*) FROM summaries").fetchone()
        else:
            row = self.db.execute("SELECT COUNT(*) FROM summaries WHERE site=?", (site,)).fetchone()
        return int(row[0])

    def progress(self) -> dict[str, SiteProgress]:
        """Rebuild per-site progress (max seq, gaps) from what is stored."""
        out: dict[str, SiteProgress] = {}
        for site, n, max_seq, last_live, replayed, last_replayed in self.db.execute(
            "SELECT site, COUNT(*), MAX(seq),"
            " COALESCE(MAX(CASE WHEN replayed = 0 THEN created_at END), 0.0),"
            " SUM(replayed), COALESCE(MAX(CASE WHEN replayed = 1 THEN created_at END), 0.0)"
            " FROM summaries GROUP BY site"
        ):
            prog = SiteProgress(
                site,
                received=n,
                max_seq=max_seq,
                last_created_at=last_live,
                replayed=replayed,
                last_replayed_created_at=last_replayed,
            )
            prog.gaps = [
                (lo, hi)
                for lo, hi in self.db.execute(
                    "SELECT seq + 1, nxt - 1 FROM (SELECT seq, LEAD(seq) OVER (ORDER BY seq) AS nxt"
                    " FROM (SELECT DISTINCT seq FROM summaries WHERE site = ?))"
                    " WHERE nxt > seq + 1",
                    (site,),
                )
            ]
            out[site] = prog
        return out

    def envelopes(self, site: str | None = None) -> list[Envelope]:
        query = "SELECT doc FROM summaries"
        args: tuple[str, ...] = ()
        if site is not None:
            query += " WHERE site = ?"
            args = (site,)
        return [
            Envelope.from_dict(orjson.loads(doc))
            for (doc,) in self.db.execute(query + " ORDER BY rowid", args)
        ]
