"""The core's summary store: SQLite, one row per envelope id (duplicates are dropped).

Each :meth:`SummaryStore.add` is one transaction; with ``synchronous="FULL"`` (the store of
record) its COMMIT returns once the write-ahead log is fsynced, so what the core acknowledges
survives a power cut. Sequence numbers a compacted summary stands for (``merged_seqs``) are
kept beside it, so that the gap accounting rebuilt after a restart counts them as received.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import orjson

from edge_runtime.core.progress import SiteProgress
from edge_runtime.types import Envelope

__all__ = ["SiteProgress", "SummaryStore", "covered_seqs"]

_IN_CHUNK = 500  # ids per "IN (...)" lookup (SQLite allows 32766 variables; keep it modest)

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
CREATE TABLE IF NOT EXISTS merged_seqs (
    site TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (site, seq)
) WITHOUT ROWID;
"""


def covered_seqs(env: Envelope) -> list[int]:
    """The sequence numbers an envelope stands for: its own, plus those a compaction merged."""
    merged = env.attrs.get("merged_seqs")
    if isinstance(merged, list) and merged:
        return [int(s) for s in merged]
    return [env.seq]


class SummaryStore:
    """SQLite store; ``add`` returns the envelopes that were new (not duplicates)."""

    def __init__(self, path: Path, *, synchronous: Literal["FULL", "NORMAL"] = "FULL") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.synchronous = synchronous
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def known(self, ids: Iterable[str]) -> set[str]:
        """The ids among ``ids`` that are stored already."""
        ids = list(ids)
        found: set[str] = set()
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i : i + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(
                row[0]
                for row in self.db.execute(f"SELECT id FROM summaries WHERE id IN ({marks})", chunk)  # noqa: S608 (placeholders only)
            )
        return found

    def add(self, envelopes: Sequence[Envelope], received_at: float) -> list[Envelope]:
        """Store the envelopes not stored yet, in one transaction; returns them (in order)."""
        seen = self.known(e.id for e in envelopes)
        fresh: list[Envelope] = []
        for env in envelopes:
            if env.id not in seen:
                seen.add(env.id)
                fresh.append(env)
        rows = [
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
                env.to_json(),
            )
            for env in fresh
        ]
        merged = [
            (env.site, seq)
            for env in fresh
            if "merged_seqs" in env.attrs
            for seq in covered_seqs(env)
        ]
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "INSERT OR IGNORE INTO summaries VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows
            )
            if merged:
                self.db.executemany("INSERT OR IGNORE INTO merged_seqs VALUES (?,?)", merged)
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

    def progress(self, now: float | None = None) -> dict[str, SiteProgress]:
        """Rebuild per-site progress (highest seq, gaps from seq 1) from what is stored; the
        gaps count as first seen ``now``."""
        now = time.time() if now is None else now
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
                last_created_at=last_live,
                replayed=replayed,
                last_replayed_created_at=last_replayed,
            )
            merged_max = self.db.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM merged_seqs WHERE site = ?", (site,)
            ).fetchone()[0]
            prog.max_seq = max(int(max_seq), int(merged_max), 0)
            prog.gaps = [
                (lo, hi)
                for lo, hi in self.db.execute(
                    "SELECT seq + 1, nxt - 1 FROM (SELECT seq, LEAD(seq) OVER (ORDER BY seq) AS nxt"
                    " FROM (SELECT 0 AS seq UNION SELECT seq FROM summaries WHERE site = ?1"
                    " UNION SELECT seq FROM merged_seqs WHERE site = ?1))"
                    " WHERE nxt > seq + 1",
                    (site,),
                )
            ]
            prog.gap_since = [now] * len(prog.gaps)
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
