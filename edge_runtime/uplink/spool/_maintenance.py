"""Keeping the spool inside its bounds: TTL expiry, compaction into coarser windows, drops.

Every function here runs in the writer thread inside a transaction the caller opened, skips
records leased to the sender, and records what it changed in a :class:`Delta` that the caller
applies to the state row and to its counters once the transaction commits.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import math
import sqlite3
import zlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from edge_runtime.errors import DecodeError
from edge_runtime.types import Envelope, Stat
from edge_runtime.uplink.spool._db import delete_ids
from edge_runtime.uplink.spool.records import (
    PRIORITY_SHIFT,
    SEQ_MASK,
    Priority,
    decode_payload,
    encode_payload,
    record_id,
)

__all__ = [
    "Delta",
    "MergeFn",
    "compact",
    "delete_rows",
    "drop_oldest",
    "expire",
    "load_merge",
]

log = logging.getLogger(__name__)

MergeFn = Callable[[Sequence[Mapping[str, Stat]]], Mapping[str, Stat]]

_SCAN = 1000
_ROW_OVERHEAD = 64  # bytes a row costs besides its payload (cell header, columns, pointers)


@dataclass(slots=True)
class Delta:
    """Changes made inside one transaction, applied to counters after it commits."""

    depth: list[int] = field(default_factory=lambda: [0, 0, 0])
    nbytes: int = 0
    removed: dict[str, int] = field(default_factory=dict)
    compacted_parts: int = 0
    compacted_records: int = 0
    inserted_ids: list[int] = field(default_factory=list)
    acked_ids: list[int] = field(default_factory=list)

    def empty(self) -> bool:
        return not (
            any(self.depth) or self.nbytes or self.removed or self.inserted_ids or self.acked_ids
        )

    def count(self, reason: str, n: int) -> None:
        if n:
            self.removed[reason] = self.removed.get(reason, 0) + n


def load_merge() -> MergeFn | None:
    """``edge_runtime.aggregation.stats.merge_stats`` if it is installed, else None."""
    try:
        module = importlib.import_module("edge_runtime.aggregation.stats")
    except ImportError:
        return None
    merge: MergeFn | None = getattr(module, "merge_stats", None)
    return merge


def delete_rows(
    conn: sqlite3.Connection, rows: Sequence[tuple[int, int]], delta: Delta, reason: str | None
) -> None:
    """Delete ``(id, payload_size)`` rows and account for them."""
    if not rows:
        return
    delete_ids(conn, [rid for rid, _ in rows])
    for rid, size in rows:
        delta.depth[rid >> PRIORITY_SHIFT] -= 1
        delta.nbytes -= size
    if reason is not None:
        delta.count(reason, len(rows))


def expire(
    conn: sqlite3.Connection, delta: Delta, leased: Collection[int], cutoff: float, budget: int
) -> int:
    """Drop records created before ``cutoff`` (wall clock), oldest first in each class.

    Records are appended in roughly ``created_at`` order, so each class is scanned from its
    oldest record up to the first one that is still fresh. Returns how many were dropped.
    """
    dropped = 0
    for cls in range(3):
        cursor, hi = (cls << PRIORITY_SHIFT) - 1, (cls + 1) << PRIORITY_SHIFT
        while dropped < budget:
            rows = conn.execute(
                "SELECT id, created_at, length(payload) FROM records WHERE id > ? AND id < ? "
                "ORDER BY id LIMIT ?",
                (cursor, hi, _SCAN),
            ).fetchall()
            doomed: list[tuple[int, int]] = []
            fresh = False
            for rid, created, size in rows:
                if created >= cutoff:
                    fresh = True
                    break
                if rid not in leased:
                    doomed.append((rid, size))
            delete_rows(conn, doomed, delta, "expired_ttl")
            dropped += len(doomed)
            if fresh or len(rows) < _SCAN:
                break
            cursor = rows[-1][0]
    return dropped


@dataclass(slots=True)
class _Part:
    rid: int
    size: int
    envelope: Envelope


@dataclass(slots=True)
class _Run:
    bucket: int
    parts: list[_Part]


@dataclass(slots=True)
class CompactOutcome:
    cursor: int
    exhausted: bool


def _parts(part: Any) -> list[int]:
    """The run numbers in a window's ``attrs["part"]``: none, one, or a merged record's list."""
    if part is None:
        return []
    return [int(p) for p in part] if isinstance(part, list) else [int(part)]


def _merged_envelope(parts: Sequence[_Part], merge: MergeFn) -> Envelope:
    envelopes = [p.envelope for p in parts]
    first = envelopes[0]
    stats = dict(merge([e.stats for e in envelopes]))
    ident = hashlib.blake2b(digest_size=16)
    for envelope in envelopes:
        ident.update(envelope.id.encode())
        ident.update(b"\x1f")
    attrs = dict(first.attrs)
    attrs["compacted_from"] = sum(int(e.attrs.get("compacted_from", 1)) for e in envelopes)
    # the flags of any window hold for the merged one: one that may miss readings makes it so
    if any(e.attrs.get("incomplete") for e in envelopes):
        attrs["incomplete"] = True
    if any(e.attrs.get("part") != first.attrs.get("part") for e in envelopes):
        # windows of several runs, or merged records: name every run
        attrs["part"] = sorted({p for e in envelopes for p in _parts(e.attrs.get("part"))})
    return replace(
        first,
        id=ident.hexdigest(),
        window_start=min(e.window_start for e in envelopes),
        window_end=max(e.window_end for e in envelopes),
        stats=stats,
        kind="summary",
        revision=0,
        backlog=True,
        attrs=attrs,
    )


def _flush(conn: sqlite3.Connection, run: _Run | None, delta: Delta, merge: MergeFn) -> None:
    if run is None or len(run.parts) < 2:
        return
    keep = run.parts
    try:
        merged = _merged_envelope(keep, merge)
    except (ArithmeticError, TypeError, ValueError, KeyError) as exc:
        log.warning(
            "spool compaction: merging %d summaries of %s failed, kept as they are: %r",
            len(keep),
            keep[0].envelope.stream,
            exc,
        )
        return
    seq = keep[0].rid & SEQ_MASK
    payload = encode_payload(merged, seq)
    rid = record_id(Priority.BACKLOG, seq)
    delete_rows(conn, [(p.rid, p.size) for p in run.parts], delta, None)
    conn.execute(
        "INSERT INTO records (id, stream, envelope_id, window_start, window_end, created_at, "
        "crc, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            rid,
            merged.stream,
            merged.id,
            merged.window_start,
            merged.window_end,
            merged.created_at,
            zlib.crc32(payload),
            payload,
        ),
    )
    delta.depth[Priority.BACKLOG] += 1
    delta.nbytes += len(payload)
    delta.compacted_parts += len(run.parts)
    delta.compacted_records += 1
    delta.inserted_ids.append(rid)


def compact(
    conn: sqlite3.Connection,
    delta: Delta,
    *,
    leased: Collection[int],
    cursor: int,
    cutoff: float,
    compact_to_s: float,
    merge: MergeFn,
    chunk: int,
) -> CompactOutcome:
    """Merge runs of consecutive live summaries of a stream that share a coarse window.

    Scans up to ``chunk`` class-1 records after ``cursor`` (a record id), oldest first, stopping
    at records created after ``cutoff``. A run ends where the stream's next record falls in
    another ``compact_to_s`` bucket, is leased, or is not a summary or correction. Each run of
    two or more becomes one class-2 record that keeps the first part's sequence number.
    """
    hi = (Priority.LIVE + 1) << PRIORITY_SHIFT
    rows = conn.execute(
        "SELECT id, created_at, length(payload), payload FROM records "
        "WHERE id > ? AND id < ? ORDER BY id LIMIT ?",
        (cursor, hi, chunk),
    ).fetchall()
    exhausted = len(rows) < chunk
    parts: list[_Part] = []
    for rid, created, size, payload in rows:
        if created > cutoff:
            exhausted = True
            break
        cursor = rid
        try:
            parts.append(_Part(rid, size, decode_payload(payload)))
        except DecodeError as exc:
            log.warning("spool compaction: record %d undecodable, left alone: %s", rid, exc)
    # A window sent again (a correction with a higher revision, or the same summary twice)
    # supersedes the earlier record: merging both would count the window twice.
    best: dict[tuple[str, float, float], _Part] = {}
    for part in parts:
        env = part.envelope
        key = (env.stream, env.window_start, env.window_end)
        held = best.get(key)
        if held is None or env.revision > held.envelope.revision:
            best[key] = part
    superseded = [
        (p.rid, p.size)
        for p in parts
        if p.rid not in leased
        and best[(p.envelope.stream, p.envelope.window_start, p.envelope.window_end)] is not p
    ]
    gone = {rid for rid, _ in superseded}
    delete_rows(conn, superseded, delta, None)
    delta.compacted_parts += len(superseded)
    runs: dict[str, _Run] = {}
    for part in parts:
        if part.rid in gone:
            continue  # does not end its stream's run: the window is still covered
        stream = part.envelope.stream
        run = runs.get(stream)
        if part.rid in leased or part.envelope.kind not in ("summary", "correction"):
            _flush(conn, runs.pop(stream, None), delta, merge)
            continue
        bucket = math.floor(part.envelope.window_start / compact_to_s)
        if run is not None and run.bucket == bucket:
            run.parts.append(part)
            continue
        _flush(conn, run, delta, merge)
        runs[stream] = _Run(bucket, [part])
    for run in runs.values():
        _flush(conn, run, delta, merge)
    return CompactOutcome(cursor=cursor, exhausted=exhausted)


def drop_oldest(
    conn: sqlite3.Connection, delta: Delta, *, leased: Collection[int], need_bytes: int
) -> int:
    """Drop the oldest records, backlog class first and alerts last, to free ``need_bytes``."""
    dropped = 0
    freed = 0
    for cls in (Priority.BACKLOG, Priority.LIVE, Priority.ALERT):
        cursor, hi = (cls << PRIORITY_SHIFT) - 1, (cls + 1) << PRIORITY_SHIFT
        while freed < need_bytes:
            rows = conn.execute(
                "SELECT id, length(payload) FROM records WHERE id > ? AND id < ? "
                "ORDER BY id LIMIT ?",
                (cursor, hi, _SCAN),
            ).fetchall()
            if not rows:
                break
            doomed: list[tuple[int, int]] = []
            for rid, size in rows:
                cursor = rid
                if rid in leased:
                    continue
                doomed.append((rid, size))
                freed += size + _ROW_OVERHEAD
                if freed >= need_bytes:
                    break
            delete_rows(conn, doomed, delta, "dropped_cap")
            dropped += len(doomed)
        if freed >= need_bytes:
            break
    return dropped
