"""The core's summary store: SQLite, one row per window result (its highest revision).

An envelope whose id is stored already is a duplicate: dropped. Otherwise its window id
(:attr:`Envelope.window_id`: the envelope id without kind and revision) decides: a higher
revision than the stored one replaces the stored row, which is counted *superseded*; a lower
one is counted superseded and not stored; the same revision under another id (two results
that claim the same revision, which a site does not send) is stored beside it. Superseded
envelopes keep their sequence numbers in ``superseded``, and duplicates theirs in
``merged_seqs`` (beside those a compaction merged), so that the gap accounting rebuilt after
a restart never reports them missing.

Parts: a result with ``attrs["part"]`` is one part of its window (a site that runs without
checkpoints cuts the windows open at a stop, and the next run emits the rest; see
:attr:`~edge_runtime.pipelines.api.RestoreInfo.part`). Revisions compete within one part
only: the parts of a window are stored side by side (each flagged ``incomplete``), never
one instead of another, so that their counts and sums add up to the window's.

Each :meth:`SummaryStore.add` is one transaction; with ``synchronous="FULL"`` (the store of
record) its COMMIT returns once the write-ahead log is fsynced, so what the core acknowledges
survives a power cut. Sequence numbers a compacted summary stands for (``merged_seqs``) are
kept beside it, so that the gap accounting rebuilt after a restart counts them as received.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import orjson

from edge_runtime.core.progress import SiteProgress
from edge_runtime.types import Envelope

__all__ = ["Added", "SiteProgress", "SummaryStore", "covered_seqs", "result_family"]

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
    doc BLOB NOT NULL,
    window TEXT
);
CREATE INDEX IF NOT EXISTS summaries_site_seq ON summaries (site, seq);
CREATE INDEX IF NOT EXISTS summaries_stream ON summaries (site, pipeline, key, window_start);
CREATE TABLE IF NOT EXISTS merged_seqs (
    site TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (site, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS superseded (
    site TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    window TEXT NOT NULL,
    revision INTEGER NOT NULL,
    superseded_at REAL NOT NULL,
    PRIMARY KEY (site, seq)
) WITHOUT ROWID;
"""
_WINDOW_INDEX = "CREATE INDEX IF NOT EXISTS summaries_window ON summaries (window)"
_SUPERSEDED_INDEX = "CREATE INDEX IF NOT EXISTS superseded_id ON superseded (id)"


def result_family(env: Envelope) -> str:
    """What the revisions that replace one another share: the window id, and the part of
    the window when the result is one (see the module docstring)."""
    part = env.attrs.get("part")
    return env.window_id if part is None else f"{env.window_id}/part/{part}"


def covered_seqs(env: Envelope) -> list[int]:
    """The sequence numbers an envelope stands for: its own, plus those a compaction merged."""
    merged = env.attrs.get("merged_seqs")
    if isinstance(merged, list) and merged:
        return [int(s) for s in merged]
    return [env.seq]


@dataclass(slots=True)
class Added:
    """What one :meth:`SummaryStore.add` did with its envelopes (the rest were duplicates)."""

    stored: list[Envelope] = field(default_factory=list)
    """New rows, in order."""
    stale: list[Envelope] = field(default_factory=list)
    """Arrived with a lower revision than the one stored for their window: superseded on
    arrival, not stored."""
    replaced: list[tuple[str, int]] = field(default_factory=list)
    """(site, seq) of stored rows a higher revision replaced: superseded."""


class SummaryStore:
    """SQLite store; ``add`` keeps the highest revision of each window (see the module)."""

    def __init__(self, path: Path, *, synchronous: Literal["FULL", "NORMAL"] = "FULL") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.synchronous = synchronous
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.executescript(_SCHEMA)
        self._migrate()
        self.db.execute(_WINDOW_INDEX)
        self.db.execute(_SUPERSEDED_INDEX)

    def _migrate(self) -> None:
        """A store written before window ids: add the column and fill it in."""
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(summaries)")}
        if "window" not in columns:
            self.db.execute("ALTER TABLE summaries ADD COLUMN window TEXT")
        rows = self.db.execute("SELECT rowid, doc FROM summaries WHERE window IS NULL").fetchall()
        if not rows:
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "UPDATE summaries SET window = ? WHERE rowid = ?",
                [
                    (result_family(Envelope.from_dict(orjson.loads(doc))), rowid)
                    for rowid, doc in rows
                ],
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()

    def known(self, ids: Iterable[str]) -> set[str]:
        """The ids among ``ids`` that are stored already (or were, until superseded)."""
        ids = list(ids)
        found: set[str] = set()
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i : i + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(
                row[0]
                for row in self.db.execute(
                    f"SELECT id FROM summaries WHERE id IN ({marks})"  # noqa: S608 (placeholders only)
                    f" UNION SELECT id FROM superseded WHERE id IN ({marks})",
                    chunk + chunk,
                )
            )
        return found

    def _stored_revisions(self, windows: Iterable[str]) -> dict[str, int]:
        """The highest stored revision of each window id among ``windows`` that has one."""
        windows = list(windows)
        found: dict[str, int] = {}
        for i in range(0, len(windows), _IN_CHUNK):
            chunk = windows[i : i + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            for window, revision in self.db.execute(
                f"SELECT window, MAX(revision) FROM summaries WHERE window IN ({marks})"  # noqa: S608 (placeholders only)
                " GROUP BY window",
                chunk,
            ):
                found[window] = int(revision)
        return found

    def add(self, envelopes: Sequence[Envelope], received_at: float) -> Added:
        """Store the envelopes not stored yet, keeping the highest revision of each window,
        in one transaction (see the module docstring)."""
        envelopes = list(envelopes)
        seen = self.known(e.id for e in envelopes)
        candidates = [e for e in envelopes if e.id not in seen]
        windows = {e.id: result_family(e) for e in candidates}
        best = self._stored_revisions(set(windows.values()))
        out = Added()
        replace_windows: set[str] = set()
        for env in candidates:
            if env.id in seen:
                continue  # the same id twice in one call: the second is a duplicate
            seen.add(env.id)
            window = windows[env.id]
            held = best.get(window)
            if held is not None and env.revision < held:
                out.stale.append(env)
                continue
            if held is not None and env.revision > held:
                replace_windows.add(window)
            best[window] = env.revision
            out.stored.append(env)
        # within this call a window may rise twice: only its highest revision is kept
        stored: list[Envelope] = []
        for env in out.stored:
            if env.revision < best[windows[env.id]]:
                out.stale.append(env)
            else:
                stored.append(env)
        out.stored = stored
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
                windows[env.id],
            )
            for env in stored
        ]
        # sequence numbers received that no stored row carries: those a compaction merged,
        # and a duplicate's own (a window sent again under a new seq, e.g. after a crash)
        merged = [
            (env.site, seq)
            for env in stored
            if "merged_seqs" in env.attrs
            for seq in covered_seqs(env)
        ]
        kept = {e.id for e in stored} | {e.id for e in out.stale}
        merged += [
            (env.site, seq) for env in envelopes if env.id not in kept for seq in covered_seqs(env)
        ]
        stale_rows = [
            (env.site, env.seq, env.id, windows[env.id], env.revision, received_at)
            for env in out.stale
        ]
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for window in replace_windows:
                for site, seq, eid, revision in self.db.execute(
                    "DELETE FROM summaries WHERE window = ? AND revision < ?"
                    " RETURNING site, seq, id, revision",
                    (window, best[window]),
                ).fetchall():
                    out.replaced.append((site, seq))
                    stale_rows.append((site, seq, eid, window, revision, received_at))
            self.db.executemany(
                "INSERT OR IGNORE INTO summaries VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows
            )
            if merged:
                self.db.executemany("INSERT OR IGNORE INTO merged_seqs VALUES (?,?)", merged)
            if stale_rows:
                self.db.executemany(
                    "INSERT OR IGNORE INTO superseded VALUES (?,?,?,?,?,?)", stale_rows
                )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return out

    def superseded(self, site: str | None = None) -> int:
        """How many envelopes a higher revision of their window superseded."""
        if site is None:
            row = self.db.execute("SELECT COUNT(*) FROM superseded").fetchone()
        else:
            row = self.db.execute(
                "SELECT COUNT(*) FROM superseded WHERE site=?", (site,)
            ).fetchone()
        return int(row[0])

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
            superseded_max, superseded = self.db.execute(
                "SELECT COALESCE(MAX(seq), 0), COUNT(*) FROM superseded WHERE site = ?", (site,)
            ).fetchone()
            prog.superseded = int(superseded)
            prog.max_seq = max(int(max_seq), int(merged_max), int(superseded_max), 0)
            prog.gaps = [
                (lo, hi)
                for lo, hi in self.db.execute(
                    "SELECT seq + 1, nxt - 1 FROM (SELECT seq, LEAD(seq) OVER (ORDER BY seq) AS nxt"
                    " FROM (SELECT 0 AS seq UNION SELECT seq FROM summaries WHERE site = ?1"
                    " UNION SELECT seq FROM merged_seqs WHERE site = ?1"
                    " UNION SELECT seq FROM superseded WHERE site = ?1))"
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
